//! One error type for the whole crate. Every variant carries what a user needs to fix the
//! problem: the file path, the tensor or layer name, and the shapes involved.

use std::path::PathBuf;

/// The crate's result: its error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with what the user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A weights file that is not valid safetensors.
    #[error("{path}: not a valid safetensors file ({reason})")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of a dtype no backend reads.
    #[error("{path}: tensor '{name}' has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    Dtype {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// Its stored dtype.
        dtype: String,
    },
    /// An integer tensor where weights must be float.
    #[error("{path}: tensor '{name}' is stored as {dtype}, an integer type; the weights must be float (F32, F16 or BF16); only BatchNorm's num_batches_tracked may be an integer")]
    IntegerTensor {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// Its stored dtype.
        dtype: String,
    },
    /// A weight that is NaN or infinite.
    #[error("{path}: tensor '{name}' holds a non-finite value ({value}) at index {index:?}; the network's outputs would be NaN or infinite")]
    NonFinite {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// Where, as a multi-index into the tensor.
        index: Vec<usize>,
        /// The value.
        value: f32,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{path}: missing tensor '{name}' required by architecture {arch}")]
    MissingTensor {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// The architecture it was read as.
        arch: String,
    },
    /// A tensor the architecture has no place for.
    #[error("{path}: unexpected tensor '{name}' with shape {shape:?} for architecture {arch}")]
    UnexpectedTensor {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The architecture it was read as.
        arch: String,
    },
    /// A tensor of the wrong shape.
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected}")]
    Shape {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// The tensor, layer or module.
        name: String,
        /// The shape found.
        found: Vec<usize>,
        /// The shape expected.
        expected: String,
    },
    /// The architecture could not be detected or was named wrongly.
    #[error("{path}: cannot detect the architecture ({reason}); pass `arch`, one of: {known}")]
    UnknownArch {
        /// The file (or the input it stands for).
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The architectures there are.
        known: String,
    },
    /// An exported graph that does not hold together.
    #[error("{path}: invalid exported graph: {reason}")]
    Graph {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A layer name the model does not have.
    #[error("unknown layer '{name}'; closest valid names: {suggestions}")]
    UnknownLayer {
        /// The name given.
        name: String,
        /// The closest valid names.
        suggestions: String,
    },
    #[error(
        "layer '{name}' outputs shape {shape:?}; Grad-CAM needs a spatial [N, C, H, W] activation"
    )]
    /// A target layer whose output is not [N, C, H, W].
    NotSpatial {
        /// The layer.
        name: String,
        /// Its output's shape.
        shape: Vec<usize>,
    },
    /// An input (image, tensor file, upload) that cannot be used.
    #[error("input {path}: {reason}")]
    Input {
        /// The input.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A class the model does not have.
    #[error("class {class} is out of range: the model has {classes} classes (valid: 0..={max})", max = classes - 1)]
    ClassOutOfRange {
        /// The class asked for.
        class: usize,
        /// Classes of the model.
        classes: usize,
    },
    /// An input shape the network does not take.
    #[error("input of shape {input:?} does not fit this network: {reason}")]
    InputShape {
        /// The input shape.
        input: Vec<usize>,
        /// Why the network does not take it.
        reason: String,
    },
    /// A backend that is missing, failed, or lacks an op.
    #[error("backend {backend}: {reason}")]
    Backend {
        /// The backend.
        backend: String,
        /// What is wrong.
        reason: String,
    },
    /// A request that makes no sense.
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

/// What a caught panic says (its `&str` or `String` payload), for the error that replaces it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
