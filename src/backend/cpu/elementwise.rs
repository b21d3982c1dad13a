//! ReLU, the per-channel affine map of eval-mode BatchNorm, and addition.

use super::pages::prefer_huge_pages;
use super::real::Real;
use crate::ops::ChannelAffineParams;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn relu_forward<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    prefer_huge_pages(y);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = if v > T::zero() { v } else { T::zero() };
            }
        });
}

/// dx = dy where the ReLU's output is positive, else 0 (PyTorch's threshold_backward).
pub fn relu_backward_input<T: Real>(y: &[T], dy: &[T], dx: &mut [T]) {
    assert!(y.len() == dy.len() && dy.len() == dx.len());
    prefer_huge_pages(dx);
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK))
        .zip(y.par_chunks(CHUNK))
        .for_each(|((o, g), yc)| {
            for ((o, &g), &v) in o.iter_mut().zip(g).zip(yc) {
                *o = if v > T::zero() { g } else { T::zero() };
            }
        });
}

/// y[n, c, i] = x[n, c, i]·scale[c] + shift[c].
pub fn channel_affine_forward<T: Real>(
    p: &ChannelAffineParams,
    x: &[T],
    scale: &[T],
    shift: &[T],
    y: &mut [T],
) {
    assert!(x.len() == p.len() && y.len() == p.len());
    assert!(scale.len() == p.c && shift.len() == p.c);
    prefer_huge_pages(y);
    y.par_chunks_mut(p.hw)
        .zip(x.par_chunks(p.hw))
        .enumerate()
        .for_each(|(i, (yp, xp))| {
            let (s, t) = (scale[i % p.c], shift[i % p.c]);
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * s + t;
            }
        });
}

/// dx[n, c, i] = dy[n, c, i]·scale[c].
pub fn channel_affine_backward_input<T: Real>(
    p: &ChannelAffineParams,
    dy: &[T],
    scale: &[T],
    dx: &mut [T],
) {
    assert!(dy.len() == p.len() && dx.len() == p.len() && scale.len() == p.c);
    prefer_huge_pages(dx);
    dx.par_chunks_mut(p.hw)
        .zip(dy.par_chunks(p.hw))
        .enumerate()
        .for_each(|(i, (o, g))| {
            let s = scale[i % p.c];
            for (o, &g) in o.iter_mut().zip(g) {
                *o = g * s;
            }
        });
}

pub fn add<T: Real>(a: &[T], b: &[T], y: &mut [T]) {
    assert!(a.len() == b.len() && b.len() == y.len());
    prefer_huge_pages(y);
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(yc, (ac, bc))| {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = u + v;
            }
        });
}
