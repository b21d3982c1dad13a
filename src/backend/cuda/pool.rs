//! Launches of kernels/pool.cu: max pooling with argmax (ceil mode included), average pooling,
//! adaptive average and max pooling, and their backward gathers.

use super::{flat, launch_positional, CudaBackend};
use crate::error::Result;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams};
use cudarc::driver::CudaSlice;

/// Shape arguments of kernels/pool.cu's avg_pool2d kernels.
fn avg_pool_shape(p: &AvgPool2dParams) -> [i32; 11] {
    [
        p.h_in,
        p.w_in,
        p.h_out(),
        p.w_out(),
        p.k_h,
        p.k_w,
        p.stride_h,
        p.stride_w,
        p.pad_h,
        p.pad_w,
        p.count_include_pad as usize,
    ]
    .map(|v| v as i32)
}

/// A buffer of `len` argmax indices, every one written by the kernel.
fn argmax(be: &CudaBackend, len: usize) -> Result<CudaSlice<u32>> {
    // SAFETY: every element is written by the kernel (checked by the selftest).
    unsafe { be.stream.alloc::<u32>(len) }
        .map_err(|e| super::backend_error(format!("cannot allocate argmax: {e}")))
}

pub fn max_pool(
    be: &CudaBackend,
    p: &MaxPool2dParams,
    x: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let mut y = be.out(p.output_len())?;
    let mut idx = argmax(be, p.output_len())?;
    let d = [
        p.h_in,
        p.w_in,
        p.h_out(),
        p.w_out(),
        p.k_h,
        p.k_w,
        p.stride_h,
        p.stride_w,
        p.pad_h,
        p.pad_w,
    ]
    .map(|v| v as i32);
    let total = p.output_len() as i64;
    launch_positional!(be, "max_pool2d_fwd", flat(p.output_len()); &mut y, &mut idx, x,
        &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &total);
    Ok((y, idx))
}

pub fn max_pool_backward(
    be: &CudaBackend,
    p: &MaxPool2dParams,
    argmax: &CudaSlice<u32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let d = [
        p.h_in,
        p.w_in,
        p.h_out(),
        p.w_out(),
        p.k_h,
        p.k_w,
        p.stride_h,
        p.stride_w,
        p.pad_h,
        p.pad_w,
    ]
    .map(|v| v as i32);
    let total = p.input_len() as i64;
    launch_positional!(be, "max_pool2d_bwd_input", flat(p.input_len()); &mut dx, argmax, dy,
        &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &total);
    Ok(dx)
}

/// Adaptive average pooling (the wgpu backend's name).
pub fn avg_pool(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
    let total = p.output_len() as i64;
    launch_positional!(be, "adaptive_avg_pool2d_fwd", flat(p.output_len()); &mut y, x,
        &d[0], &d[1], &d[2], &d[3], &total);
    Ok(y)
}

pub fn avg_pool_backward(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
    let total = p.input_len() as i64;
    launch_positional!(be, "adaptive_avg_pool2d_bwd_input", flat(p.input_len()); &mut dx, dy,
        &d[0], &d[1], &d[2], &d[3], &total);
    Ok(dx)
}

/// nn.AvgPool2d, a window average (the wgpu backend's name).
pub fn win_avg_pool(
    be: &CudaBackend,
    p: &AvgPool2dParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let d = avg_pool_shape(p);
    let total = p.output_len() as i64;
    launch_positional!(be, "avg_pool2d_fwd", flat(p.output_len()); &mut y, x,
        &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &d[10], &total);
    Ok(y)
}

pub fn win_avg_pool_backward(
    be: &CudaBackend,
    p: &AvgPool2dParams,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let d = avg_pool_shape(p);
    let total = p.input_len() as i64;
    launch_positional!(be, "avg_pool2d_bwd_input", flat(p.input_len()); &mut dx, dy,
        &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &d[10], &total);
    Ok(dx)
}

pub fn adaptive_max_pool(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    x: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let mut y = be.out(p.output_len())?;
    let mut idx = argmax(be, p.output_len())?;
    let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
    let total = p.output_len() as i64;
    launch_positional!(be, "adaptive_max_pool2d_fwd", flat(p.output_len()); &mut y, &mut idx, x,
        &d[0], &d[1], &d[2], &d[3], &total);
    Ok((y, idx))
}

pub fn adaptive_max_pool_backward(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    argmax: &CudaSlice<u32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
    let total = p.input_len() as i64;
    launch_positional!(be, "adaptive_max_pool2d_bwd_input", flat(p.input_len()); &mut dx, argmax, dy,
        &d[0], &d[1], &d[2], &d[3], &total);
    Ok(dx)
}
