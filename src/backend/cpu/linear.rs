//! Fully connected layers.

use super::activation::activation_in_place;
use super::matmul::{matmul, Parallelism, View};
use super::pages::prefer_huge_pages;
use super::real::Real;
use crate::ops::{ActivationParams, LinearParams};
use rayon::prelude::*;

/// Rows per task of a long product (ConvNeXt's channels-last Linear has N·H·W rows): each
/// task fills its rows' bias, runs its own single-threaded product and applies the
/// activation while its block of y is in cache.
const ROWS: usize = 256;

/// y = x·Wᵀ + b. x: [N, in], w: [out, in], b: \[out\], y: [N, out].
pub fn linear_forward<T: Real>(p: &LinearParams, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    linear_forward_fused(p, x, w, b, None, y);
}

/// y = act(x·Wᵀ + b), the same products as [`linear_forward`] and the activation's kernel on
/// them. With N ≥ 2·ROWS the rows are split in fixed blocks of ROWS (so the result does not
/// depend on the thread count); below that, one product parallel inside, then the activation.
pub fn linear_forward_fused<T: Real>(
    p: &LinearParams,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    act: Option<&ActivationParams>,
    y: &mut [T],
) {
    assert_eq!(x.len(), p.n * p.in_f);
    assert_eq!(w.len(), p.out_f * p.in_f);
    assert_eq!(y.len(), p.n * p.out_f);
    let block = |y: &mut [T], x: &[T], par: Parallelism| {
        let rows = y.len() / p.out_f.max(1);
        match b {
            Some(b) => y.chunks_mut(p.out_f).for_each(|row| row.copy_from_slice(b)),
            None => y.fill(T::zero()),
        }
        matmul(
            y,
            (rows, p.out_f, p.in_f),
            View::row_major(x, p.in_f),
            View::transposed(w, p.in_f),
            true,
            par,
        );
    };
    if p.n >= 2 * ROWS && p.out_f > 0 && p.in_f > 0 {
        prefer_huge_pages(y);
        y.par_chunks_mut(ROWS * p.out_f)
            .zip(x.par_chunks(ROWS * p.in_f))
            .for_each(|(yb, xb)| {
                block(yb, xb, Parallelism::None);
                if let Some(a) = act {
                    activation_in_place(a, yb);
                }
            });
    } else {
        block(y, x, Parallelism::Rayon(0));
        if let Some(a) = act {
            y.par_chunks_mut(ROWS * p.out_f.max(1))
                .for_each(|yb| activation_in_place(a, yb));
        }
    }
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
