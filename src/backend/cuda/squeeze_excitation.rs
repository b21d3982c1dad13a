//! Launches of kernels/squeeze_excitation.cu: a squeeze-excitation block as two launches, the
//! gates (means, fc1, activation, fc2, gate; one block per image) and binary.cu's broadcast
//! multiply.

use super::args::{kernel_args, kernels};
use super::{binary, launch, CudaBackend, THREADS};
use crate::error::Result;
use crate::ops::SqueezeExciteParams;
use cudarc::driver::{CudaSlice, LaunchConfig};

kernel_args! {
    /// `struct SqueezeExcite` of kernels/squeeze_excitation.cu (shaders/squeeze_excitation.wgsl's,
    /// less n: one block per image): x is [n, c, hw]; squeeze hidden units; lanes threads per
    /// channel in the means; act and gate, rows of Activation::ALL with their alpha and beta.
    struct SqueezeExcite {
        c: i32,
        hw: i32,
        squeeze: i32,
        lanes: i32,
        act: u32,
        act_alpha: f32,
        act_beta: f32,
        gate: u32,
        gate_alpha: f32,
        gate_beta: f32,
    }
}

kernels! {
    GATES: SqueezeExcite = "squeeze_excite_gates";
}

pub fn forward(
    be: &CudaBackend,
    p: &SqueezeExciteParams,
    x: &CudaSlice<f32>,
    (w1, b1): (&CudaSlice<f32>, &CudaSlice<f32>),
    (w2, b2): (&CudaSlice<f32>, &CudaSlice<f32>),
) -> Result<CudaSlice<f32>> {
    let mut gates = be.out(p.n * p.c)?;
    let mut hidden = be.out(p.n * p.squeeze)?;
    let (a, g) = (&p.act, &p.gate);
    let args = SqueezeExcite {
        c: p.c as i32,
        hw: (p.h * p.w) as i32,
        squeeze: p.squeeze as i32,
        lanes: p.lanes_per_channel(THREADS as usize) as i32,
        act: a.act.index() as u32,
        act_alpha: a.alpha,
        act_beta: a.beta,
        gate: g.act.index() as u32,
        gate_alpha: g.alpha,
        gate_beta: g.beta,
    };
    let cfg = LaunchConfig {
        grid_dim: (p.n as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(be, GATES, cfg; &mut gates, &mut hidden, x, w1, b1, w2, b2; args);
    binary::forward(be, &p.scale(), &gates, x)
}
