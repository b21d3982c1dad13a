//! Helpers shared by the integration tests: fixture paths, fixture tensors, running the CLI,
//! and the backends that run the same tests (CPU and wgpu, both poisoning outputs with NaN).
#![allow(dead_code)] // each test crate uses its own subset

use gradcam::internal::backend::cpu::CpuBackend;
use gradcam::internal::backend::wgpu::{AdapterChoice, WgpuBackend};
use gradcam::internal::backend::ConvKernel;
use gradcam::internal::ops::Conv2dParams;
use gradcam::internal::tensor::Tensor;
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
    gradcam_env(&[], args)
}

/// Runs the `gradcam` binary with extra environment variables set for it.
pub fn gradcam_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run gradcam")
}

pub fn cpu() -> CpuBackend {
    CpuBackend { poison: true }
}

/// The wgpu backend on any adapter. No adapter is a test failure, not a skip: CI installs
/// Mesa's lavapipe (`mesa-vulkan-drivers`) precisely so that these tests run everywhere.
pub fn wgpu() -> WgpuBackend {
    let mut be = WgpuBackend::new(AdapterChoice::Any).unwrap_or_else(|e| {
        panic!("{e} (the wgpu tests need an adapter; CI installs mesa-vulkan-drivers)")
    });
    be.poison = true;
    be
}

/// The wgpu backend with the naive v1 convolution kernels.
pub fn wgpu_v1() -> WgpuBackend {
    let mut be = wgpu();
    be.set_conv(ConvKernel::V1).unwrap();
    be
}

/// A convolution from (n, c_in, h, w, c_out, k_h, k_w, stride, pad), the tuple the
/// finite-difference tests list their cases as; the padding is capped at k/2 + 1 per axis.
pub fn conv_case(
    (n, c_in, h, w, c_out, k_h, k_w, stride, pad): (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    ),
) -> Conv2dParams {
    let pad = (pad.min(k_h / 2 + 1), pad.min(k_w / 2 + 1));
    Conv2dParams::dense(n, c_in, (h, w), c_out, (k_h, k_w), (stride, stride), pad)
}

/// Compares `analytic`, the gradient of the scalar `loss` at `v`, with central differences
/// (step 1e-5, in f64) on up to `samples` random coordinates: each must satisfy
/// |analytic − numeric| ≤ atol + rtol·|numeric|.
#[track_caller]
pub fn check_fd(
    what: &str,
    v: &[f64],
    analytic: &[f64],
    loss: impl Fn(&[f64]) -> f64,
    (samples, atol, rtol): (usize, f64, f64),
    rng: &mut rand::rngs::StdRng,
) {
    use rand::seq::SliceRandom;
    const H: f64 = 1e-5;
    assert_eq!(analytic.len(), v.len(), "{what}: gradient length");
    let mut indices: Vec<usize> = (0..v.len()).collect();
    indices.shuffle(rng);
    indices.truncate(samples);
    for i in indices {
        let (mut vp, mut vm) = (v.to_vec(), v.to_vec());
        vp[i] += H;
        vm[i] -= H;
        let numeric = (loss(&vp) - loss(&vm)) / (2.0 * H);
        let err = (analytic[i] - numeric).abs();
        assert!(
            analytic[i].is_finite() && err <= atol + rtol * numeric.abs(),
            "{what}: d/d[{i}] analytic {} vs finite difference {numeric} (error {err:e})",
            analytic[i]
        );
    }
}

/// Runs `f` on a fresh rayon pool of `threads` threads (for checks that a kernel's result does
/// not depend on the thread count).
pub fn in_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

/// Asserts that two f32 slices are bit-identical.
#[track_caller]
pub fn assert_bits_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits(),
            "{what}: [{i}] {x:e} vs {y:e} (not bit-identical)"
        );
    }
}
