//! Launches of kernels/activation.cu: every row of the activation table, forward and input
//! gradient.

use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::ActivationParams;
use cudarc::driver::CudaSlice;

pub fn forward(
    be: &CudaBackend,
    p: &ActivationParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len)?;
    let (id, n) = (p.act.index() as u32, p.len as i64);
    launch!(be, "activation_fwd", flat(p.len), || format!("activation_fwd {}", p.act.name());
        &mut y, x, &id, &p.alpha, &p.beta, &n);
    Ok(y)
}

pub fn backward(
    be: &CudaBackend,
    p: &ActivationParams,
    saved: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.len)?;
    let (id, n) = (p.act.index() as u32, p.len as i64);
    launch!(be, "activation_bwd_input", flat(p.len),
        || format!("activation_bwd_input {}", p.act.name());
        &mut dx, saved, dy, &id, &p.alpha, &p.beta, &n);
    Ok(dx)
}
