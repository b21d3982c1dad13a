//! Launches of kernels/conv2d.cu: the dense convs, forward and input gradient, in four variants
//! (v1 plain FP32, v2 TF32 tiles, v3 3xTF32 with the fused epilogue, v4 v3 in plain TF32).
//! Convs with groups, dilation or asymmetric padding go to `grouped_conv`.

use super::{flat, grouped_conv, launch_positional, CudaBackend};
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

fn conv_shape(p: &Conv2dParams) -> [i32; 13] {
    [
        p.n,
        p.c_in,
        p.h_in,
        p.w_in,
        p.c_out,
        p.h_out(),
        p.w_out(),
        p.k_h,
        p.k_w,
        p.stride_h,
        p.stride_w,
        p.pad_h,
        p.pad_w,
    ]
    .map(|v| v as i32)
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
    let s = conv_shape(p);
    let name = match be.conv {
        ConvKernel::V4 => "conv2d_fwd_v4",
        _ => "conv2d_fwd_v3",
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
    let cfg = tile_grid(be, p.c_out, p.n * p.h_out() * p.w_out());
    launch_positional!(be, name, cfg, || label(name, p); &mut y, x, w, &bias, &scale, &shift, &residual, &relu,
        &id, &alpha, &beta, &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
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
    let has_bias = bias.is_some() as i32;
    let b = bias.unwrap_or(w);
    let s = conv_shape(p);
    let (name, cfg) = match be.conv {
        ConvKernel::V1 => ("conv2d_fwd_v1", flat(p.output_len())),
        _ => (
            "conv2d_fwd_v2",
            tile_grid(be, p.c_out, p.n * p.h_out() * p.w_out()),
        ),
    };
    launch_positional!(be, name, cfg, || label(name, p); &mut y, x, w, b, &has_bias,
        &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
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
    let s = conv_shape(p);
    let name = match be.conv {
        ConvKernel::V1 => "conv2d_bwd_input_v1",
        ConvKernel::V2 => "conv2d_bwd_input_v2",
        ConvKernel::V3 => "conv2d_bwd_input_v3",
        ConvKernel::V4 => "conv2d_bwd_input_v4",
    };
    let cfg = match be.conv {
        ConvKernel::V1 => flat(p.input_len()),
        _ => tile_grid(be, p.c_in, p.n * p.h_in * p.w_in),
    };
    launch_positional!(be, name, cfg, || label(name, p); &mut dx, dy, w,
        &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
    Ok(dx)
}
