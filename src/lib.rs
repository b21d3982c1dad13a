//! gradcam: Grad-CAM explanations for CNN image classifiers without libtorch.
//!
//! `model` reads safetensors state dicts into graphs with PyTorch's module paths, `engine`
//! plans and runs the forward and partial backward passes on a `backend`, and `ops` holds the
//! shape descriptions all backends share.

pub mod backend;
pub mod cli;
pub mod data;
pub mod engine;
pub mod error;
pub mod image;
pub mod interrupt;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod ops;
pub mod pipeline;
pub mod pointing;
pub mod runner;
pub mod storage;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
