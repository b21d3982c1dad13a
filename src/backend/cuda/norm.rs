//! Launches of kernels/layer_norm.cu: LayerNorm over the middle axis of [outer, dim, inner],
//! forward and input gradient.

use super::args::{kernel_args, kernels};
use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::LayerNormParams;
use cudarc::driver::CudaSlice;

kernel_args! {
    /// `struct Ln` of kernels/layer_norm.cu (shaders/layer_norm.wgsl's): x viewed as [outer,
    /// dim, inner], and eps.
    struct Ln {
        inner: i64,
        outer: i32,
        dim: i32,
        eps: f32,
        _pad: i32,
    }
}

impl Ln {
    fn new(p: &LayerNormParams) -> Self {
        Self {
            inner: p.inner as i64,
            outer: p.outer as i32,
            dim: p.dim as i32,
            eps: p.eps,
            _pad: 0,
        }
    }
}

kernels! {
    FWD: Ln = "layer_norm_fwd";
    BWD: Ln = "layer_norm_bwd_input";
}

pub fn forward(
    be: &CudaBackend,
    p: &LayerNormParams,
    x: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    bias: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len())?;
    launch!(be, FWD, flat(p.outer * p.inner); &mut y, x, weight, bias; Ln::new(p));
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
    launch!(be, BWD, flat(p.outer * p.inner); &mut dx, x, weight, dy; Ln::new(p));
    Ok(dx)
}
