//! ReLU, the per-channel affine map of eval-mode BatchNorm, and addition.

use super::activation::activation_in_place;
use super::pages::prefer_huge_pages;
use super::real::Real;
use super::simd;
use crate::ops::{ActivationParams, ChannelAffineParams};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// max(x, 0) with PyTorch's NaN rule (a NaN stays NaN), the activation table's ReLU row.
pub fn relu_forward<T: Real>(x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len());
    prefer_huge_pages(y);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = if v <= T::zero() { T::zero() } else { v };
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

/// y[n, c, i] = x[n, c, i]·scale\[c\] + shift\[c\].
pub fn channel_affine_forward<T: Real>(
    p: &ChannelAffineParams,
    x: &[T],
    scale: &[T],
    shift: &[T],
    y: &mut [T],
) {
    concat_affine_forward(p, &[(x, p.c)], scale, shift, None, y);
}

/// y[n, c, i] = act(x[n, c, i]·scale\[c\] + shift\[c\]) where x is the concatenation along
/// channels of `pieces` (each (data [N, C_k, hw], C_k), ΣC_k = p.c): DenseNet's cat →
/// BatchNorm → ReLU in one pass, reading each piece once and writing y once. Each plane is
/// the same arithmetic as [`channel_affine_forward`] then the activation's kernel, so the
/// results are bit-identical to the separate ops.
pub fn concat_affine_forward<T: Real>(
    p: &ChannelAffineParams,
    pieces: &[(&[T], usize)],
    scale: &[T],
    shift: &[T],
    act: Option<&ActivationParams>,
    y: &mut [T],
) {
    assert_eq!(pieces.iter().map(|&(_, c)| c).sum::<usize>(), p.c);
    assert!(pieces.iter().all(|&(x, c)| x.len() == p.n * c * p.hw));
    assert!(y.len() == p.len() && scale.len() == p.c && shift.len() == p.c);
    // (piece, its channel) of every channel of the concatenation.
    let source: Vec<(usize, usize)> = pieces
        .iter()
        .enumerate()
        .flat_map(|(k, &(_, c))| (0..c).map(move |j| (k, j)))
        .collect();
    prefer_huge_pages(y);
    // Planes are grouped so that tiny ones (7×7) still make jobs worth scheduling.
    let per_job = (CHUNK / p.hw.max(1)).max(1);
    y.par_chunks_mut(p.hw * per_job)
        .enumerate()
        .for_each(|(job, planes)| {
            for (i, yp) in planes.chunks_mut(p.hw).enumerate() {
                let i = job * per_job + i;
                let (img, c) = (i / p.c, i % p.c);
                let (k, j) = source[c];
                let (x, ck) = pieces[k];
                let xp = &x[(img * ck + j) * p.hw..][..p.hw];
                let (s, t) = (scale[c], shift[c]);
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for (o, &v) in yp.iter_mut().zip(xp) {
                            *o = v * s + t;
                        }
                    },
                );
                if let Some(a) = act {
                    activation_in_place(a, yp);
                }
            }
        });
}

/// dx[n, c, i] = dy[n, c, i]·scale\[c\].
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
