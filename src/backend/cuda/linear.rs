//! Launches of kernels/linear.cu: fully connected layers, forward (one warp per output feature
//! and group of 8 images) and input gradient.

use super::args::{kernel_args, kernels};
use super::{exact, launch, CudaBackend};
use crate::error::Result;
use crate::ops::LinearParams;
use cudarc::driver::CudaSlice;

kernel_args! {
    /// `struct Linear` of kernels/linear.cu (shaders/linear.wgsl's, without its weight
    /// tiling): n images of in_f features to out_f; has_bias (forward only): bias is read.
    struct Linear {
        n: i32,
        in_f: i32,
        out_f: i32,
        has_bias: i32,
    }
}

impl Linear {
    fn new(p: &LinearParams, has_bias: bool) -> Self {
        Self {
            n: p.n as i32,
            in_f: p.in_f as i32,
            out_f: p.out_f as i32,
            has_bias: has_bias as i32,
        }
    }
}

kernels! {
    FWD: Linear = "linear_fwd";
    BWD: Linear = "linear_bwd_input";
}

pub fn forward(
    be: &CudaBackend,
    p: &LinearParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.n * p.out_f)?;
    let args = Linear::new(p, bias.is_some());
    let b = bias.unwrap_or(w);
    let warps = p.out_f * p.n.div_ceil(8);
    launch!(be, FWD, exact(warps * 32); &mut y, x, w, b; args);
    Ok(y)
}

pub fn backward_input(
    be: &CudaBackend,
    p: &LinearParams,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.n * p.in_f)?;
    let threads = p.in_f * p.n.div_ceil(8);
    launch!(be, BWD, exact(threads); &mut dx, dy, w; Linear::new(p, false));
    Ok(dx)
}
