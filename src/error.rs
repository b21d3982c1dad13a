//! One error type for the whole crate. Every variant carries what a user needs to fix the
//! problem: the file path, the tensor or layer name, and the shapes involved.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file ({reason})")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor '{name}' has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: tensor '{name}' is stored as {dtype}, an integer type; the weights must be float (F32, F16 or BF16); only BatchNorm's num_batches_tracked may be an integer")]
    IntegerTensor {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: tensor '{name}' holds a non-finite value ({value}) at index {index:?}; the network's outputs would be NaN or infinite")]
    NonFinite {
        path: PathBuf,
        name: String,
        index: Vec<usize>,
        value: f32,
    },
    #[error("{path}: missing tensor '{name}' required by architecture {arch}")]
    MissingTensor {
        path: PathBuf,
        name: String,
        arch: String,
    },
    #[error("{path}: unexpected tensor '{name}' with shape {shape:?} for architecture {arch}")]
    UnexpectedTensor {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        arch: String,
    },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("{path}: cannot detect the architecture ({reason}); pass `arch`, one of: {known}")]
    UnknownArch {
        path: PathBuf,
        reason: String,
        known: String,
    },
    #[error("{path}: invalid exported graph: {reason}")]
    Graph { path: PathBuf, reason: String },
    #[error("unknown layer '{name}'; closest valid names: {suggestions}")]
    UnknownLayer { name: String, suggestions: String },
    #[error(
        "layer '{name}' outputs shape {shape:?}; Grad-CAM needs a spatial [N, C, H, W] activation"
    )]
    NotSpatial { name: String, shape: Vec<usize> },
    #[error("input {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("class {class} is out of range: the model has {classes} classes (valid: 0..={max})", max = classes - 1)]
    ClassOutOfRange { class: usize, classes: usize },
    #[error("input of shape {input:?} does not fit this network: {reason}")]
    InputShape { input: Vec<usize>, reason: String },
    #[error("backend {backend}: {reason}")]
    Backend { backend: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// An option that is invalid in itself or with another option (exit status 2, as clap's
    /// own usage errors).
    #[error("{0}")]
    BadOption(String),
    /// The run was stopped by SIGINT or SIGTERM (the signal number).
    #[error("interrupted by {}", crate::interrupt::name(*.0))]
    Interrupted(i32),
}
