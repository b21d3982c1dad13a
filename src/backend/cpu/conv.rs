//! conv2d forward and input gradient as im2col / col2im around one matrix product per image.

use super::matmul::{inner_parallelism, matmul, split_batch, View};
use super::real::Real;
use crate::ops::Conv2dParams;
use rayon::prelude::*;

/// y = conv(x, w) + b. x: [N, Cin, H, W], w: [Cout, Cin, kh, kw], b: [Cout], y: [N, Cout, Ho, Wo].
pub fn conv2d_forward<T: Real>(p: &Conv2dParams, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(y.len(), p.output_len());
    let pix = p.h_out() * p.w_out();
    let in_img = p.c_in * p.h_in * p.w_in;
    let out_img = p.c_out * pix;
    let batch_parallel = split_batch(p.n);
    let run = |xi: &[T], yi: &mut [T]| {
        match b {
            Some(b) => yi
                .chunks_mut(pix)
                .zip(b)
                .for_each(|(row, &bv)| row.fill(bv)),
            None => yi.fill(T::zero()),
        }
        let par = inner_parallelism(batch_parallel);
        let dims = (p.c_out, pix, p.k_len());
        let wv = View::row_major(w, p.k_len());
        if p.is_pointwise() {
            matmul(yi, dims, wv, View::row_major(xi, pix), true, par);
        } else {
            let mut col = vec![T::zero(); p.k_len() * pix];
            im2col(p, xi, &mut col);
            matmul(yi, dims, wv, View::row_major(&col, pix), true, par);
        }
    };
    if batch_parallel {
        y.par_chunks_mut(out_img)
            .zip(x.par_chunks(in_img))
            .for_each(|(yi, xi)| run(xi, yi));
    } else {
        y.chunks_mut(out_img)
            .zip(x.chunks(in_img))
            .for_each(|(yi, xi)| run(xi, yi));
    }
}

/// dx = conv_transpose(dy, w): the gradient of conv2d with respect to its input.
/// dy: [N, Cout, Ho, Wo], w: [Cout, Cin, kh, kw], dx: [N, Cin, H, W].
pub fn conv2d_backward_input<T: Real>(p: &Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(dx.len(), p.input_len());
    let pix = p.h_out() * p.w_out();
    let in_img = p.c_in * p.h_in * p.w_in;
    let out_img = p.c_out * pix;
    let batch_parallel = split_batch(p.n);
    let run = |dyi: &[T], dxi: &mut [T]| {
        let par = inner_parallelism(batch_parallel);
        let dims = (p.k_len(), pix, p.c_out);
        let wt = View::transposed(w, p.k_len());
        if p.is_pointwise() {
            matmul(dxi, dims, wt, View::row_major(dyi, pix), false, par);
        } else {
            let mut col = vec![T::zero(); p.k_len() * pix];
            matmul(&mut col, dims, wt, View::row_major(dyi, pix), false, par);
            col2im(p, &col, dxi);
        }
    };
    if batch_parallel {
        dx.par_chunks_mut(in_img)
            .zip(dy.par_chunks(out_img))
            .for_each(|(dxi, dyi)| run(dyi, dxi));
    } else {
        dx.chunks_mut(in_img)
            .zip(dy.chunks(out_img))
            .for_each(|(dxi, dyi)| run(dyi, dxi));
    }
}

/// Input row (or column) read by output position `o` at kernel offset `k`, if inside the image.
#[inline]
fn source(o: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < len)
}

/// col[(ci·kh + ky)·kw + kx][oy·Wo + ox] = x[ci][oy·s + ky - pad][ox·s + kx - pad] (0 outside).
fn im2col<T: Real>(p: &Conv2dParams, x: &[T], col: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
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

/// The adjoint of im2col: dx[ci][iy][ix] = Σ of the col entries that read it, summed in a fixed
/// order so results are deterministic.
fn col2im<T: Real>(p: &Conv2dParams, col: &[T], dx: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
    dx.fill(T::zero());
    let mut rows = col.chunks(ho * wo);
    for ci in 0..p.c_in {
        let plane = &mut dx[ci * p.h_in * p.w_in..(ci + 1) * p.h_in * p.w_in];
        for ky in 0..p.k_h {
            for kx in 0..p.k_w {
                let row = rows.next().expect("col2im row");
                for oy in 0..ho {
                    let Some(iy) = source(oy, ky, p.stride_h, p.pad_h, p.h_in) else {
                        continue;
                    };
                    let line = &mut plane[iy * p.w_in..(iy + 1) * p.w_in];
                    for (ox, &v) in row[oy * wo..(oy + 1) * wo].iter().enumerate() {
                        if let Some(ix) = source(ox, kx, p.stride_w, p.pad_w, p.w_in) {
                            line[ix] += v;
                        }
                    }
                }
            }
        }
    }
}
