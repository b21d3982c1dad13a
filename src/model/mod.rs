//! Models: weights from safetensors, the architecture read off their names and shapes, and
//! the resulting graph with PyTorch's module paths.

pub mod arch;
pub mod builder;
pub mod exported;
pub mod graph;
pub mod weights;
pub mod zoo;

use crate::error::{Error, Result};
use crate::imaging::preprocess::{Filter, Resize, Transform};
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
    /// Where the graph came from: None, a built-in family's builder; Some(producer), the
    /// graph embedded in the weights file by that exporter.
    pub embedded: Option<String>,
}

/// A named module of a model (`gradcam inspect` lists them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Its PyTorch module path (`layer4`, `features.35`).
    pub name: String,
    /// Its PyTorch class (`Bottleneck`, `Conv2d`).
    pub kind: String,
    /// Its output's shape for a batch of one.
    pub shape: Vec<usize>,
}

impl Layer {
    /// Whether a CAM can target it: its output is [N, C, H, W].
    pub fn is_spatial(&self) -> bool {
        self.shape.len() == 4
    }
}

/// What the weights cannot say and the user may.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A built-in family's variant (e.g. `resnet50`) instead of the one detected from the
    /// tensor names and shapes, or instead of a graph embedded in the file.
    pub arch: Option<String>,
    /// GoogLeNet / Inception v3: whether the graph begins with torchvision's `transform_input`
    /// (`Some(false)` for checkpoints trained without it; the weights cannot say). None: the
    /// builders' default, on, as torchvision's pretrained weights need.
    pub transform_input: Option<bool>,
}

impl Model {
    /// Reads a safetensors file: the graph embedded by `scripts/export_model.py` when it has
    /// one, else the built-in family its tensor names and shapes match.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] with what the weights cannot say.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let store = WeightStore::load(path.as_ref())?;
        Self::from_store_with(&store, opts.arch.as_deref(), opts.transform_input)
    }

    /// [`Model::load`] of a whole safetensors file held in memory (e.g. one just exported from
    /// PyTorch); `name` stands for it in messages.
    pub fn from_bytes(bytes: &[u8], name: &str, opts: &LoadOptions) -> Result<Model> {
        let store = WeightStore::parse(Path::new(name), bytes)?;
        Self::from_store_with(&store, opts.arch.as_deref(), opts.transform_input)
    }

    /// The graph embedded in the file when it has one (and no --arch insists on a family),
    /// else the built-in family that the tensor names and shapes match.
    pub fn from_store(store: &WeightStore, arch: Option<&str>) -> Result<Model> {
        Self::from_store_with(store, arch, None)
    }

    pub fn from_store_with(
        store: &WeightStore,
        arch: Option<&str>,
        transform_input: Option<bool>,
    ) -> Result<Model> {
        store.check_integers()?;
        if let (Some(text), None) = (exported::embedded(store), arch) {
            if transform_input.is_some() {
                return Err(Error::Usage(format!(
                    "`transform_input=false` applies to the built-in googlenet and inception_v3 \
                     builders; {} holds an exported graph, which records what the model's \
                     forward did (`arch` uses a built-in builder instead)",
                    store.path().display()
                )));
            }
            let e = exported::build(store, text)?;
            return Ok(Model {
                arch: format!("{} (exported)", e.model),
                family: "exported",
                // torchvision's ImageNet evaluation transform unless the export recorded one
                preprocess: Some(e.preprocess.unwrap_or(arch::Preprocess::imagenet(
                    "ImageNet's defaults: the exported graph records no preprocessing",
                ))),
                graph: e.graph,
                num_classes: e.num_classes,
                default_layer: e.default_layer,
                transform_input: None,
                embedded: Some(e.producer),
            });
        }
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
        b.transform_input = transform_input;
        let built = (family.build)(&mut b)?;
        if transform_input.is_some() && b.transform_input_applied.is_none() {
            return Err(Error::Usage(format!(
                "`transform_input=false` applies to googlenet and inception_v3 only; these weights \
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
                        "`arch={a}` was given but the weights have the layout of {}",
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
            embedded: None,
        })
    }

    /// The preprocessing `explain` applies by default: the evaluation transform of the
    /// family's torchvision weights (or the one an exported graph records); for a family
    /// without one (seed-cnn), the article's 32×32 with mean and std 0.5.
    pub fn preprocessing(&self) -> Transform {
        match self.preprocess {
            Some(p) => Transform {
                resize: Resize::Shorter(p.resize),
                filter: p.filter,
                crop: Some((p.crop, p.crop)),
                mean: p.mean,
                std: p.std,
            },
            None => Transform {
                resize: Resize::Exact(32, 32),
                filter: Filter::Bilinear,
                crop: None,
                mean: [0.5; 3],
                std: [0.5; 3],
            },
        }
    }

    /// The input (height, width) the model's preprocessing gives: its crop, or seed-cnn's 32×32.
    pub fn input_size(&self) -> (usize, usize) {
        self.preprocess.map_or((32, 32), |p| (p.crop, p.crop))
    }

    /// Every named module with its output shape for a [1, C, h, w] input (`size`, default
    /// [`Model::input_size`]); those with a [N, C, H, W] output are the layers a CAM can
    /// target.
    pub fn layers(&self, size: Option<(usize, usize)>) -> Result<Vec<Layer>> {
        let (h, w) = size.unwrap_or(self.input_size());
        let plan = self.graph.plan(&[1, self.graph.in_channels, h, w])?;
        Ok(self
            .graph
            .modules
            .iter()
            .map(|m| Layer {
                name: m.name.clone(),
                kind: m.kind.clone(),
                shape: plan.shapes[m.value].clone(),
            })
            .collect())
    }

    /// The module called `name`, or an error listing the closest valid names.
    pub fn module(&self, name: &str) -> Result<&Module> {
        if self.graph.idle_modules.iter().any(|m| m == name) {
            return Err(Error::Usage(format!(
                "layer '{name}' is a module of the model, but its forward did not call it (or \
                 it returned no tensor) when the model was exported: it has no activation to \
                 explain"
            )));
        }
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
