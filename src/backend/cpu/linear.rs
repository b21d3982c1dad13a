//! Fully connected layers.

use super::matmul::{matmul, Parallelism, View};
use super::real::Real;
use crate::ops::LinearParams;

/// y = x·Wᵀ + b. x: [N, in], w: [out, in], b: [out], y: [N, out].
pub fn linear_forward<T: Real>(p: &LinearParams, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    assert_eq!(x.len(), p.n * p.in_f);
    assert_eq!(w.len(), p.out_f * p.in_f);
    assert_eq!(y.len(), p.n * p.out_f);
    match b {
        Some(b) => y.chunks_mut(p.out_f).for_each(|row| row.copy_from_slice(b)),
        None => y.fill(T::zero()),
    }
    matmul(
        y,
        (p.n, p.out_f, p.in_f),
        View::row_major(x, p.in_f),
        View::transposed(w, p.in_f),
        true,
        Parallelism::Rayon(0),
    );
}

/// dx = dy·W. dy: [N, out], w: [out, in], dx: [N, in].
pub fn linear_backward_input<T: Real>(p: &LinearParams, dy: &[T], w: &[T], dx: &mut [T]) {
    assert_eq!(dy.len(), p.n * p.out_f);
    assert_eq!(w.len(), p.out_f * p.in_f);
    assert_eq!(dx.len(), p.n * p.in_f);
    matmul(
        dx,
        (p.n, p.in_f, p.out_f),
        View::row_major(dy, p.out_f),
        View::row_major(w, p.in_f),
        false,
        Parallelism::Rayon(0),
    );
}
