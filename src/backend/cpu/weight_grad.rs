//! Weight and bias gradients of conv2d and linear layers, for training. The Grad-CAM engine
//! never needs them (it computes input gradients only); the training executor in `crate::train`
//! does. Each image's contribution is accumulated in image order, so results are deterministic.

use super::matmul::{matmul, Parallelism, View};
use super::real::Real;
use crate::ops::{Conv2dParams, LinearParams};
use rayon::prelude::*;

/// Images per partial sum of a weight gradient: the batch is cut into at most this many
/// groups, fixed by the batch size alone, so the summation order (and so the result, to the
/// last bit) does not depend on the number of threads.
const GROUPS: usize = 8;

/// dw = Σ_n dy_n · im2col(x_n)ᵀ. x: [N, Cin, H, W], dy: [N, Cout, Ho, Wo],
/// dw: [Cout, Cin, kh, kw] (overwritten). Groups of images are summed in parallel, then the
/// group sums are added in order.
pub fn conv2d_backward_weight<T: Real>(p: &Conv2dParams, x: &[T], dy: &[T], dw: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(dw.len(), p.weight_len());
    let pix = p.h_out() * p.w_out();
    let in_img = p.c_in * p.h_in * p.w_in;
    let out_img = p.c_out * pix;
    let per_group = p.n.div_ceil(GROUPS).max(1);
    let partials: Vec<Vec<T>> = x
        .par_chunks(in_img * per_group)
        .zip(dy.par_chunks(out_img * per_group))
        .map(|(xg, dyg)| {
            let mut acc = vec![T::zero(); p.weight_len()];
            let mut col = if p.is_pointwise() {
                Vec::new()
            } else {
                vec![T::zero(); p.k_len() * pix]
            };
            for (xi, dyi) in xg.chunks(in_img).zip(dyg.chunks(out_img)) {
                let cols: &[T] = if p.is_pointwise() {
                    xi
                } else {
                    im2col(p, xi, &mut col);
                    &col
                };
                matmul(
                    &mut acc,
                    (p.c_out, p.k_len(), pix),
                    View::row_major(dyi, pix),
                    View::transposed(cols, pix),
                    true,
                    Parallelism::None,
                );
            }
            acc
        })
        .collect();
    dw.fill(T::zero());
    for part in partials {
        for (d, v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
}

/// db\[co\] = Σ_n Σ_pixels dy[n, co, pixel]. dy: [N, Cout, Ho, Wo], db: \[Cout\] (overwritten).
pub fn conv2d_backward_bias<T: Real>(p: &Conv2dParams, dy: &[T], db: &mut [T]) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(db.len(), p.c_out);
    let pix = p.h_out() * p.w_out();
    db.fill(T::zero());
    for (i, plane) in dy.chunks(pix).enumerate() {
        db[i % p.c_out] += plane.iter().copied().sum::<T>();
    }
}

/// dw = dyᵀ·x. x: [N, in], dy: [N, out], dw: [out, in] (overwritten).
pub fn linear_backward_weight<T: Real>(p: &LinearParams, x: &[T], dy: &[T], dw: &mut [T]) {
    assert_eq!(x.len(), p.n * p.in_f);
    assert_eq!(dy.len(), p.n * p.out_f);
    assert_eq!(dw.len(), p.out_f * p.in_f);
    matmul(
        dw,
        (p.out_f, p.in_f, p.n),
        View::transposed(dy, p.out_f),
        View::row_major(x, p.in_f),
        false,
        Parallelism::Rayon(0),
    );
}

/// db = Σ_n dy\[n\]. dy: [N, out], db: \[out\] (overwritten).
pub fn linear_backward_bias<T: Real>(p: &LinearParams, dy: &[T], db: &mut [T]) {
    assert_eq!(dy.len(), p.n * p.out_f);
    assert_eq!(db.len(), p.out_f);
    db.fill(T::zero());
    for row in dy.chunks(p.out_f) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// col[(ci·kh + ky)·kw + kx][oy·Wo + ox] = x[ci][oy·s + ky - pad][ox·s + kx - pad] (0 outside).
/// A private copy of conv.rs's im2col: that file is being optimized independently, and the
/// weight gradient must not depend on its internal layout choices.
fn im2col<T: Real>(p: &Conv2dParams, x: &[T], col: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let source = |o: usize, k: usize, stride: usize, pad: usize, len: usize| {
        (o * stride + k).checked_sub(pad).filter(|&i| i < len)
    };
    let mut rows = col.chunks_mut(ho * wo);
    for ci in 0..p.c_in {
        let plane = &x[ci * p.h_in * p.w_in..(ci + 1) * p.h_in * p.w_in];
        for ky in 0..p.k_h {
            for kx in 0..p.k_w {
                let row = rows.next().expect("im2col row");
                for oy in 0..ho {
                    let out = &mut row[oy * wo..(oy + 1) * wo];
                    let Some(iy) = source(oy, ky, p.stride_h, p.pad_h, p.h_in) else {
                        out.fill(T::zero());
                        continue;
                    };
                    let line = &plane[iy * p.w_in..(iy + 1) * p.w_in];
                    for (ox, v) in out.iter_mut().enumerate() {
                        *v = match source(ox, kx, p.stride_w, p.pad_w, p.w_in) {
                            Some(ix) => line[ix],
                            None => T::zero(),
                        };
                    }
                }
            }
        }
    }
}
