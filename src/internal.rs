//! The engine's modules: public only for the project's own tests, benchmarks and tools.
//! Not an API: anything here may change in any release. The library is the crate root.

#[path = "backend/mod.rs"]
pub mod backend;
#[cfg(feature = "cli")]
#[path = "cli/mod.rs"]
pub mod cli;
#[path = "data/mod.rs"]
pub mod data;
#[path = "engine/mod.rs"]
pub mod engine;
#[path = "imaging/mod.rs"]
pub mod imaging;
#[path = "interrupt.rs"]
pub mod interrupt;
#[path = "limits.rs"]
pub mod limits;
#[path = "metrics/mod.rs"]
pub mod metrics;
#[path = "model/mod.rs"]
pub mod model;
#[path = "npy.rs"]
pub mod npy;
#[path = "ops/mod.rs"]
pub mod ops;
#[cfg(feature = "cli")]
#[path = "pipeline.rs"]
pub mod pipeline;
#[path = "runner.rs"]
pub mod runner;
#[path = "storage/mod.rs"]
pub mod storage;
#[path = "tensor.rs"]
pub mod tensor;
#[cfg(feature = "cli")]
#[path = "train/mod.rs"]
pub mod train;
