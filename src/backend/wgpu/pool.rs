//! Glue for shaders/pool.wgsl: max pooling with argmax (ceil mode included), average pooling,
//! adaptive average and max pooling, and their backward gathers.

use super::kernels::{kernel, Kernel, Shader::Pool};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, PoolParams, PoolWindow};

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

/// A pooling op's forward and backward kernels and their uniform words.
fn kernels(p: &PoolParams) -> (Kernel, Kernel, Vec<u32>) {
    match p {
        PoolParams::Max(q) => (MAX_FWD, MAX_BWD, window_params(q).to_vec()),
        PoolParams::Avg(q) => (WIN_AVG_FWD, WIN_AVG_BWD, win_avg_params(q).to_vec()),
        PoolParams::AdaptiveAvg(q) => (AVG_FWD, AVG_BWD, avg_params(q).to_vec()),
        PoolParams::AdaptiveMax(q) => (ADA_MAX_FWD, ADA_MAX_BWD, avg_params(q).to_vec()),
    }
}

/// The pooling family's forward: y, and the argmax where asked and kept (the max pools write
/// it beside y either way). Bindings: x, y (, argmax).
pub fn forward(
    be: &WgpuBackend,
    p: &PoolParams,
    x: &GpuBuffer,
    want_argmax: bool,
) -> Result<(GpuBuffer, Option<GpuBuffer>)> {
    let (fwd, _, params) = kernels(p);
    be.need(x, p.input_len(), &format!("{} input", p.name()))?;
    let y = be.output(p.output_len())?;
    let argmax = match p.keeps_argmax() {
        true => Some(be.output(p.output_len())?),
        false => None,
    };
    let mut bufs = vec![x.raw(), y.raw()];
    bufs.extend(argmax.as_ref().map(|a| a.raw()));
    be.run(fwd, &params, &bufs, groups_1d(p.output_len(), 256)?)?;
    Ok((y, argmax.filter(|_| want_argmax)))
}

/// The pooling family's input gradient (the forward's argmax for the ops that keep one).
/// Bindings: (argmax,) dy, dx.
pub fn backward_input(
    be: &WgpuBackend,
    p: &PoolParams,
    argmax: Option<&GpuBuffer>,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    let (_, bwd, params) = kernels(p);
    let mut bufs = vec![];
    if p.keeps_argmax() {
        let argmax = be.argmax(p, argmax)?;
        be.need(argmax, p.output_len(), &format!("{} argmax", p.name()))?;
        bufs.push(argmax.raw());
    }
    be.need(dy, p.output_len(), &format!("{} output gradient", p.name()))?;
    let dx = be.output(p.input_len())?;
    bufs.extend([dy.raw(), dx.raw()]);
    be.run(bwd, &params, &bufs, groups_1d(p.input_len(), 256)?)?;
    Ok(dx)
}
