//! Max pooling (with argmax for the backward pass), average pooling, and adaptive average and
//! max pooling.

use super::pages::prefer_huge_pages;
use super::real::Real;
use super::simd;
use crate::ops::{
    adaptive_window, AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams, PoolParams, PoolWindow,
};
use rayon::prelude::*;
use std::ops::Range;

/// The pooling family's forward, on f32 (the backend) or f64 (the checks' reference): y, and
/// the argmax into `argmax` where given; an op that keeps one computes it anyway when not.
pub fn forward<T: Real>(p: &PoolParams, x: &[T], y: &mut [T], argmax: Option<&mut [u32]>) {
    match (p, argmax) {
        (PoolParams::Max(q), Some(a)) => max_pool2d_forward(q, x, y, a),
        (PoolParams::Max(q), None) => max_pool2d_forward_values(q, x, y),
        (PoolParams::Avg(q), _) => avg_pool2d_forward(q, x, y),
        (PoolParams::AdaptiveAvg(q), _) => adaptive_avg_pool2d_forward(q, x, y),
        (PoolParams::AdaptiveMax(q), Some(a)) => adaptive_max_pool2d_forward(q, x, y, a),
        (PoolParams::AdaptiveMax(q), None) => {
            adaptive_max_pool2d_forward(q, x, y, &mut vec![0; q.output_len()])
        }
    }
}

/// The pooling family's input gradient: dx from dy, and the forward's argmax for the ops that
/// keep one (the caller checks that it has it: [`PoolParams::keeps_argmax`]).
pub fn backward_input<T: Real>(p: &PoolParams, argmax: Option<&[u32]>, dy: &[T], dx: &mut [T]) {
    let argmax = || argmax.expect("the caller checks PoolParams::keeps_argmax");
    match p {
        PoolParams::Max(q) => max_pool2d_backward_input(q, argmax(), dy, dx),
        PoolParams::Avg(q) => avg_pool2d_backward_input(q, dy, dx),
        PoolParams::AdaptiveAvg(q) => adaptive_avg_pool2d_backward_input(q, dy, dx),
        PoolParams::AdaptiveMax(q) => adaptive_max_pool2d_backward_input(q, argmax(), dy, dx),
    }
}

/// y = max over each window; argmax = flat in-plane index of the first maximum in row-major
/// window order (PyTorch's tie rule; a NaN wins over everything and the first NaN is kept).
/// x: [N, C, H, W], y and argmax: [N, C, Ho, Wo].
///
/// Windows that lie wholly inside the input (all but a border of the output, all of it without
/// padding) take a branch-free, vectorized path; the rest clip the window to the input.
pub fn max_pool2d_forward<T: Real>(p: &MaxPool2dParams, x: &[T], y: &mut [T], argmax: &mut [u32]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    assert!(
        p.h_in * p.w_in <= u32::MAX as usize,
        "plane too large for u32 argmax"
    );
    prefer_huge_pages(y);
    let sweep = Sweep::of(p);
    let plane = (p.h_out() * p.w_out()).max(1);
    y.par_chunks_mut(plane)
        .zip(argmax.par_chunks_mut(plane))
        .zip(x.par_chunks((p.h_in * p.w_in).max(1)))
        .for_each(|((yp, ap), xp)| max_pool_plane::<T, true>(p, &sweep, xp, yp, ap));
}

/// [`max_pool2d_forward`] without the argmax, for a forward pass no backward will cross: the
/// same maxima, without writing (or computing) the indices.
pub fn max_pool2d_forward_values<T: Real>(p: &MaxPool2dParams, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    prefer_huge_pages(y);
    let sweep = Sweep::of(p);
    y.par_chunks_mut((p.h_out() * p.w_out()).max(1))
        .zip(x.par_chunks((p.h_in * p.w_in).max(1)))
        .for_each(|(yp, xp)| max_pool_plane::<T, false>(p, &sweep, xp, yp, &mut []));
}

/// One plane of max pooling; `ARG`: whether the argmax plane `ap` is written. The interior
/// outputs of a row are folded window position by window position ([`Interior::positions`]).
fn max_pool_plane<T: Real, const ARG: bool>(
    p: &MaxPool2dParams,
    sweep: &Sweep,
    xp: &[T],
    yp: &mut [T],
    ap: &mut [u32],
) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut phases = Vec::new();
    for oy in 0..ho {
        let yr = &mut yp[oy * wo..(oy + 1) * wo];
        let ar: &mut [u32] = if ARG {
            &mut ap[oy * wo..(oy + 1) * wo]
        } else {
            &mut []
        };
        let fast = sweep.fast(oy);
        for ox in (0..fast.start).chain(fast.end..wo) {
            let (v, i) = clipped_window_max(p, xp, oy, ox);
            yr[ox] = v;
            if ARG {
                ar[ox] = i;
            }
        }
        if fast.is_empty() {
            continue;
        }
        let yf = &mut yr[fast.clone()];
        let af: &mut [u32] = if ARG { &mut ar[fast.clone()] } else { &mut [] };
        let run = sweep.interior(oy, &fast);
        let step = p.stride_w as u32;
        simd::dispatch(
            #[inline(always)]
            || {
                run.positions(xp, &mut phases, |src, at, first| {
                    fold_max::<T, ARG>(yf, af, src, at as u32, step, first)
                })
            },
        );
    }
}

/// The geometry of a window sweep over one plane, shared by max and average pooling, with the
/// outputs whose windows lie wholly inside the input along each axis.
struct Sweep {
    w_in: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    inner_y: Range<usize>,
    inner_x: Range<usize>,
}

impl Sweep {
    fn of(p: &PoolWindow) -> Self {
        Sweep {
            w_in: p.w_in,
            kernel: (p.k_h, p.k_w),
            stride: (p.stride_h, p.stride_w),
            pad: (p.pad_h, p.pad_w),
            inner_y: inner_outputs(p.k_h, p.stride_h, p.pad_h, p.h_in, p.h_out()),
            inner_x: inner_outputs(p.k_w, p.stride_w, p.pad_w, p.w_in, p.w_out()),
        }
    }

    /// Output row `oy`'s interior outputs (none on a border row).
    fn fast(&self, oy: usize) -> Range<usize> {
        if self.inner_y.contains(&oy) {
            self.inner_x.clone()
        } else {
            0..0
        }
    }

    /// Output row `oy`'s run of interior outputs `fast` (non-empty).
    fn interior(&self, oy: usize, fast: &Range<usize>) -> Interior {
        Interior {
            w_in: self.w_in,
            kernel: self.kernel,
            stride: self.stride.1,
            top: oy * self.stride.0 - self.pad.0,
            first_col: fast.start * self.stride.1 - self.pad.1,
            n: fast.len(),
        }
    }
}

/// The run of interior outputs of one output row: `n` outputs whose windows lie inside the
/// input, the first one's window starting at row `top`, column `first_col`.
struct Interior {
    w_in: usize,
    kernel: (usize, usize),
    stride: usize,
    top: usize,
    first_col: usize,
    n: usize,
}

impl Interior {
    /// Calls `f(src, at, first)` for each window position (ky, kx) in row-major order (the
    /// order PyTorch's ties and sums follow): `src[j]` is that position's input value for
    /// output j, `at` its input index for output 0 (output j's is at + j·stride), `first`
    /// whether it is the window's first position. A window row is first split by column phase
    /// (column mod stride) so that `src` is always contiguous and the folds vectorize (the
    /// stride-2 loads did not: a scalar compare-and-jump loop, 8% of a VGG16 batch).
    #[inline(always)]
    fn positions<T: Real>(
        &self,
        xp: &[T],
        phases: &mut Vec<T>,
        mut f: impl FnMut(&[T], usize, bool),
    ) {
        let (s, n) = (self.stride, self.n);
        // The input columns the run's windows cover, and each phase's length.
        let seg = (n - 1) * s + self.kernel.1;
        let m = seg.div_ceil(s);
        if s > 1 {
            phases.resize(s * m, T::zero());
        }
        for ky in 0..self.kernel.0 {
            let at = (self.top + ky) * self.w_in + self.first_col;
            let row = &xp[at..at + seg];
            if s > 1 {
                split_phases(row, s, m, phases);
            }
            for kx in 0..self.kernel.1 {
                let src = if s == 1 {
                    &row[kx..kx + n]
                } else {
                    let start = (kx % s) * m + kx / s;
                    &phases[start..start + n]
                };
                f(src, at + kx, ky == 0 && kx == 0);
            }
        }
    }
}

/// phases[q·m + t] = row[q + s·t] for every phase q < s (each phase m long; the last ones may
/// end one short, their tail unused).
#[inline(always)]
fn split_phases<T: Real>(row: &[T], s: usize, m: usize, phases: &mut [T]) {
    if s == 2 {
        let (even, odd) = phases.split_at_mut(m);
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        if row.len() % 2 == 1 {
            even[m - 1] = row[row.len() - 1];
        }
        return;
    }
    for q in 0..s.min(row.len()) {
        for (d, &v) in phases[q * m..].iter_mut().zip(row[q..].iter().step_by(s)) {
            *d = v;
        }
    }
}

/// Folds src[j] (input index at + j·step) into the running max y[j] and argmax idx[j] (only
/// when `ARG`), or starts them for the window's first position. Branch-free, so it vectorizes.
#[inline(always)]
fn fold_max<T: Real, const ARG: bool>(
    y: &mut [T],
    idx: &mut [u32],
    src: &[T],
    at: u32,
    step: u32,
    first: bool,
) {
    if first {
        y.copy_from_slice(src);
        if ARG {
            for (j, iv) in idx.iter_mut().enumerate() {
                *iv = at + j as u32 * step;
            }
        }
        return;
    }
    if ARG {
        for (j, ((yv, iv), &v)) in y.iter_mut().zip(idx.iter_mut()).zip(src).enumerate() {
            let take = takes_over(v, *yv);
            *yv = if take { v } else { *yv };
            *iv = if take { at + j as u32 * step } else { *iv };
        }
    } else {
        for (yv, &v) in y.iter_mut().zip(src) {
            *yv = if takes_over(v, *yv) { v } else { *yv };
        }
    }
}

/// Whether v replaces the running maximum: larger, or the first NaN. Branch-free (`|`, `&` on
/// bools), so the interior scan vectorizes: with `||` it compiled to a scalar loop of compares
/// and jumps, 9% of a ResNet-50 batch.
#[inline(always)]
fn takes_over<T: Real>(v: T, best: T) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// The outputs o whose window [o·stride − pad, o·stride − pad + k) lies inside [0, len).
fn inner_outputs(k: usize, stride: usize, pad: usize, len: usize, n_out: usize) -> Range<usize> {
    let lo = pad.div_ceil(stride);
    let hi = if len + pad >= k {
        ((len + pad - k) / stride + 1).min(n_out)
    } else {
        0
    };
    lo.min(hi)..hi
}

/// Max and argmax of output (oy, ox)'s window clipped to the input; (-inf, u32::MAX) when the
/// window holds only padding.
fn clipped_window_max<T: Real>(p: &MaxPool2dParams, xp: &[T], oy: usize, ox: usize) -> (T, u32) {
    let (ry, rx, _) = p.input_window(oy, ox);
    let mut best = T::neg_infinity();
    let mut best_i = u32::MAX;
    for iy in ry {
        for ix in rx.clone() {
            let i = iy * p.w_in + ix;
            let v = xp[i];
            if best_i == u32::MAX || takes_over(v, best) {
                best = v;
                best_i = i as u32;
            }
        }
    }
    (best, best_i)
}

/// dx[argmax\[o\]] += dy\[o\]; every input element not chosen by a window gets 0.
pub fn max_pool2d_backward_input<T: Real>(
    p: &MaxPool2dParams,
    argmax: &[u32],
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    assert_eq!(dx.len(), p.input_len());
    scatter_argmax(p.h_in * p.w_in, p.h_out() * p.w_out(), argmax, dy, dx);
}

/// Per plane: dx = 0, then dx[argmax[o]] += dy[o] in output order.
fn scatter_argmax<T: Real>(
    plane_in: usize,
    plane_out: usize,
    argmax: &[u32],
    dy: &[T],
    dx: &mut [T],
) {
    prefer_huge_pages(dx);
    dx.par_chunks_mut(plane_in.max(1))
        .zip(dy.par_chunks(plane_out.max(1)))
        .zip(argmax.par_chunks(plane_out.max(1)))
        .for_each(|((dxp, dyp), ap)| {
            dxp.fill(T::zero());
            for (&g, &i) in dyp.iter().zip(ap) {
                dxp[i as usize] += g;
            }
        });
}

/// y = the mean of each window, divided by the window's size as [`AvgPool2dParams::window`]
/// counts it (PyTorch's `count_include_pad` and ceil-mode rules). Each window is summed in
/// row-major order. x: [N, C, H, W], y: [N, C, Ho, Wo].
///
/// Windows wholly inside the input (divisor k_h·k_w) take a vectorized path across the run of
/// interior outputs of a row, as max pooling does; the border clips its windows.
pub fn avg_pool2d_forward<T: Real>(a: &AvgPool2dParams, x: &[T], y: &mut [T]) {
    let p = &a.window;
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    prefer_huge_pages(y);
    let (ho, wo) = (p.h_out(), p.w_out());
    let sweep = Sweep::of(p);
    let full = T::of((p.k_h * p.k_w) as f64);
    y.par_chunks_mut((ho * wo).max(1))
        .zip(x.par_chunks((p.h_in * p.w_in).max(1)))
        .for_each(|(yp, xp)| {
            let mut phases = Vec::new();
            for oy in 0..ho {
                let yr = &mut yp[oy * wo..(oy + 1) * wo];
                let fast = sweep.fast(oy);
                for ox in (0..fast.start).chain(fast.end..wo) {
                    let (ry, rx, div) = a.window(oy, ox);
                    let mut s = T::zero();
                    for iy in ry {
                        for &v in &xp[iy * p.w_in + rx.start..iy * p.w_in + rx.end] {
                            s += v;
                        }
                    }
                    yr[ox] = s / T::of(div as f64);
                }
                if fast.is_empty() {
                    continue;
                }
                let yf = &mut yr[fast.clone()];
                let run = sweep.interior(oy, &fast);
                simd::dispatch(
                    #[inline(always)]
                    || {
                        run.positions(xp, &mut phases, |src, _, first| {
                            for (yv, &v) in yf.iter_mut().zip(src) {
                                *yv = if first { v } else { *yv + v };
                            }
                        });
                        for v in yf.iter_mut() {
                            *v = *v / full;
                        }
                    },
                );
            }
        });
}

/// dx\[i\] = Σ dy\[o\] / divisor\[o\] over the windows o that cover input i, as PyTorch's
/// avg_pool2d backward (each window's share added in output order).
pub fn avg_pool2d_backward_input<T: Real>(a: &AvgPool2dParams, dy: &[T], dx: &mut [T]) {
    let p = &a.window;
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(dx.len(), p.input_len());
    prefer_huge_pages(dx);
    let (ho, wo) = (p.h_out(), p.w_out());
    dx.par_chunks_mut((p.h_in * p.w_in).max(1))
        .zip(dy.par_chunks((ho * wo).max(1)))
        .for_each(|(dxp, dyp)| {
            dxp.fill(T::zero());
            for oy in 0..ho {
                for ox in 0..wo {
                    let (ry, rx, div) = a.window(oy, ox);
                    let g = dyp[oy * wo + ox] / T::of(div as f64);
                    for iy in ry {
                        for v in &mut dxp[iy * p.w_in + rx.start..iy * p.w_in + rx.end] {
                            *v += g;
                        }
                    }
                }
            }
        });
}

/// `nn.AdaptiveMaxPool2d`: y = max over each adaptive window, argmax = flat in-plane index of
/// its first maximum in row-major order (NaN wins, the first NaN is kept), as
/// [`max_pool2d_forward`]. x: [N, C, H, W], y and argmax: [N, C, Ho, Wo].
pub fn adaptive_max_pool2d_forward<T: Real>(
    p: &AdaptivePool2dParams,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u32],
) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    assert!(
        p.h_in * p.w_in <= u32::MAX as usize,
        "plane too large for u32 argmax"
    );
    let plane_out = (p.h_out * p.w_out).max(1);
    y.par_chunks_mut(plane_out)
        .zip(argmax.par_chunks_mut(plane_out))
        .zip(x.par_chunks((p.h_in * p.w_in).max(1)))
        .for_each(|((yp, ap), xp)| {
            for oy in 0..p.h_out {
                let (y0, y1) = adaptive_window(oy, p.h_in, p.h_out);
                for ox in 0..p.w_out {
                    let (x0, x1) = adaptive_window(ox, p.w_in, p.w_out);
                    let mut best = T::neg_infinity();
                    let mut best_i = u32::MAX;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let i = iy * p.w_in + ix;
                            let v = xp[i];
                            if best_i == u32::MAX || takes_over(v, best) {
                                (best, best_i) = (v, i as u32);
                            }
                        }
                    }
                    yp[oy * p.w_out + ox] = best;
                    ap[oy * p.w_out + ox] = best_i;
                }
            }
        });
}

/// dx[argmax\[o\]] += dy\[o\] in output order (overlapping windows may pick the same input);
/// every other input gets 0.
pub fn adaptive_max_pool2d_backward_input<T: Real>(
    p: &AdaptivePool2dParams,
    argmax: &[u32],
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(argmax.len(), p.output_len());
    assert_eq!(dx.len(), p.input_len());
    scatter_argmax(p.h_in * p.w_in, p.h_out * p.w_out, argmax, dy, dx);
}

pub fn adaptive_avg_pool2d_forward<T: Real>(p: &AdaptivePool2dParams, x: &[T], y: &mut [T]) {
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
    p: &AdaptivePool2dParams,
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

#[cfg(test)]
mod tests {
    //! The fast max-pool path against a direct scan of every window, with many ties and NaNs.

    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The plain definition: every window clipped to the input, scanned in row-major order.
    fn reference<T: Real>(p: &MaxPool2dParams, x: &[T]) -> (Vec<T>, Vec<u32>) {
        let (ho, wo) = (p.h_out(), p.w_out());
        let (mut y, mut a) = (vec![], vec![]);
        for xp in x.chunks(p.h_in * p.w_in) {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = T::neg_infinity();
                    let mut best_i = u32::MAX;
                    for ky in 0..p.k_h {
                        for kx in 0..p.k_w {
                            let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                            let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                            if iy < 0 || ix < 0 || iy >= p.h_in as isize || ix >= p.w_in as isize {
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
                    y.push(best);
                    a.push(best_i);
                }
            }
        }
        (y, a)
    }

    fn check<T: Real>(p: &MaxPool2dParams, rng: &mut StdRng) {
        // Few distinct values, so most windows hold ties; some NaNs and infinities.
        let x: Vec<T> = (0..p.input_len())
            .map(|_| match rng.random_range(0..40) {
                0 => T::nan(),
                1 => T::neg_infinity(),
                2 => T::infinity(),
                r => T::of((r % 5) as f64 - 2.0),
            })
            .collect();
        let (y_ref, a_ref) = reference(p, &x);
        let mut y = vec![T::zero(); p.output_len()];
        let mut a = vec![0; p.output_len()];
        max_pool2d_forward(p, &x, &mut y, &mut a);
        assert_eq!(a, a_ref, "argmax {p:?}");
        let mut values = vec![T::zero(); p.output_len()];
        max_pool2d_forward_values(p, &x, &mut values);
        for (i, ((u, w), v)) in y.iter().zip(&values).zip(&y_ref).enumerate() {
            assert!(
                u == v || u.is_nan() && v.is_nan(),
                "max {p:?} [{i}]: {u:?} vs {v:?}"
            );
            assert!(
                w == v || w.is_nan() && v.is_nan(),
                "max without argmax {p:?} [{i}]: {w:?} vs {v:?}"
            );
        }
    }

    /// VGG's and ResNet's pools, ceil-mode ones, then random shapes, strides and pads.
    fn cases(rng: &mut StdRng) -> Vec<MaxPool2dParams> {
        let pool =
            |n, c, (h_in, w_in), (k_h, k_w), (stride_h, stride_w), (pad_h, pad_w), ceil_mode| {
                MaxPool2dParams {
                    n,
                    c,
                    h_in,
                    w_in,
                    k_h,
                    k_w,
                    stride_h,
                    stride_w,
                    pad_h,
                    pad_w,
                    ceil_mode,
                }
            };
        // VGG (2, 2, 0) and ResNet (3, 2, 1) on odd and even sizes, then random shapes.
        let mut cases = vec![
            pool(2, 3, (8, 8), (2, 2), (2, 2), (0, 0), false),
            pool(1, 2, (9, 7), (2, 2), (2, 2), (0, 0), false),
            pool(2, 3, (12, 12), (3, 3), (2, 2), (1, 1), false),
            pool(1, 2, (11, 9), (3, 3), (2, 2), (1, 1), false),
            // Ceil mode (GoogLeNet, SqueezeNet): the last windows hang over the input's end.
            pool(2, 3, (112, 112), (3, 3), (2, 2), (0, 0), true),
            pool(1, 2, (9, 7), (2, 2), (2, 2), (0, 0), true),
            pool(2, 2, (5, 6), (2, 2), (2, 2), (1, 1), true),
            pool(1, 3, (13, 11), (3, 3), (2, 2), (1, 1), true),
        ];
        for _ in 0..60 {
            let k = (rng.random_range(1..=4), rng.random_range(1..=4));
            let size = (rng.random_range(k.0..=12), rng.random_range(k.1..=12));
            let stride = (rng.random_range(1..=3), rng.random_range(1..=3));
            let pad = (rng.random_range(0..=k.0 / 2), rng.random_range(0..=k.1 / 2));
            let (n, c) = (rng.random_range(1..=3), rng.random_range(1..=3));
            cases.push(pool(n, c, size, k, stride, pad, rng.random_bool(0.5)));
        }
        cases
    }

    #[test]
    fn fast_max_pool_matches_reference() {
        let mut rng = StdRng::seed_from_u64(3);
        let cases = cases(&mut rng);
        for p in cases {
            check::<f32>(&p, &mut rng);
            check::<f64>(&p, &mut rng);
        }
    }

    /// Average pooling's fast path gives the bits of each window summed in row-major order
    /// and divided by its divisor.
    #[test]
    fn fast_avg_pool_matches_reference() {
        let mut rng = StdRng::seed_from_u64(5);
        for m in cases(&mut rng) {
            let a = AvgPool2dParams {
                window: m,
                count_include_pad: rng.random_bool(0.5),
            };
            let p = &a.window;
            let x: Vec<f32> = (0..p.input_len())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut want = vec![];
            for xp in x.chunks(p.h_in * p.w_in) {
                for oy in 0..p.h_out() {
                    for ox in 0..p.w_out() {
                        let (ry, rx, div) = a.window(oy, ox);
                        let mut sum = 0f32;
                        for iy in ry {
                            for ix in rx.clone() {
                                sum += xp[iy * p.w_in + ix];
                            }
                        }
                        want.push(sum / div as f32);
                    }
                }
            }
            let mut y = vec![f32::NAN; p.output_len()];
            avg_pool2d_forward(&a, &x, &mut y);
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{a:?}"
            );
        }
    }
}
