//! The supported architectures, one file per family: detection from tensor names (and shapes),
//! the variants each family knows by name, its graph builder, its default Grad-CAM target and
//! the evaluation preprocessing of its torchvision weights. [`FAMILIES`] is the one table of
//! them; adding a family is a file and a row.

pub mod alexnet;
pub mod convnext;
pub mod densenet;
pub mod efficientnet;
pub mod googlenet;
pub mod inception;
pub mod mnasnet;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod regnet;
pub mod resnet;
pub mod seed_cnn;
pub mod shufflenet;
pub mod squeezenet;
pub mod vgg;

use crate::error::Result;
pub use crate::imaging::preprocess::Filter;
use crate::model::builder::Builder;
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

/// torchvision's evaluation transform for a variant's weights: resize the shorter side to
/// `resize` (antialiased, with `filter`), center-crop `crop`, scale to [0, 1], normalize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub resize: usize,
    pub crop: usize,
    pub filter: Filter,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The torchvision weights these values come from, e.g. "ResNet50_Weights.IMAGENET1K_V1".
    pub weights: &'static str,
}

impl Preprocess {
    /// ImageNet's bilinear 256 → 224 with its mean and std (most IMAGENET1K_V1 weights).
    pub const fn imagenet(weights: &'static str) -> Self {
        Self::imagenet_sized(weights, 256, 224, Filter::Bilinear)
    }

    pub const fn imagenet_sized(
        weights: &'static str,
        resize: usize,
        crop: usize,
        filter: Filter,
    ) -> Self {
        Preprocess {
            resize,
            crop,
            filter,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            weights,
        }
    }
}

/// What an architecture builder produces besides the graph.
pub struct Built {
    pub output: ValueId,
    /// Classes of the logits (the last layer's outputs).
    pub num_classes: usize,
    pub default_layer: String,
    /// The precise name (`vgg16_bn`, `resnet50`, …) read off the weights' layout, or the
    /// family and "custom" with what was read.
    pub variant: String,
    /// None: the family has no torchvision weights (seed-cnn).
    pub preprocess: Option<Preprocess>,
}

/// One family of architectures.
pub struct FamilyDef {
    /// Its name in messages ("resnet", "mobilenet_v3", …).
    pub name: &'static str,
    /// The variants `--arch` accepts.
    pub variants: &'static [&'static str],
    /// Whether the weights have this family's layout (names, and shapes where names collide).
    pub matches: fn(&WeightStore) -> bool,
    /// Tensor names every variant of the family has: what "nearest family" is measured by when
    /// nothing matches.
    pub signature: &'static [&'static str],
    pub build: fn(&mut Builder) -> Result<Built>,
}

/// Every family, in detection order: a family whose tensor names are a superset of
/// another's comes first.
pub const FAMILIES: &[FamilyDef] = &[
    FamilyDef {
        name: "resnet",
        variants: resnet::VARIANT_NAMES,
        matches: resnet::matches,
        signature: &[
            "conv1.weight",
            "bn1.weight",
            "layer1.0.conv1.weight",
            "layer4.0.conv1.weight",
            "fc.weight",
        ],
        build: resnet::build,
    },
    FamilyDef {
        name: "alexnet",
        variants: alexnet::VARIANT_NAMES,
        matches: alexnet::matches,
        signature: &[
            "features.0.weight",
            "features.3.weight",
            "features.10.weight",
            "classifier.1.weight",
            "classifier.6.weight",
        ],
        build: alexnet::build,
    },
    FamilyDef {
        name: "squeezenet",
        variants: squeezenet::VARIANT_NAMES,
        matches: squeezenet::matches,
        signature: &[
            "features.0.weight",
            "features.3.squeeze.weight",
            "features.3.expand1x1.weight",
            "features.3.expand3x3.weight",
            "classifier.1.weight",
        ],
        build: squeezenet::build,
    },
    FamilyDef {
        name: "vgg",
        variants: vgg::VARIANT_NAMES,
        matches: vgg::matches,
        signature: &[
            "features.0.weight",
            "classifier.0.weight",
            "classifier.3.weight",
            "classifier.6.weight",
        ],
        build: vgg::build,
    },
    FamilyDef {
        name: "densenet",
        variants: densenet::VARIANT_NAMES,
        matches: densenet::matches,
        signature: &[
            "features.conv0.weight",
            "features.norm0.weight",
            "features.denseblock1.denselayer1.conv1.weight",
            "features.transition1.conv.weight",
            "features.norm5.weight",
            "classifier.weight",
        ],
        build: densenet::build,
    },
    FamilyDef {
        name: "googlenet",
        variants: googlenet::VARIANT_NAMES,
        matches: googlenet::matches,
        signature: &[
            "conv1.conv.weight",
            "conv2.conv.weight",
            "conv3.conv.weight",
            "inception3a.branch1.conv.weight",
            "inception5b.branch4.1.conv.weight",
            "fc.weight",
        ],
        build: googlenet::build,
    },
    FamilyDef {
        name: "inception_v3",
        variants: inception::VARIANT_NAMES,
        matches: inception::matches,
        signature: &[
            "Conv2d_1a_3x3.conv.weight",
            "Conv2d_4a_3x3.conv.weight",
            "Mixed_5b.branch1x1.conv.weight",
            "Mixed_7c.branch_pool.conv.weight",
            "fc.weight",
        ],
        build: inception::build,
    },
    FamilyDef {
        name: "mobilenet_v2",
        variants: mobilenet_v2::VARIANT_NAMES,
        matches: mobilenet_v2::matches,
        signature: &[
            "features.0.0.weight",
            "features.1.conv.0.0.weight",
            "features.2.conv.0.0.weight",
            "classifier.1.weight",
        ],
        build: mobilenet_v2::build,
    },
    FamilyDef {
        name: "mobilenet_v3",
        variants: mobilenet_v3::VARIANT_NAMES,
        matches: mobilenet_v3::matches,
        signature: &[
            "features.0.0.weight",
            "features.1.block.0.0.weight",
            "features.2.block.0.0.weight",
            "classifier.0.weight",
            "classifier.3.weight",
        ],
        build: mobilenet_v3::build,
    },
    FamilyDef {
        name: "mnasnet",
        variants: mnasnet::VARIANT_NAMES,
        matches: mnasnet::matches,
        signature: &[
            "layers.0.weight",
            "layers.3.weight",
            "layers.8.0.layers.0.weight",
            "layers.14.weight",
            "classifier.1.weight",
        ],
        build: mnasnet::build,
    },
    FamilyDef {
        name: "efficientnet",
        variants: efficientnet::VARIANT_NAMES,
        matches: efficientnet::matches,
        signature: &[
            "features.0.0.weight",
            "features.1.0.block.0.0.weight",
            "features.1.0.block.1.fc1.weight",
            "features.2.0.block.0.0.weight",
            "classifier.1.weight",
        ],
        build: efficientnet::build,
    },
    FamilyDef {
        name: "efficientnet_v2",
        variants: efficientnet::V2_VARIANT_NAMES,
        matches: efficientnet::matches_v2,
        signature: &[
            "features.0.0.weight",
            "features.1.0.block.0.0.weight",
            "features.2.0.block.0.0.weight",
            "features.2.0.block.1.0.weight",
            "classifier.1.weight",
        ],
        build: efficientnet::build_v2,
    },
    FamilyDef {
        name: "regnet_x",
        variants: regnet::VARIANT_NAMES_X,
        matches: regnet::matches_x,
        signature: &[
            "stem.0.weight",
            "trunk_output.block1.block1-0.proj.0.weight",
            "trunk_output.block1.block1-0.f.a.0.weight",
            "trunk_output.block1.block1-0.f.b.0.weight",
            "trunk_output.block1.block1-0.f.c.0.weight",
            "fc.weight",
        ],
        build: regnet::build,
    },
    FamilyDef {
        name: "regnet_y",
        variants: regnet::VARIANT_NAMES_Y,
        matches: regnet::matches_y,
        signature: &[
            "stem.0.weight",
            "trunk_output.block1.block1-0.proj.0.weight",
            "trunk_output.block1.block1-0.f.a.0.weight",
            "trunk_output.block1.block1-0.f.b.0.weight",
            "trunk_output.block1.block1-0.f.se.fc1.weight",
            "trunk_output.block1.block1-0.f.c.0.weight",
            "fc.weight",
        ],
        build: regnet::build,
    },
    FamilyDef {
        name: "shufflenet_v2",
        variants: shufflenet::VARIANT_NAMES,
        matches: shufflenet::matches,
        signature: &[
            "conv1.0.weight",
            "stage2.0.branch1.0.weight",
            "stage2.0.branch2.0.weight",
            "stage3.0.branch1.0.weight",
            "stage4.0.branch1.0.weight",
            "conv5.0.weight",
            "fc.weight",
        ],
        build: shufflenet::build,
    },
    FamilyDef {
        name: "convnext",
        variants: convnext::VARIANT_NAMES,
        matches: convnext::matches,
        signature: &[
            "features.0.0.weight",
            "features.0.1.weight",
            "features.1.0.block.0.weight",
            "features.1.0.layer_scale",
            "features.2.1.weight",
            "classifier.0.weight",
            "classifier.2.weight",
        ],
        build: convnext::build,
    },
    FamilyDef {
        name: "seed-cnn",
        variants: &["seed-cnn"],
        matches: seed_cnn::matches,
        signature: &[
            "conv1.weight",
            "conv2.weight",
            "conv3.weight",
            "fc1.weight",
            "fc2.weight",
        ],
        build: seed_cnn::build,
    },
];

/// Every name `--arch` accepts.
pub fn known() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.variants.iter().copied())
        .collect()
}

/// The family of variant `name`.
pub fn family_of(name: &str) -> Option<&'static FamilyDef> {
    FAMILIES.iter().find(|f| f.variants.contains(&name))
}

/// The first family whose layout the weights have.
pub fn detect(store: &WeightStore) -> Option<&'static FamilyDef> {
    FAMILIES.iter().find(|f| (f.matches)(store))
}

/// Why no family matched, for the error: the nearest family by signature tensors present,
/// and which of them are missing.
pub fn why_undetected(store: &WeightStore) -> String {
    let names: Vec<&str> = store.names().collect();
    let Some(first) = names.first() else {
        return "it holds no float tensors".into();
    };
    let score = |f: &FamilyDef| f.signature.iter().filter(|n| store.contains(n)).count();
    let best = FAMILIES
        .iter()
        .max_by_key(|f| (score(f) * 1000) / f.signature.len().max(1))
        .filter(|f| score(f) > 0);
    match best {
        Some(f) => {
            let missing: Vec<&str> = f
                .signature
                .iter()
                .copied()
                .filter(|n| !store.contains(n))
                .collect();
            if missing.is_empty() {
                format!(
                    "its tensor names are those of {}, but their shapes or the rest of the layout match none of its variants",
                    f.name
                )
            } else {
                format!(
                    "the nearest family is {} ({} of its {} characteristic tensors present; missing '{}')",
                    f.name,
                    score(f),
                    f.signature.len(),
                    missing.join("', '")
                )
            }
        }
        None => format!("tensor names such as '{first}' match no supported layout"),
    }
}
