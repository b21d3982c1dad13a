//! Launches of kernels/activation.cu: every row of the activation table, forward and input
//! gradient.

use super::args::{kernel_args, kernels};
use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::ActivationParams;
use cudarc::driver::CudaSlice;

kernel_args! {
    /// `struct Act` of kernels/activation.cu (shaders/activation.wgsl's): len elements; id,
    /// the row's index in Activation::ALL; alpha and beta, its parameters.
    struct Act {
        len: i64,
        id: u32,
        alpha: f32,
        beta: f32,
        _pad: i32,
    }
}

impl Act {
    fn new(p: &ActivationParams) -> Self {
        Self {
            len: p.len as i64,
            id: p.act.index() as u32,
            alpha: p.alpha,
            beta: p.beta,
            _pad: 0,
        }
    }
}

kernels! {
    FWD: Act = "activation_fwd";
    BWD: Act = "activation_bwd_input";
}

pub fn forward(
    be: &CudaBackend,
    p: &ActivationParams,
    x: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len)?;
    launch!(be, FWD, flat(p.len), || format!("activation_fwd {}", p.act.name());
        &mut y, x; Act::new(p));
    Ok(y)
}

pub fn backward(
    be: &CudaBackend,
    p: &ActivationParams,
    saved: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.len)?;
    launch!(be, BWD, flat(p.len), || format!("activation_bwd_input {}", p.act.name());
        &mut dx, saved, dy; Act::new(p));
    Ok(dx)
}
