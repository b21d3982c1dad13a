//! Glue for shaders/pool.wgsl: max pooling with argmax (ceil mode included), average pooling,
//! adaptive average and max pooling, and their backward gathers.

use super::kernels::{kernel, Kernel, Shader::Pool};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams, PoolParams, PoolWindow};

const MAX_FWD: Kernel = kernel(Pool, "max_pool_fwd");
const MAX_BWD: Kernel = kernel(Pool, "max_pool_bwd");
const AVG_FWD: Kernel = kernel(Pool, "avg_pool_fwd");
const AVG_BWD: Kernel = kernel(Pool, "avg_pool_bwd");
const WIN_AVG_FWD: Kernel = kernel(Pool, "avg_pool2d_fwd");
const WIN_AVG_BWD: Kernel = kernel(Pool, "avg_pool2d_bwd");
const ADA_MAX_FWD: Kernel = kernel(Pool, "adaptive_max_pool_fwd");
const ADA_MAX_BWD: Kernel = kernel(Pool, "adaptive_max_pool_bwd");

/// The uniform words a windowed pooling kernel's params start with (pool.wgsl's `MaxPool`,
/// and `AvgPool2d` before its own `count_include_pad`).
fn window_params(p: &PoolWindow) -> [u32; 12] {
    [
        u(p.n),
        u(p.c),
        u(p.h_in),
        u(p.w_in),
        u(p.k_h),
        u(p.k_w),
        u(p.stride_h),
        u(p.stride_w),
        u(p.pad_h),
        u(p.pad_w),
        u(p.h_out()),
        u(p.w_out()),
    ]
}

fn win_avg_params(p: &AvgPool2dParams) -> [u32; 16] {
    let mut words = [0; 16];
    words[..12].copy_from_slice(&window_params(&p.window));
    words[12] = p.count_include_pad as u32;
    words
}

fn avg_params(p: &AdaptivePool2dParams) -> [u32; 6] {
    [u(p.n), u(p.c), u(p.h_in), u(p.w_in), u(p.h_out), u(p.w_out)]
}

fn max_pool(
    be: &WgpuBackend,
    p: &MaxPool2dParams,
    x: &GpuBuffer,
) -> Result<(GpuBuffer, GpuBuffer)> {
    be.need(x, p.input_len(), "max_pool input")?;
    let y = be.output(p.output_len())?;
    let idx = be.output(p.output_len())?;
    be.run(
        MAX_FWD,
        &window_params(p),
        &[x.raw(), y.raw(), idx.raw()],
        groups_1d(p.output_len(), 256)?,
    )?;
    Ok((y, idx))
}

fn max_pool_backward(
    be: &WgpuBackend,
    p: &MaxPool2dParams,
    argmax: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(argmax, p.output_len(), "max_pool argmax")?;
    be.need(dy, p.output_len(), "max_pool output gradient")?;
    let dx = be.output(p.input_len())?;
    be.run(
        MAX_BWD,
        &window_params(p),
        &[argmax.raw(), dy.raw(), dx.raw()],
        groups_1d(p.input_len(), 256)?,
    )?;
    Ok(dx)
}

fn avg_pool(be: &WgpuBackend, p: &AdaptivePool2dParams, x: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(x, p.input_len(), "adaptive_avg_pool input")?;
    let y = be.output(p.output_len())?;
    be.run(
        AVG_FWD,
        &avg_params(p),
        &[x.raw(), y.raw()],
        groups_1d(p.output_len(), 256)?,
    )?;
    Ok(y)
}

fn avg_pool_backward(
    be: &WgpuBackend,
    p: &AdaptivePool2dParams,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(dy, p.output_len(), "adaptive_avg_pool output gradient")?;
    let dx = be.output(p.input_len())?;
    be.run(
        AVG_BWD,
        &avg_params(p),
        &[dy.raw(), dx.raw()],
        groups_1d(p.input_len(), 256)?,
    )?;
    Ok(dx)
}

fn win_avg_pool(be: &WgpuBackend, p: &AvgPool2dParams, x: &GpuBuffer) -> Result<GpuBuffer> {
    let w = &p.window;
    be.need(x, w.input_len(), "avg_pool2d input")?;
    let y = be.output(w.output_len())?;
    be.run(
        WIN_AVG_FWD,
        &win_avg_params(p),
        &[x.raw(), y.raw()],
        groups_1d(w.output_len(), 256)?,
    )?;
    Ok(y)
}

fn win_avg_pool_backward(
    be: &WgpuBackend,
    p: &AvgPool2dParams,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    let w = &p.window;
    be.need(dy, w.output_len(), "avg_pool2d output gradient")?;
    let dx = be.output(w.input_len())?;
    be.run(
        WIN_AVG_BWD,
        &win_avg_params(p),
        &[dy.raw(), dx.raw()],
        groups_1d(w.input_len(), 256)?,
    )?;
    Ok(dx)
}

fn adaptive_max_pool(
    be: &WgpuBackend,
    p: &AdaptivePool2dParams,
    x: &GpuBuffer,
) -> Result<(GpuBuffer, GpuBuffer)> {
    be.need(x, p.input_len(), "adaptive_max_pool input")?;
    let y = be.output(p.output_len())?;
    let idx = be.output(p.output_len())?;
    be.run(
        ADA_MAX_FWD,
        &avg_params(p),
        &[x.raw(), y.raw(), idx.raw()],
        groups_1d(p.output_len(), 256)?,
    )?;
    Ok((y, idx))
}

fn adaptive_max_pool_backward(
    be: &WgpuBackend,
    p: &AdaptivePool2dParams,
    argmax: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(argmax, p.output_len(), "adaptive_max_pool argmax")?;
    be.need(dy, p.output_len(), "adaptive_max_pool output gradient")?;
    let dx = be.output(p.input_len())?;
    be.run(
        ADA_MAX_BWD,
        &avg_params(p),
        &[argmax.raw(), dy.raw(), dx.raw()],
        groups_1d(p.input_len(), 256)?,
    )?;
    Ok(dx)
}

/// The pooling family's forward: y, and the argmax where asked and kept. The max pools compute
/// their argmax either way.
pub fn forward(
    be: &WgpuBackend,
    p: &PoolParams,
    x: &GpuBuffer,
    want_argmax: bool,
) -> Result<(GpuBuffer, Option<GpuBuffer>)> {
    let (y, argmax) = match p {
        PoolParams::Max(q) => max_pool(be, q, x).map(|(y, i)| (y, Some(i)))?,
        PoolParams::Avg(q) => (win_avg_pool(be, q, x)?, None),
        PoolParams::AdaptiveAvg(q) => (avg_pool(be, q, x)?, None),
        PoolParams::AdaptiveMax(q) => adaptive_max_pool(be, q, x).map(|(y, i)| (y, Some(i)))?,
    };
    Ok((y, argmax.filter(|_| want_argmax)))
}

/// The pooling family's input gradient (the forward's argmax for the ops that keep one).
pub fn backward_input(
    be: &WgpuBackend,
    p: &PoolParams,
    argmax: Option<&GpuBuffer>,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    match p {
        PoolParams::Max(q) => max_pool_backward(be, q, be.argmax(p, argmax)?, dy),
        PoolParams::Avg(q) => win_avg_pool_backward(be, q, dy),
        PoolParams::AdaptiveAvg(q) => avg_pool_backward(be, q, dy),
        PoolParams::AdaptiveMax(q) => adaptive_max_pool_backward(be, q, be.argmax(p, argmax)?, dy),
    }
}
