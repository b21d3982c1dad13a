//! Glue for shaders/linear.wgsl: forward, input gradient, weight and bias gradients.

use super::kernels::{kernel, Kernel, Shader::Linear};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::LinearParams;

const FWD: Kernel = kernel(Linear, "linear_fwd");
const BWD: Kernel = kernel(Linear, "linear_bwd");
const WGRAD: Kernel = kernel(Linear, "linear_wgrad");
const BGRAD: Kernel = kernel(Linear, "linear_bgrad");

pub fn forward(
    be: &WgpuBackend,
    p: &LinearParams,
    x: &GpuBuffer,
    w: &GpuBuffer,
    bias: Option<&GpuBuffer>,
) -> Result<GpuBuffer> {
    be.need(x, p.n * p.in_f, "linear input")?;
    be.need(w, p.out_f * p.in_f, "linear weight")?;
    if let Some(b) = bias {
        be.need(b, p.out_f, "linear bias")?;
    }
    let y = be.output(p.n * p.out_f)?;
    let b = bias.map(|b| b.raw()).unwrap_or(&be.dummy);
    be.run(
        FWD,
        &[u(p.n), u(p.in_f), u(p.out_f), bias.is_some() as u32],
        &[x.raw(), w.raw(), b, y.raw()],
        // one workgroup per output element
        groups_1d(p.n * p.out_f, 1)?,
    )?;
    Ok(y)
}

pub fn backward_input(
    be: &WgpuBackend,
    p: &LinearParams,
    dy: &GpuBuffer,
    w: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    be.need(w, p.out_f * p.in_f, "linear weight")?;
    let dx = be.output(p.n * p.in_f)?;
    be.run(
        BWD,
        &[u(p.n), u(p.in_f), u(p.out_f), 0],
        &[dy.raw(), w.raw(), dx.raw()],
        groups_1d(p.n * p.in_f, 256)?,
    )?;
    Ok(dx)
}

pub fn grad_weight(
    be: &WgpuBackend,
    p: &LinearParams,
    x: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.n * p.in_f, "linear input")?;
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    let dw = be.output(p.out_f * p.in_f)?;
    be.run(
        WGRAD,
        &[u(p.n), u(p.in_f), u(p.out_f), 0],
        &[x.raw(), dy.raw(), dw.raw()],
        groups_1d(p.out_f * p.in_f, 256)?,
    )?;
    Ok(dw)
}

pub fn grad_bias(be: &WgpuBackend, p: &LinearParams, dy: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    let db = be.output(p.out_f)?;
    be.run(
        BGRAD,
        &[u(p.n), u(p.in_f), u(p.out_f), 0],
        &[dy.raw(), db.raw()],
        groups_1d(p.out_f, 256)?,
    )?;
    Ok(db)
}
