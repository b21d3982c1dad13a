//! Max pooling (with argmax for the backward pass) and adaptive average pooling.

use super::real::Real;
use crate::ops::{adaptive_window, AdaptiveAvgPool2dParams, MaxPool2dParams};
use rayon::prelude::*;

/// y = max over each window; argmax = flat in-plane index of the first maximum in row-major
/// window order (PyTorch's tie rule). x: [N, C, H, W], y and argmax: [N, C, Ho, Wo].
pub fn max_pool2d_forward<T: Real>(p: &MaxPool2dParams, x: &[T], y: &mut [T], argmax: &mut [u32]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    let (ho, wo) = (p.h_out(), p.w_out());
    let plane_in = p.h_in * p.w_in;
    y.par_chunks_mut(ho * wo)
        .zip(argmax.par_chunks_mut(ho * wo))
        .zip(x.par_chunks(plane_in))
        .for_each(|((yp, ap), xp)| {
            for oy in 0..ho {
                let y0 = (oy * p.stride_h) as isize - p.pad_h as isize;
                for ox in 0..wo {
                    let x0 = (ox * p.stride_w) as isize - p.pad_w as isize;
                    let mut best = T::neg_infinity();
                    let mut best_i = u32::MAX;
                    for ky in 0..p.k_h as isize {
                        let iy = y0 + ky;
                        if iy < 0 || iy >= p.h_in as isize {
                            continue;
                        }
                        for kx in 0..p.k_w as isize {
                            let ix = x0 + kx;
                            if ix < 0 || ix >= p.w_in as isize {
                                continue;
                            }
                            let i = iy as usize * p.w_in + ix as usize;
                            let v = xp[i];
                            if best_i == u32::MAX || v > best || v.is_nan() && !best.is_nan() {
                                best = v;
                                best_i = i as u32;
                            }
                        }
                    }
                    yp[oy * wo + ox] = best;
                    ap[oy * wo + ox] = best_i;
                }
            }
        });
}

/// dx[argmax[o]] += dy[o]; every input element not chosen by a window gets 0.
pub fn max_pool2d_backward_input<T: Real>(
    p: &MaxPool2dParams,
    argmax: &[u32],
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    assert_eq!(dx.len(), p.input_len());
    let plane_out = p.h_out() * p.w_out();
    dx.par_chunks_mut(p.h_in * p.w_in)
        .zip(dy.par_chunks(plane_out))
        .zip(argmax.par_chunks(plane_out))
        .for_each(|((dxp, dyp), ap)| {
            dxp.fill(T::zero());
            for (&g, &i) in dyp.iter().zip(ap) {
                dxp[i as usize] += g;
            }
        });
}

pub fn adaptive_avg_pool2d_forward<T: Real>(p: &AdaptiveAvgPool2dParams, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    y.par_chunks_mut(p.h_out * p.w_out)
        .zip(x.par_chunks(p.h_in * p.w_in))
        .for_each(|(yp, xp)| {
            for oy in 0..p.h_out {
                let (y0, y1) = adaptive_window(oy, p.h_in, p.h_out);
                for ox in 0..p.w_out {
                    let (x0, x1) = adaptive_window(ox, p.w_in, p.w_out);
                    let mut s = T::zero();
                    for iy in y0..y1 {
                        for v in &xp[iy * p.w_in + x0..iy * p.w_in + x1] {
                            s += *v;
                        }
                    }
                    yp[oy * p.w_out + ox] = s / T::of(((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        });
}

/// Each input element gathers dy/count from every window that covers it (windows overlap when
/// the output is larger than the input).
pub fn adaptive_avg_pool2d_backward_input<T: Real>(
    p: &AdaptiveAvgPool2dParams,
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(dx.len(), p.input_len());
    dx.par_chunks_mut(p.h_in * p.w_in)
        .zip(dy.par_chunks(p.h_out * p.w_out))
        .for_each(|(dxp, dyp)| {
            dxp.fill(T::zero());
            for oy in 0..p.h_out {
                let (y0, y1) = adaptive_window(oy, p.h_in, p.h_out);
                for ox in 0..p.w_out {
                    let (x0, x1) = adaptive_window(ox, p.w_in, p.w_out);
                    let g = dyp[oy * p.w_out + ox] / T::of(((y1 - y0) * (x1 - x0)) as f64);
                    for iy in y0..y1 {
                        for v in &mut dxp[iy * p.w_in + x0..iy * p.w_in + x1] {
                            *v += g;
                        }
                    }
                }
            }
        });
}
