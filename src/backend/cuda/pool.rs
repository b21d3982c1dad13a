//! Launches of kernels/pool.cu: max pooling with argmax (ceil mode included), average pooling,
//! adaptive average and max pooling, and their backward gathers.

use super::args::{kernel_args, kernels};
use super::{backend_error, flat, launch, CudaBackend};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams, PoolParams};
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

kernels! {
    MAX_FWD: MaxPool = "max_pool2d_fwd";
    MAX_BWD: MaxPool = "max_pool2d_bwd_input";
    AVG_FWD: AdaptivePool = "adaptive_avg_pool2d_fwd";
    AVG_BWD: AdaptivePool = "adaptive_avg_pool2d_bwd_input";
    WIN_AVG_FWD: AvgPool2d = "avg_pool2d_fwd";
    WIN_AVG_BWD: AvgPool2d = "avg_pool2d_bwd_input";
    ADA_MAX_FWD: AdaptivePool = "adaptive_max_pool2d_fwd";
    ADA_MAX_BWD: AdaptivePool = "adaptive_max_pool2d_bwd_input";
}

/// A buffer of `len` argmax indices, every one written by the kernel.
fn argmax_buffer(be: &CudaBackend, len: usize) -> Result<CudaSlice<u32>> {
    // SAFETY: every element is written by the kernel (checked by the selftest).
    unsafe { be.stream.alloc::<u32>(len) }
        .map_err(|e| backend_error(format!("cannot allocate argmax: {e}")))
}

/// The pooling family's forward: y, and the argmax where asked and kept (the max pools write
/// it beside y either way).
pub fn forward(
    be: &CudaBackend,
    p: &PoolParams,
    x: &CudaSlice<f32>,
    want_argmax: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<u32>>)> {
    let len = p.output_len();
    let mut y = be.out(len)?;
    macro_rules! plain {
        ($kernel:expr, $args:expr) => {{
            launch!(be, $kernel, flat(len); &mut y, x; $args);
            None
        }};
    }
    macro_rules! with_argmax {
        ($kernel:expr, $args:expr) => {{
            let mut argmax = argmax_buffer(be, len)?;
            launch!(be, $kernel, flat(len); &mut y, &mut argmax, x; $args);
            Some(argmax)
        }};
    }
    let argmax = match p {
        PoolParams::Max(q) => with_argmax!(MAX_FWD, MaxPool::new(q, len)),
        PoolParams::Avg(q) => plain!(WIN_AVG_FWD, AvgPool2d::new(q, len)),
        PoolParams::AdaptiveAvg(q) => plain!(AVG_FWD, AdaptivePool::new(q, len)),
        PoolParams::AdaptiveMax(q) => with_argmax!(ADA_MAX_FWD, AdaptivePool::new(q, len)),
    };
    Ok((y, argmax.filter(|_| want_argmax)))
}

/// The pooling family's input gradient (the forward's argmax for the ops that keep one).
pub fn backward_input(
    be: &CudaBackend,
    p: &PoolParams,
    argmax: Option<&CudaSlice<u32>>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let len = p.input_len();
    let mut dx = be.out(len)?;
    match p {
        PoolParams::Max(q) => {
            let argmax = be.argmax(p, argmax)?;
            launch!(be, MAX_BWD, flat(len); &mut dx, argmax, dy; MaxPool::new(q, len));
        }
        PoolParams::Avg(q) => {
            launch!(be, WIN_AVG_BWD, flat(len); &mut dx, dy; AvgPool2d::new(q, len))
        }
        PoolParams::AdaptiveAvg(q) => {
            launch!(be, AVG_BWD, flat(len); &mut dx, dy; AdaptivePool::new(q, len))
        }
        PoolParams::AdaptiveMax(q) => {
            let argmax = be.argmax(p, argmax)?;
            launch!(be, ADA_MAX_BWD, flat(len); &mut dx, argmax, dy; AdaptivePool::new(q, len));
        }
    }
    Ok(dx)
}
