//! Launches of kernels/pool.cu: max pooling with argmax (ceil mode included), average pooling,
//! adaptive average and max pooling, and their backward gathers.

use super::args::{kernel_args, Kernel};
use super::{backend_error, flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams};
use cudarc::driver::CudaSlice;

kernel_args! {
    /// `struct MaxPool` of kernels/pool.cu (shaders/pool.wgsl's, with total, the elements the
    /// kernel's threads cover, for n and c).
    struct MaxPool {
        total: i64,
        h_in: i32,
        w_in: i32,
        k_h: i32,
        k_w: i32,
        stride_h: i32,
        stride_w: i32,
        pad_h: i32,
        pad_w: i32,
        h_out: i32,
        w_out: i32,
    }
}

impl MaxPool {
    fn new(p: &MaxPool2dParams, total: usize) -> Self {
        Self {
            total: total as i64,
            h_in: p.h_in as i32,
            w_in: p.w_in as i32,
            k_h: p.k_h as i32,
            k_w: p.k_w as i32,
            stride_h: p.stride_h as i32,
            stride_w: p.stride_w as i32,
            pad_h: p.pad_h as i32,
            pad_w: p.pad_w as i32,
            h_out: p.h_out() as i32,
            w_out: p.w_out() as i32,
        }
    }
}

kernel_args! {
    /// `struct AvgPool2d` of kernels/pool.cu (shaders/pool.wgsl's, with total for n and c).
    struct AvgPool2d {
        total: i64,
        h_in: i32,
        w_in: i32,
        k_h: i32,
        k_w: i32,
        stride_h: i32,
        stride_w: i32,
        pad_h: i32,
        pad_w: i32,
        h_out: i32,
        w_out: i32,
        count_include_pad: i32,
        _pad: i32,
    }
}

impl AvgPool2d {
    fn new(a: &AvgPool2dParams, total: usize) -> Self {
        let p = &a.window;
        Self {
            total: total as i64,
            h_in: p.h_in as i32,
            w_in: p.w_in as i32,
            k_h: p.k_h as i32,
            k_w: p.k_w as i32,
            stride_h: p.stride_h as i32,
            stride_w: p.stride_w as i32,
            pad_h: p.pad_h as i32,
            pad_w: p.pad_w as i32,
            h_out: p.h_out() as i32,
            w_out: p.w_out() as i32,
            count_include_pad: a.count_include_pad as i32,
            _pad: 0,
        }
    }
}

kernel_args! {
    /// `struct AdaptivePool` of kernels/pool.cu, for adaptive average and max pooling
    /// (shaders/pool.wgsl's `AvgPool`, which serves both, with total for n and c).
    struct AdaptivePool {
        total: i64,
        h_in: i32,
        w_in: i32,
        h_out: i32,
        w_out: i32,
    }
}

impl AdaptivePool {
    fn new(p: &AdaptivePool2dParams, total: usize) -> Self {
        Self {
            total: total as i64,
            h_in: p.h_in as i32,
            w_in: p.w_in as i32,
            h_out: p.h_out as i32,
            w_out: p.w_out as i32,
        }
    }
}

pub(super) const MAX_FWD: Kernel<MaxPool> = Kernel::new("max_pool2d_fwd");
pub(super) const MAX_BWD: Kernel<MaxPool> = Kernel::new("max_pool2d_bwd_input");
pub(super) const AVG_FWD: Kernel<AdaptivePool> = Kernel::new("adaptive_avg_pool2d_fwd");
pub(super) const AVG_BWD: Kernel<AdaptivePool> = Kernel::new("adaptive_avg_pool2d_bwd_input");
pub(super) const WIN_AVG_FWD: Kernel<AvgPool2d> = Kernel::new("avg_pool2d_fwd");
pub(super) const WIN_AVG_BWD: Kernel<AvgPool2d> = Kernel::new("avg_pool2d_bwd_input");
pub(super) const ADA_MAX_FWD: Kernel<AdaptivePool> = Kernel::new("adaptive_max_pool2d_fwd");
pub(super) const ADA_MAX_BWD: Kernel<AdaptivePool> = Kernel::new("adaptive_max_pool2d_bwd_input");

/// A buffer of `len` argmax indices, every one written by the kernel.
fn argmax(be: &CudaBackend, len: usize) -> Result<CudaSlice<u32>> {
    // SAFETY: every element is written by the kernel (checked by the selftest).
    unsafe { be.stream.alloc::<u32>(len) }
        .map_err(|e| backend_error(format!("cannot allocate argmax: {e}")))
}

pub fn max_pool(
    be: &CudaBackend,
    p: &MaxPool2dParams,
    x: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let mut y = be.out(p.output_len())?;
    let mut idx = argmax(be, p.output_len())?;
    let args = MaxPool::new(p, p.output_len());
    launch!(be, MAX_FWD, flat(p.output_len()); &mut y, &mut idx, x; args);
    Ok((y, idx))
}

pub fn max_pool_backward(
    be: &CudaBackend,
    p: &MaxPool2dParams,
    argmax: &CudaSlice<u32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let args = MaxPool::new(p, p.input_len());
    launch!(be, MAX_BWD, flat(p.input_len()); &mut dx, argmax, dy; args);
    Ok(dx)
}

/// Adaptive average pooling (the wgpu backend's name).
pub fn avg_pool(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let args = AdaptivePool::new(p, p.output_len());
    launch!(be, AVG_FWD, flat(p.output_len()); &mut y, x; args);
    Ok(y)
}

pub fn avg_pool_backward(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let args = AdaptivePool::new(p, p.input_len());
    launch!(be, AVG_BWD, flat(p.input_len()); &mut dx, dy; args);
    Ok(dx)
}

/// nn.AvgPool2d, a window average (the wgpu backend's name).
pub fn win_avg_pool(
    be: &CudaBackend,
    p: &AvgPool2dParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let len = p.window.output_len();
    let mut y = be.out(len)?;
    let args = AvgPool2d::new(p, len);
    launch!(be, WIN_AVG_FWD, flat(len); &mut y, x; args);
    Ok(y)
}

pub fn win_avg_pool_backward(
    be: &CudaBackend,
    p: &AvgPool2dParams,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let len = p.window.input_len();
    let mut dx = be.out(len)?;
    let args = AvgPool2d::new(p, len);
    launch!(be, WIN_AVG_BWD, flat(len); &mut dx, dy; args);
    Ok(dx)
}

pub fn adaptive_max_pool(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    x: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let mut y = be.out(p.output_len())?;
    let mut idx = argmax(be, p.output_len())?;
    let args = AdaptivePool::new(p, p.output_len());
    launch!(be, ADA_MAX_FWD, flat(p.output_len()); &mut y, &mut idx, x; args);
    Ok((y, idx))
}

pub fn adaptive_max_pool_backward(
    be: &CudaBackend,
    p: &AdaptivePool2dParams,
    argmax: &CudaSlice<u32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let args = AdaptivePool::new(p, p.input_len());
    launch!(be, ADA_MAX_BWD, flat(p.input_len()); &mut dx, argmax, dy; args);
    Ok(dx)
}
