//! Launches of kernels/squeeze_excitation.cu: a squeeze-excitation block as two launches, the
//! gates (means, fc1, activation, fc2, gate; one block per image) and binary.cu's broadcast
//! multiply.

use super::{binary, launch_positional, CudaBackend, THREADS};
use crate::error::Result;
use crate::ops::SqueezeExciteParams;
use cudarc::driver::{CudaSlice, LaunchConfig};

pub fn forward(
    be: &CudaBackend,
    p: &SqueezeExciteParams,
    x: &CudaSlice<f32>,
    (w1, b1): (&CudaSlice<f32>, &CudaSlice<f32>),
    (w2, b2): (&CudaSlice<f32>, &CudaSlice<f32>),
) -> Result<CudaSlice<f32>> {
    let mut gates = be.out(p.n * p.c)?;
    let mut hidden = be.out(p.n * p.squeeze)?;
    let [c, hw, squeeze] = [p.c, p.h * p.w, p.squeeze].map(|v| v as i32);
    let lanes = p.lanes_per_channel(THREADS as usize) as i32;
    let (a, g) = (&p.act, &p.gate);
    let ids = [a.act.index() as u32, g.act.index() as u32];
    let cfg = LaunchConfig {
        grid_dim: (p.n as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_positional!(be, "squeeze_excite_gates", cfg; &mut gates, &mut hidden, x, w1, b1, w2, b2,
        &c, &hw, &squeeze, &lanes, &ids[0], &a.alpha, &a.beta, &ids[1], &g.alpha, &g.beta);
    binary::forward(be, &p.scale(), &gates, x)
}
