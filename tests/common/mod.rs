//! Helpers shared by the integration tests: fixture paths, fixture tensors, running the CLI.
#![allow(dead_code)] // each test crate uses its own subset

use gradcam::tensor::Tensor;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// An f32 tensor of a fixture file written by the generator scripts.
pub fn fixture_tensor(st: &SafeTensors, name: &str) -> Tensor {
    let v = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture tensor {name}"));
    let data = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::new(v.shape().to_vec(), data)
}

/// Runs the `gradcam` binary built for the tests.
pub fn gradcam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(args)
        .output()
        .expect("run gradcam")
}
