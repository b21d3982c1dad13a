//! The supported architectures: detection from tensor names, and graph builders.

pub mod resnet;
pub mod seed_cnn;
pub mod vgg;

use crate::model::graph::ValueId;

/// What an architecture builder produces besides the graph.
pub struct Built {
    pub output: ValueId,
    /// Classes of the logits (the last layer's outputs).
    pub num_classes: usize,
    pub default_layer: String,
    /// The precise name (`vgg16_bn`, `resnet50`, …) read off the weights' layout.
    pub variant: String,
}

/// Names accepted by `--arch`.
pub const KNOWN: [&str; 14] = [
    "seed-cnn",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    SeedCnn,
    Vgg,
    ResNet,
}

impl Family {
    pub fn of_arch(name: &str) -> Option<Family> {
        if !KNOWN.contains(&name) {
            return None;
        }
        Some(if name == "seed-cnn" {
            Family::SeedCnn
        } else if name.starts_with("vgg") {
            Family::Vgg
        } else {
            Family::ResNet
        })
    }

    pub fn detect(names: &[&str]) -> Option<Family> {
        if resnet::matches(names) {
            Some(Family::ResNet)
        } else if vgg::matches(names) {
            Some(Family::Vgg)
        } else if seed_cnn::matches(names) {
            Some(Family::SeedCnn)
        } else {
            None
        }
    }

    pub fn build(self, b: &mut crate::model::builder::Builder) -> crate::error::Result<Built> {
        match self {
            Family::SeedCnn => seed_cnn::build(b),
            Family::Vgg => vgg::build(b),
            Family::ResNet => resnet::build(b),
        }
    }
}
