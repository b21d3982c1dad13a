//! gradcam: Grad-CAM explanations for CNN image classifiers without libtorch.
//!
//! `model` reads safetensors state dicts into graphs with PyTorch's module paths, `engine`
//! plans and runs the forward and partial backward passes on a `backend`, and `ops` holds the
//! shape descriptions all backends share.

pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod engine;
pub mod error;
pub mod explainer;
pub mod image;
pub mod interrupt;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod named;
pub mod npy;
pub mod ops;
#[cfg(feature = "cli")]
pub mod pipeline;
pub mod pointing;
pub mod runner;
pub mod selftest;
pub mod storage;
pub mod tensor;
#[cfg(feature = "cli")]
pub mod train;

pub use engine::{MapKind, Method, MethodOptions, Score};
pub use error::{Error, Result};
pub use explainer::{Explainer, ExplainerBuilder, Explanation, MethodMap, Targets};
pub use model::{LoadOptions, Model};
pub use named::Named;
pub use runner::BackendKind;
pub use tensor::Tensor;
