//! Grad-CAM explanations for CNN image classifiers, without libtorch.
//!
//! Load a model, build an [`Explainer`], explain a preprocessed batch:
//!
//! ```no_run
//! use gradcam::{image, Explainer, Model, Targets};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("resnet50.safetensors")?; // a torchvision state_dict, or an exported graph
//! let input = model.preprocessing().apply(&image::decode("photo.jpg")?); // resize, crop, normalize
//! let explainer = Explainer::builder(model).build()?; // Grad-CAM, default layer, best backend
//! let e = explainer.explain(&input.batch(), Targets::Top)?;
//! image::overlay(&input.rgb, e.maps[0].image(0), 0.5)?.save("overlay.png")?;
//! # Ok(())
//! # }
//! ```
//!
//! Cargo features, all on by default: `cli` (the `gradcam` binary), `wgpu` (any GPU through
//! Vulkan, Metal or DX12) and `cuda` (NVIDIA GPUs; driver and NVRTC loaded at run time).
//! Without them (`default-features = false`) the library runs on the CPU backend.
//!
//! `internal` holds the engine's modules for the project's own tests and tools; it is not
//! part of the API.
#![warn(missing_docs)]

mod error;
mod explainer;
pub mod image;
#[doc(hidden)]
pub mod internal;
mod named;

pub(crate) use internal::{
    backend, data, engine, imaging, interrupt, limits, model, npy, ops, runner, storage, tensor,
};
#[cfg(feature = "cli")]
pub(crate) use internal::{cli, metrics, pipeline, serve, train};

pub use engine::{MapKind, Method, MethodOptions, Score};
pub use error::{Error, Result};
pub use explainer::{Explainer, ExplainerBuilder, Explanation, MethodMap, Targets};
pub use model::{Layer, LoadOptions, Model};
pub use named::Named;
pub use runner::BackendKind;
pub use tensor::Tensor;
