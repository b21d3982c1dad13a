//! PLACEHOLDER until the cpu-kernels branch merges: plain two-pass loops.
use super::real::Real;
use crate::ops::*;
fn at(p: &LayerNormParams, o: usize, d: usize, i: usize) -> usize {
    (o * p.dim + d) * p.inner + i
}
fn stats<T: Real>(p: &LayerNormParams, x: &[T], o: usize, i: usize) -> (T, T) {
    let n = T::of(p.dim as f64);
    let mean = (0..p.dim).map(|d| x[at(p, o, d, i)]).sum::<T>() / n;
    let var = (0..p.dim)
        .map(|d| {
            let v = x[at(p, o, d, i)] - mean;
            v * v
        })
        .sum::<T>()
        / n;
    (mean, T::one() / (var + T::of(p.eps as f64)).sqrt())
}
pub fn layer_norm_forward<T: Real>(p: &LayerNormParams, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    for o in 0..p.outer {
        for i in 0..p.inner {
            let (m, r) = stats(p, x, o, i);
            for d in 0..p.dim {
                let k = at(p, o, d, i);
                y[k] = (x[k] - m) * r * w[d] + b[d];
            }
        }
    }
}
pub fn layer_norm_backward_input<T: Real>(
    p: &LayerNormParams,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
) {
    let n = T::of(p.dim as f64);
    for o in 0..p.outer {
        for i in 0..p.inner {
            let (m, r) = stats(p, x, o, i);
            let (mut s1, mut s2) = (T::zero(), T::zero());
            for d in 0..p.dim {
                let k = at(p, o, d, i);
                let g = dy[k] * w[d];
                let xh = (x[k] - m) * r;
                s1 += g;
                s2 += g * xh;
            }
            for d in 0..p.dim {
                let k = at(p, o, d, i);
                let g = dy[k] * w[d];
                let xh = (x[k] - m) * r;
                dx[k] = r * (g - s1 / n - xh * s2 / n);
            }
        }
    }
}
