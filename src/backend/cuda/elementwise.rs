//! Launches of kernels/elementwise.cu: ReLU, the per-channel affine map (eval BatchNorm) and
//! addition. (`fill`, which poisons outputs, is launched by `CudaBackend::out`.)

use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::ChannelAffineParams;
use cudarc::driver::CudaSlice;

pub fn relu(be: &CudaBackend, x: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
    let mut y = be.out(len)?;
    let n = len as i64;
    launch!(be, "relu_fwd", flat(len); &mut y, x, &n);
    Ok(y)
}

pub fn relu_backward(
    be: &CudaBackend,
    y: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    len: usize,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(len)?;
    let n = len as i64;
    launch!(be, "relu_bwd_input", flat(len); &mut dx, y, dy, &n);
    Ok(dx)
}

pub fn add(
    be: &CudaBackend,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    len: usize,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(len)?;
    let n = len as i64;
    launch!(be, "add", flat(len); &mut y, a, b, &n);
    Ok(y)
}

pub fn affine(
    be: &CudaBackend,
    p: &ChannelAffineParams,
    x: &CudaSlice<f32>,
    scale: &CudaSlice<f32>,
    shift: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len())?;
    let (c, hw, len) = (p.c as i32, p.hw as i64, p.len() as i64);
    launch!(be, "channel_affine_fwd", flat(p.len()); &mut y, x, scale, shift, &c, &hw, &len);
    Ok(y)
}

pub fn affine_backward(
    be: &CudaBackend,
    p: &ChannelAffineParams,
    dy: &CudaSlice<f32>,
    scale: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.len())?;
    let (c, hw, len) = (p.c as i32, p.hw as i64, p.len() as i64);
    launch!(be, "channel_affine_bwd_input", flat(p.len()); &mut dx, dy, scale, &c, &hw, &len);
    Ok(dx)
}
