//! A squeeze-excitation block in any precision, composed of the CPU's kernels: the f64 oracle of
//! the GPU backends' fused kernels (tests/backends.rs, the selftest). The CPU backend itself
//! runs the block as its separate ops (the trait default), so a fused and an unfused CPU run
//! agree to the bit.

use super::activation::activation_forward;
use super::binary::binary_forward;
use super::pool::adaptive_avg_pool2d_forward;
use super::real::Real;
use crate::ops::{ActivationParams, SqueezeExciteParams};

/// y = x · gate(fc2(act(fc1(mean_hw(x))))). x, y: [n, c, h, w]; w1: [squeeze, c], b1:
/// \[squeeze\]; w2: [c, squeeze], b2: \[c\].
pub fn squeeze_excitation_forward<T: Real>(
    p: &SqueezeExciteParams,
    x: &[T],
    (w1, b1): (&[T], &[T]),
    (w2, b2): (&[T], &[T]),
    y: &mut [T],
) {
    let mut means = vec![T::zero(); p.n * p.c];
    adaptive_avg_pool2d_forward(&p.pool(), x, &mut means);
    let hidden = dense(&means, w1, b1, p.c, &p.act);
    let gates = dense(&hidden, w2, b2, p.squeeze, &p.gate);
    binary_forward(&p.scale(), &gates, x, y);
}

/// act(rows · wᵀ + b) for rows of `k` values, w: [out, k].
fn dense<T: Real>(rows: &[T], w: &[T], b: &[T], k: usize, act: &ActivationParams) -> Vec<T> {
    let out: Vec<T> = rows
        .chunks(k)
        .flat_map(|r| {
            w.chunks(k)
                .zip(b)
                .map(move |(wr, &bias)| wr.iter().zip(r).fold(bias, |s, (&a, &v)| s + a * v))
        })
        .collect();
    let mut y = vec![T::zero(); out.len()];
    activation_forward(act, &out, &mut y);
    y
}
