//! Glue for shaders/layer_norm.wgsl: LayerNorm over one axis, forward and input gradient.

use super::kernels::{kernel, Kernel, Shader::LayerNorm};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::LayerNormParams;

const FWD: Kernel = kernel(LayerNorm, "layer_norm_fwd");
const BWD: Kernel = kernel(LayerNorm, "layer_norm_bwd");

fn params(p: &LayerNormParams) -> [u32; 4] {
    [u(p.outer), u(p.dim), u(p.inner), p.eps.to_bits()]
}

pub fn forward(
    be: &WgpuBackend,
    p: &LayerNormParams,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.len(), "layer_norm input")?;
    be.need(weight, p.dim, "layer_norm weight")?;
    be.need(bias, p.dim, "layer_norm bias")?;
    let y = be.output(p.len())?;
    be.run(
        FWD,
        &params(p),
        &[x.raw(), weight.raw(), bias.raw(), y.raw()],
        groups_1d(p.outer * p.inner, 256)?,
    )?;
    Ok(y)
}

pub fn backward(
    be: &WgpuBackend,
    p: &LayerNormParams,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.len(), "layer_norm input")?;
    be.need(weight, p.dim, "layer_norm weight")?;
    be.need(dy, p.len(), "layer_norm output gradient")?;
    let dx = be.output(p.len())?;
    be.run(
        BWD,
        &params(p),
        &[x.raw(), weight.raw(), dy.raw(), dx.raw()],
        groups_1d(p.outer * p.inner, 256)?,
    )?;
    Ok(dx)
}
