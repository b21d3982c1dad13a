//! Glue for shaders/activation.wgsl: every row of the activation table, forward and input
//! gradient, by the row's index (the table's functions are generated into the shader).

use super::kernels::{kernel, Kernel, Shader::Activation};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::ActivationParams;

const FWD: Kernel = kernel(Activation, "activation_fwd");
const BWD: Kernel = kernel(Activation, "activation_bwd");

/// Uniform words: [len, row index, alpha bits, beta bits].
fn params(p: &ActivationParams) -> [u32; 4] {
    [
        u(p.len),
        u(p.act.index()),
        p.alpha.to_bits(),
        p.beta.to_bits(),
    ]
}

pub fn forward(be: &WgpuBackend, p: &ActivationParams, x: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(x, p.len, &format!("{} input", p.act.name()))?;
    let y = be.output(p.len)?;
    be.run(FWD, &params(p), &[x.raw(), y.raw()], groups_1d(p.len, 256)?)?;
    Ok(y)
}

pub fn backward(
    be: &WgpuBackend,
    p: &ActivationParams,
    saved: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(saved, p.len, &format!("{} saved value", p.act.name()))?;
    be.need(dy, p.len, &format!("{} output gradient", p.act.name()))?;
    let dx = be.output(p.len)?;
    be.run(
        BWD,
        &params(p),
        &[saved.raw(), dy.raw(), dx.raw()],
        groups_1d(p.len, 256)?,
    )?;
    Ok(dx)
}
