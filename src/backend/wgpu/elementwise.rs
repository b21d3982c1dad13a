//! Glue for shaders/elementwise.wgsl: ReLU, the per-channel affine map, addition, dropout by a
//! mask, fill.

use super::kernels::{kernel, Kernel, Shader::Elementwise};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::ChannelAffineParams;

const FILL: Kernel = kernel(Elementwise, "fill");
const RELU_FWD: Kernel = kernel(Elementwise, "relu_fwd");
const RELU_BWD: Kernel = kernel(Elementwise, "relu_bwd");
const ADD: Kernel = kernel(Elementwise, "add");
const AFFINE_FWD: Kernel = kernel(Elementwise, "affine_fwd");
const AFFINE_BWD: Kernel = kernel(Elementwise, "affine_bwd");
const DROPOUT: Kernel = kernel(Elementwise, "dropout");

/// Uniform words: [len, channels, plane size, fill value bits].
fn params(len: usize, c: usize, hw: usize, value: f32) -> [u32; 4] {
    [u(len), u(c), u(hw), value.to_bits()]
}

pub fn fill(be: &WgpuBackend, y: &GpuBuffer, value: f32) -> Result<()> {
    let len = y.len();
    be.run(
        FILL,
        &params(len, 1, 1, value),
        &[y.raw()],
        groups_1d(len, 256)?,
    )
}

pub fn relu(be: &WgpuBackend, x: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    be.need(x, len, "relu input")?;
    let y = be.output(len)?;
    be.run(
        RELU_FWD,
        &params(len, 1, 1, 0.0),
        &[x.raw(), y.raw()],
        groups_1d(len, 256)?,
    )?;
    Ok(y)
}

pub fn relu_backward(
    be: &WgpuBackend,
    y: &GpuBuffer,
    dy: &GpuBuffer,
    len: usize,
) -> Result<GpuBuffer> {
    be.need(y, len, "relu output")?;
    be.need(dy, len, "relu gradient")?;
    let dx = be.output(len)?;
    be.run(
        RELU_BWD,
        &params(len, 1, 1, 0.0),
        &[y.raw(), dy.raw(), dx.raw()],
        groups_1d(len, 256)?,
    )?;
    Ok(dx)
}

pub fn add(be: &WgpuBackend, a: &GpuBuffer, b: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    be.need(a, len, "add input")?;
    be.need(b, len, "add input")?;
    let y = be.output(len)?;
    be.run(
        ADD,
        &params(len, 1, 1, 0.0),
        &[a.raw(), b.raw(), y.raw()],
        groups_1d(len, 256)?,
    )?;
    Ok(y)
}

pub fn dropout(be: &WgpuBackend, x: &GpuBuffer, mask: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    be.need(x, len, "dropout input")?;
    be.need(mask, len, "dropout mask")?;
    let y = be.output(len)?;
    be.run(
        DROPOUT,
        &params(len, 1, 1, 0.0),
        &[x.raw(), mask.raw(), y.raw()],
        groups_1d(len, 256)?,
    )?;
    Ok(y)
}

pub fn affine(
    be: &WgpuBackend,
    p: &ChannelAffineParams,
    x: &GpuBuffer,
    scale: &GpuBuffer,
    shift: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.len(), "batch_norm input")?;
    be.need(scale, p.c, "batch_norm scale")?;
    be.need(shift, p.c, "batch_norm shift")?;
    let y = be.output(p.len())?;
    be.run(
        AFFINE_FWD,
        &params(p.len(), p.c, p.hw, 0.0),
        &[x.raw(), scale.raw(), shift.raw(), y.raw()],
        groups_1d(p.len(), 256)?,
    )?;
    Ok(y)
}

pub fn affine_backward(
    be: &WgpuBackend,
    p: &ChannelAffineParams,
    dy: &GpuBuffer,
    scale: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(dy, p.len(), "batch_norm gradient")?;
    be.need(scale, p.c, "batch_norm scale")?;
    let dx = be.output(p.len())?;
    be.run(
        AFFINE_BWD,
        &params(p.len(), p.c, p.hw, 0.0),
        &[dy.raw(), scale.raw(), dx.raw()],
        groups_1d(p.len(), 256)?,
    )?;
    Ok(dx)
}
