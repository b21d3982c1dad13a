//! Backends for the tests that run on both: the CPU backend and the wgpu backend, both
//! poisoning every output with NaN so that an element a kernel fails to write is caught.

#![allow(dead_code)]

use gradcam::backend::cpu::CpuBackend;
use gradcam::backend::wgpu::{AdapterChoice, ConvVariant, WgpuBackend};

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
    be.conv = ConvVariant::V1Naive;
    be
}
