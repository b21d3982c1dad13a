//! Launches of kernels/linear.cu: fully connected layers, forward (one warp per output feature
//! and group of 8 images) and input gradient.

use super::{exact, launch_positional, CudaBackend};
use crate::error::Result;
use crate::ops::LinearParams;
use cudarc::driver::CudaSlice;

pub fn forward(
    be: &CudaBackend,
    p: &LinearParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.n * p.out_f)?;
    let has_bias = bias.is_some() as i32;
    let b = bias.unwrap_or(w);
    let (n, i, o) = (p.n as i32, p.in_f as i32, p.out_f as i32);
    let warps = p.out_f * p.n.div_ceil(8);
    launch_positional!(be, "linear_fwd", exact(warps * 32); &mut y, x, w, b, &has_bias, &n, &i, &o);
    Ok(y)
}

pub fn backward_input(
    be: &CudaBackend,
    p: &LinearParams,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.n * p.in_f)?;
    let (n, i, o) = (p.n as i32, p.in_f as i32, p.out_f as i32);
    let threads = p.in_f * p.n.div_ceil(8);
    launch_positional!(be, "linear_bwd_input", exact(threads); &mut dx, dy, w, &n, &i, &o);
    Ok(dx)
}
