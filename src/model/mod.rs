//! Models: weights from safetensors, the architecture read off their names and shapes, and
//! the resulting graph with PyTorch's module paths.

pub mod arch;
pub mod builder;
pub mod graph;
pub mod weights;
pub mod zoo;

use crate::error::{Error, Result};
use builder::Builder;
use graph::{Graph, Module};
use std::path::Path;
use weights::WeightStore;

pub struct Model {
    /// `vgg16_bn`, `resnet50`, `seed-cnn`, or a description of a custom layout.
    pub arch: String,
    /// The family it was built as ("resnet", "mobilenet_v3", …).
    pub family: &'static str,
    /// The evaluation preprocessing of the family's torchvision weights.
    pub preprocess: Option<arch::Preprocess>,
    pub graph: Graph,
    pub num_classes: usize,
    pub default_layer: String,
    /// GoogLeNet / Inception v3: whether the graph begins with torchvision's
    /// `transform_input`; None for the families that have no such step.
    pub transform_input: Option<bool>,
}

/// What the weights cannot say and the user may: see `Builder`'s fields of the same names.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    pub transform_input: Option<bool>,
}

impl Model {
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Model> {
        Self::from_store(&WeightStore::load(path)?, arch)
    }

    pub fn from_store(store: &WeightStore, arch: Option<&str>) -> Result<Model> {
        Self::from_store_with(store, arch, BuildOptions::default())
    }

    pub fn load_with(path: &Path, arch: Option<&str>, opts: BuildOptions) -> Result<Model> {
        Self::from_store_with(&WeightStore::load(path)?, arch, opts)
    }

    pub fn from_store_with(
        store: &WeightStore,
        arch: Option<&str>,
        opts: BuildOptions,
    ) -> Result<Model> {
        store.check_integers()?;
        let known = arch::known().join(", ");
        let family = match arch {
            Some(a) => arch::family_of(a).ok_or_else(|| {
                Error::Usage(format!("unknown architecture '{a}'; known: {known}"))
            })?,
            None => arch::detect(store).ok_or_else(|| Error::UnknownArch {
                path: store.path().to_owned(),
                reason: arch::why_undetected(store),
                known: known.clone(),
            })?,
        };
        let mut b = Builder::new(store, arch.unwrap_or(family.name));
        b.transform_input = opts.transform_input;
        let built = (family.build)(&mut b)?;
        if opts.transform_input.is_some() && b.transform_input_applied.is_none() {
            return Err(Error::Usage(format!(
                "--no-transform-input applies to googlenet and inception_v3 only; these weights \
                 are {} (family {})",
                built.variant, family.name
            )));
        }
        let transform_input = b.transform_input_applied;
        if let Some(a) = arch {
            if a != built.variant && family.variants.len() > 1 {
                return Err(Error::UnknownArch {
                    path: store.path().to_owned(),
                    reason: format!(
                        "--arch {a} was given but the weights have the layout of {}",
                        built.variant
                    ),
                    known,
                });
            }
        }
        let graph = b.finish(built.output)?;
        if built.num_classes == 0 {
            return Err(Error::UnknownArch {
                path: store.path().to_owned(),
                reason: "its classifier has 0 outputs".into(),
                known,
            });
        }
        Ok(Model {
            arch: built.variant,
            family: family.name,
            graph,
            num_classes: built.num_classes,
            default_layer: built.default_layer,
            preprocess: built.preprocess,
            transform_input,
        })
    }

    /// The module called `name`, or an error listing the closest valid names.
    pub fn module(&self, name: &str) -> Result<&Module> {
        self.graph.module(name).ok_or_else(|| {
            let mut names: Vec<(usize, &str)> = self
                .graph
                .modules
                .iter()
                .map(|m| (strsim::levenshtein(name, &m.name), m.name.as_str()))
                .collect();
            names.sort();
            let closest: Vec<&str> = names.iter().take(5).map(|(_, n)| *n).collect();
            Error::UnknownLayer {
                name: name.to_owned(),
                suggestions: closest.join(", "),
            }
        })
    }
}
