//! Glue for shaders/squeeze_excitation.wgsl: a squeeze-excitation block as two dispatches, the
//! gates (means, fc1, activation, fc2, gate; one workgroup per image) and the broadcast
//! multiply of binary.wgsl.

use super::kernels::{kernel, Kernel, Shader::SqueezeExcitation};
use super::{binary, groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::{ActivationParams, SqueezeExciteParams};

const GATES: Kernel = kernel(SqueezeExcitation, "squeeze_excite_gates");

/// An activation's uniform words: row index, alpha bits, beta bits.
fn act_words(a: &ActivationParams) -> [u32; 3] {
    [u(a.act.index()), a.alpha.to_bits(), a.beta.to_bits()]
}

pub fn forward(
    be: &WgpuBackend,
    p: &SqueezeExciteParams,
    x: &GpuBuffer,
    (w1, b1): (&GpuBuffer, &GpuBuffer),
    (w2, b2): (&GpuBuffer, &GpuBuffer),
) -> Result<GpuBuffer> {
    let (c, s) = (p.c, p.squeeze);
    be.need(x, p.len(), "squeeze-excitation input")?;
    be.need(w1, s * c, "squeeze-excitation fc1 weight")?;
    be.need(b1, s, "squeeze-excitation fc1 bias")?;
    be.need(w2, c * s, "squeeze-excitation fc2 weight")?;
    be.need(b2, c, "squeeze-excitation fc2 bias")?;
    let hidden = be.output(p.n * s)?;
    let gates = be.output(p.n * c)?;
    let mut prm = vec![
        u(p.n),
        u(c),
        u(p.h * p.w),
        u(s),
        u(p.lanes_per_channel(256)),
    ];
    prm.extend(act_words(&p.act));
    prm.extend(act_words(&p.gate));
    prm.push(0);
    let bufs = [x, w1, b1, w2, b2, &hidden, &gates].map(|b| b.raw());
    be.run(GATES, &prm, &bufs, groups_1d(p.n, 1)?)?;
    binary::forward(be, &p.scale(), &gates, x)
}
