//! Launches of kernels/elementwise.cu: ReLU, the per-channel affine map (eval BatchNorm),
//! addition, and the fill that poisons outputs.

use super::args::{kernel_args, kernels};
use super::{backend_error, flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::ChannelAffineParams;
use cudarc::driver::CudaSlice;

kernel_args! {
    /// `struct Elementwise` of kernels/elementwise.cu (shaders/elementwise.wgsl's): len
    /// elements; c channels of hw elements each (affine map only); value (fill only).
    struct Elementwise {
        len: i64,
        hw: i64,
        c: i32,
        value: f32,
    }
}

impl Elementwise {
    /// `len` elements, one plane of one channel.
    fn len(len: usize) -> Self {
        Self {
            len: len as i64,
            hw: 1,
            c: 1,
            value: 0.0,
        }
    }

    fn affine(p: &ChannelAffineParams) -> Self {
        Self {
            len: p.len() as i64,
            hw: p.hw as i64,
            c: p.c as i32,
            value: 0.0,
        }
    }
}

kernels! {
    RELU_FWD: Elementwise = "relu_fwd";
    RELU_BWD: Elementwise = "relu_bwd_input";
    AFFINE_FWD: Elementwise = "channel_affine_fwd";
    AFFINE_BWD: Elementwise = "channel_affine_bwd_input";
    ADD: Elementwise = "add";
    FILL: Elementwise = "fill";
}

/// Sets all of `y` to `value`. Not timed: it poisons outputs for tests, it is not the work.
pub(super) fn fill(be: &CudaBackend, y: &mut CudaSlice<f32>, value: f32) -> Result<()> {
    use cudarc::driver::PushKernelArg as _;
    let len = y.len();
    let args = FILL.args(Elementwise {
        value,
        ..Elementwise::len(len)
    });
    let mut b = be.stream.launch_builder(be.func(FILL.name));
    b.arg(y).arg(&args);
    // SAFETY: fill(y: [len], Elementwise) is the kernel's signature.
    unsafe { b.launch(flat(len)) }.map_err(|e| backend_error(format!("fill: {e}")))?;
    Ok(())
}

pub fn relu(be: &CudaBackend, x: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
    let mut y = be.out(len)?;
    launch!(be, RELU_FWD, flat(len); &mut y, x; Elementwise::len(len));
    Ok(y)
}

pub fn relu_backward(
    be: &CudaBackend,
    y: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    len: usize,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(len)?;
    launch!(be, RELU_BWD, flat(len); &mut dx, y, dy; Elementwise::len(len));
    Ok(dx)
}

pub fn add(
    be: &CudaBackend,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    len: usize,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(len)?;
    launch!(be, ADD, flat(len); &mut y, a, b; Elementwise::len(len));
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
    launch!(be, AFFINE_FWD, flat(p.len()); &mut y, x, scale, shift; Elementwise::affine(p));
    Ok(y)
}

pub fn affine_backward(
    be: &CudaBackend,
    p: &ChannelAffineParams,
    dy: &CudaSlice<f32>,
    scale: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.len())?;
    launch!(be, AFFINE_BWD, flat(p.len()); &mut dx, dy, scale; Elementwise::affine(p));
    Ok(dx)
}
