//! Launches of kernels/layer_norm.cu: LayerNorm over the middle axis of [outer, dim, inner],
//! forward and input gradient.

use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::LayerNormParams;
use cudarc::driver::CudaSlice;

pub fn forward(
    be: &CudaBackend,
    p: &LayerNormParams,
    x: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    bias: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len())?;
    let (outer, dim, inner) = (p.outer as i32, p.dim as i32, p.inner as i64);
    launch!(be, "layer_norm_fwd", flat(p.outer * p.inner); &mut y, x, weight, bias,
        &outer, &dim, &inner, &p.eps);
    Ok(y)
}

pub fn backward(
    be: &CudaBackend,
    p: &LayerNormParams,
    x: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.len())?;
    let (outer, dim, inner) = (p.outer as i32, p.dim as i32, p.inner as i64);
    launch!(be, "layer_norm_bwd_input", flat(p.outer * p.inner); &mut dx, x, weight, dy,
        &outer, &dim, &inner, &p.eps);
    Ok(dx)
}
