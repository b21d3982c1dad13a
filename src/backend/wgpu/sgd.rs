//! Glue for shaders/sgd.wgsl: the SGD update of one parameter tensor, in place.

use super::kernels::{kernel, Kernel, Shader::Sgd};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::SgdParams;

const STEP: Kernel = kernel(Sgd, "sgd_step");

pub fn step(
    be: &WgpuBackend,
    s: &SgdParams,
    w: &mut GpuBuffer,
    grad: &GpuBuffer,
    velocity: &mut Option<GpuBuffer>,
    len: usize,
) -> Result<()> {
    be.need(w, len, "sgd weight")?;
    be.need(grad, len, "sgd gradient")?;
    let momentum = s.momentum != 0.0;
    let first = momentum && velocity.is_none();
    if first {
        // Written (buf = g) before it is read.
        *velocity = Some(be.output(len)?);
    }
    let v = match velocity {
        Some(v) if momentum => {
            be.need(v, len, "sgd momentum buffer")?;
            v.raw()
        }
        _ => &be.dummy,
    };
    let flags = u32::from(s.weight_decay != 0.0) | u32::from(momentum) << 1 | u32::from(first) << 2;
    let words = [
        u(len),
        flags,
        (s.lr as f32).to_bits(),
        (s.momentum as f32).to_bits(),
        (s.weight_decay as f32).to_bits(),
    ];
    be.run(
        STEP,
        &words,
        &[grad.raw(), w.raw(), v],
        groups_1d(len, 256)?,
    )
}
