//! Training and fine-tuning without libtorch, on any `TrainBackend` (CPU or wgpu): a full
//! forward/backward executor over the model graph with weight gradients, softmax cross-entropy,
//! SGD with momentum and weight decay as `torch.optim.SGD`, PyTorch's default initialisation,
//! head replacement, and saving in PyTorch's state-dict layout.

pub mod checkpoint;
pub mod executor;
pub mod fit;
pub mod init;
pub mod trainer;

pub use fit::{fit, FitOptions};
pub use init::StateDict;
pub use trainer::Trainer;
