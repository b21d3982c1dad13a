//! Launches of kernels/conv2d.cu: the dense convs, forward and input gradient, in four variants
//! (v1 plain FP32, v2 TF32 tiles, v3 3xTF32 with the fused epilogue, v4 v3 in plain TF32).
//! Convs with groups, dilation or asymmetric padding go to `grouped_conv`.

use super::args::{kernel_args, kernels};
use super::{flat, grouped_conv, launch, CudaBackend};
use crate::backend::{ConvEpilogue, ConvKernel};
use crate::error::Result;
use crate::ops::{Activation, Conv2dParams};
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig};

/// Timing rows of the conv kernels carry the layer's shape: which layers cost the most is
/// what a kernel experiment needs to know.
pub(super) fn label(name: &str, p: &Conv2dParams) -> String {
    format!(
        "{name} {}->{} {}x{} k{} s{}",
        p.c_in, p.c_out, p.h_in, p.w_in, p.k_h, p.stride_h
    )
}

kernel_args! {
    /// `struct Conv` of kernels/conv2d.cu (shaders/conv2d.wgsl's, and the epilogue of v3/v4's
    /// forward): the shapes; has_bias (v1, v2 forward): bias is read; relu, act, alpha, beta
    /// (v3, v4 forward): the activation, see `Epilogue` in the kernel.
    struct Conv {
        n: i32,
        c_in: i32,
        h_in: i32,
        w_in: i32,
        c_out: i32,
        k_h: i32,
        k_w: i32,
        stride_h: i32,
        stride_w: i32,
        pad_h: i32,
        pad_w: i32,
        h_out: i32,
        w_out: i32,
        has_bias: i32,
        relu: i32,
        act: i32,
        alpha: f32,
        beta: f32,
    }
}

impl Conv {
    /// The shapes of `p`, no activation.
    fn new(p: &Conv2dParams, has_bias: bool) -> Self {
        Self {
            n: p.n as i32,
            c_in: p.c_in as i32,
            h_in: p.h_in as i32,
            w_in: p.w_in as i32,
            c_out: p.c_out as i32,
            k_h: p.k_h as i32,
            k_w: p.k_w as i32,
            stride_h: p.stride_h as i32,
            stride_w: p.stride_w as i32,
            pad_h: p.pad_h as i32,
            pad_w: p.pad_w as i32,
            h_out: p.h_out() as i32,
            w_out: p.w_out() as i32,
            has_bias: has_bias as i32,
            relu: 0,
            act: -1,
            alpha: 0.0,
            beta: 0.0,
        }
    }
}

kernels! {
    FWD_V1: Conv = "conv2d_fwd_v1";
    BWD_V1: Conv = "conv2d_bwd_input_v1";
    FWD_V2: Conv = "conv2d_fwd_v2";
    BWD_V2: Conv = "conv2d_bwd_input_v2";
    FWD_V3: Conv = "conv2d_fwd_v3";
    BWD_V3: Conv = "conv2d_bwd_input_v3";
    FWD_V4: Conv = "conv2d_fwd_v4";
    BWD_V4: Conv = "conv2d_bwd_input_v4";
}

/// Grid of the tensor-core kernels for C[M, N]: v2's 64x64 tiles of 128 threads, v3/v4's
/// 128x128 tiles of 256 threads.
fn tile_grid(be: &CudaBackend, m: usize, n: usize) -> LaunchConfig {
    let (tile, threads) = match be.conv {
        ConvKernel::V2 => (64, 128),
        _ => (128, 256),
    };
    LaunchConfig {
        grid_dim: (n.div_ceil(tile) as u32, m.div_ceil(tile) as u32, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// v3/v4 forward with an optional fused epilogue (`None`: bias only).
fn forward_v3(
    be: &CudaBackend,
    p: &Conv2dParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    e: Option<&ConvEpilogue<'_, CudaSlice<f32>>>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let kernel = match be.conv {
        ConvKernel::V4 => FWD_V4,
        _ => FWD_V3,
    };
    // Absent operands are null pointers: the kernel skips their step.
    let ptr = |b: Option<&CudaSlice<f32>>| b.map_or(0u64, |b| b.device_ptr(&be.stream).0);
    let bias = ptr(bias);
    let scale = ptr(e.and_then(|e| e.bn.map(|(s, _)| s)));
    let shift = ptr(e.and_then(|e| e.bn.map(|(_, t)| t)));
    let residual = ptr(e.and_then(|e| e.residual));
    // ReLU as max(v, 0) (the CPU's fused rule); any other row through the table.
    let act = e.and_then(|e| e.act);
    let relu = act.is_some_and(|a| a.act == Activation::Relu) as i32;
    let (id, alpha, beta) = match act {
        Some(a) if a.act != Activation::Relu => (a.act.index() as i32, a.alpha, a.beta),
        _ => (-1, 0.0, 0.0),
    };
    // has_bias is not read: a null bias pointer says it.
    let args = Conv {
        relu,
        act: id,
        alpha,
        beta,
        ..Conv::new(p, false)
    };
    let cfg = tile_grid(be, p.c_out, p.n * p.h_out() * p.w_out());
    launch!(be, kernel, cfg, || label(kernel.name, p); &mut y, x, w, &bias, &scale, &shift, &residual; args);
    Ok(y)
}

pub fn forward(
    be: &CudaBackend,
    p: &Conv2dParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    if !p.is_dense() {
        return grouped_conv::forward(be, p, x, w, bias);
    }
    if matches!(be.conv, ConvKernel::V3 | ConvKernel::V4) {
        return forward_v3(be, p, x, w, bias, None);
    }
    let mut y = be.out(p.output_len())?;
    let args = Conv::new(p, bias.is_some());
    let b = bias.unwrap_or(w);
    let (kernel, cfg) = match be.conv {
        ConvKernel::V1 => (FWD_V1, flat(p.output_len())),
        _ => (FWD_V2, tile_grid(be, p.c_out, p.n * p.h_out() * p.w_out())),
    };
    launch!(be, kernel, cfg, || label(kernel.name, p); &mut y, x, w, b; args);
    Ok(y)
}

pub fn forward_fused(
    be: &CudaBackend,
    p: &Conv2dParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    e: &ConvEpilogue<'_, CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    if !p.is_dense() {
        return crate::backend::conv2d_then_epilogue(be, p, x, w, bias, e);
    }
    match be.conv {
        ConvKernel::V3 | ConvKernel::V4 => forward_v3(be, p, x, w, bias, Some(e)),
        _ => crate::backend::conv2d_then_epilogue(be, p, x, w, bias, e),
    }
}

pub fn backward_input(
    be: &CudaBackend,
    p: &Conv2dParams,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    if !p.is_dense() {
        return grouped_conv::backward_input(be, p, dy, w);
    }
    let mut dx = be.out(p.input_len())?;
    let kernel = match be.conv {
        ConvKernel::V1 => BWD_V1,
        ConvKernel::V2 => BWD_V2,
        ConvKernel::V3 => BWD_V3,
        ConvKernel::V4 => BWD_V4,
    };
    let cfg = match be.conv {
        ConvKernel::V1 => flat(p.input_len()),
        _ => tile_grid(be, p.c_in, p.n * p.h_in * p.w_in),
    };
    launch!(be, kernel, cfg, || label(kernel.name, p); &mut dx, dy, w; Conv::new(p, false));
    Ok(dx)
}
