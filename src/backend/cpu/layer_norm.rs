//! LayerNorm over the middle axis of x viewed as [outer, dim, inner] (`crate::ops::
//! LayerNormParams`): y = (x − mean)·rstd·w + b with rstd = 1/sqrt(var + eps) and the biased
//! variance, as `F.layer_norm`.
//!
//! Statistics are two-pass in T, on shifted data: each normalized vector is first shifted by
//! its own first element (x − x₀ is exact for the inputs near x₀ that dominate), its mean m
//! taken, then the mean square of (x − x₀) − m. So neither a mean that is large next to the
//! spread cancels the variance away, nor does rounding the mean to T shift every output: at
//! a mean 170× the spread, f32 outputs are within ~1e-6 of exact where an f32 mean alone would
//! cost ~1e-5 (PyTorch's f32 kernel has errors of that size there). Every sum over dim is
//! pairwise (halves summed separately down to blocks of 8–64 terms), so its rounding grows
//! with log(dim). With inner = 1 (nn.LayerNorm on NHWC) the blocks of a row are summed in
//! eight interleaved lanes; with inner > 1 (LayerNorm2d on NCHW) the sums run along dim for a
//! vector of inner positions at a time. The backward pass recomputes the statistics. Every
//! order is fixed, so results do not depend on the thread count.

use super::pages::prefer_huge_pages;
use super::real::Real;
use crate::ops::LayerNormParams;
use rayon::prelude::*;

/// Elements per parallel job (and the inner positions of a job with inner > 1 are as many
/// as fit this budget at the given dim).
const CHUNK: usize = 1 << 14;

/// y = (x − mean)·rstd·w\[d\] + b\[d\]. x, y: [outer, dim, inner]; w, b: \[dim\].
pub fn layer_norm_forward<T: Real>(p: &LayerNormParams, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    assert_eq!(x.len(), p.len());
    assert_eq!(y.len(), p.len());
    assert_eq!(w.len(), p.dim);
    assert_eq!(b.len(), p.dim);
    prefer_huge_pages(y);
    if p.is_empty() {
        return;
    }
    let eps = T::of(p.eps as f64);
    if p.inner == 1 {
        let rows_per_job = (CHUNK / p.dim).max(1);
        y.par_chunks_mut(p.dim * rows_per_job)
            .zip(x.par_chunks(p.dim * rows_per_job))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_exact_mut(p.dim).zip(xc.chunks_exact(p.dim)) {
                    let st = RowStats::of(xr, eps);
                    for (((o, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = st.centered(v) * st.rstd * wv + bv;
                    }
                }
            });
        return;
    }
    let (mean, rstd) = column_stats(p, x, eps);
    let plane = p.dim * p.inner;
    y.par_chunks_mut(p.inner)
        .zip(x.par_chunks(p.inner))
        .enumerate()
        .with_min_len((CHUNK / p.inner).max(1))
        .for_each(|(r, (yr, xr))| {
            let (o, d) = (r / p.dim, r % p.dim);
            let (m, s) = (&mean[o * p.inner..], &rstd[o * p.inner..]);
            let x0 = &x[o * plane..o * plane + p.inner];
            let (wv, bv) = (w[d], b[d]);
            for (k, (out, &v)) in yr.iter_mut().zip(xr).enumerate() {
                *out = ((v - x0[k]) - m[k]) * s[k] * wv + bv;
            }
        });
}

/// dx of LayerNorm: with x̂ = (x − mean)·rstd and g = w·dy,
/// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), the means over dim.
/// x, dy, dx: [outer, dim, inner]; w: \[dim\].
pub fn layer_norm_backward_input<T: Real>(
    p: &LayerNormParams,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(x.len(), p.len());
    assert_eq!(dy.len(), p.len());
    assert_eq!(dx.len(), p.len());
    assert_eq!(w.len(), p.dim);
    prefer_huge_pages(dx);
    if p.is_empty() {
        return;
    }
    let eps = T::of(p.eps as f64);
    let n = T::of(p.dim as f64);
    if p.inner == 1 {
        let rows_per_job = (CHUNK / p.dim).max(1);
        dx.par_chunks_mut(p.dim * rows_per_job)
            .zip(x.par_chunks(p.dim * rows_per_job))
            .zip(dy.par_chunks(p.dim * rows_per_job))
            .for_each(|((dc, xc), gc)| {
                let rows = dc.chunks_exact_mut(p.dim).zip(xc.chunks_exact(p.dim));
                for ((dr, xr), gr) in rows.zip(gc.chunks_exact(p.dim)) {
                    let st = RowStats::of(xr, eps);
                    let xh = |i: usize| st.centered(xr[i]) * st.rstd;
                    let m1 = pairwise(p.dim, &|i| gr[i] * w[i]) / n;
                    let m2 = pairwise(p.dim, &|i| gr[i] * w[i] * xh(i)) / n;
                    for (i, o) in dr.iter_mut().enumerate() {
                        *o = st.rstd * (gr[i] * w[i] - m1 - xh(i) * m2);
                    }
                }
            });
        return;
    }
    let (mean, rstd) = column_stats(p, x, eps);
    let plane = p.dim * p.inner;
    // Per (outer, inner): mean over dim of g and of g·x̂, in the same column layout.
    let mut m1 = vec![T::zero(); p.outer * p.inner];
    let mut m2 = vec![T::zero(); p.outer * p.inner];
    let width = column_width(p);
    column_jobs(p, &mut m1, &mut m2, width)
        .into_par_iter()
        .enumerate()
        .for_each(|(job, (a1, a2))| {
            let (o, i0) = column_job(p, job, width);
            let cols = a1.len();
            let (m, s) = (&mean[o * p.inner + i0..], &rstd[o * p.inner + i0..]);
            let row = |d: usize| (o * p.dim + d) * p.inner + i0;
            let x0 = &x[row(0)..row(0) + cols];
            column_pairwise(0..p.dim, a1, &|d, acc: &mut [T]| {
                let (gr, wv) = (&dy[row(d)..row(d) + cols], w[d]);
                acc.iter_mut().zip(gr).for_each(|(a, &g)| *a += g * wv);
            });
            column_pairwise(0..p.dim, a2, &|d, acc: &mut [T]| {
                let (xr, gr, wv) = (&x[row(d)..row(d) + cols], &dy[row(d)..row(d) + cols], w[d]);
                for k in 0..cols {
                    acc[k] += gr[k] * wv * (((xr[k] - x0[k]) - m[k]) * s[k]);
                }
            });
            for (a, b) in a1.iter_mut().zip(a2.iter_mut()) {
                *a = *a / n;
                *b = *b / n;
            }
        });
    dx.par_chunks_mut(p.inner)
        .enumerate()
        .with_min_len((CHUNK / p.inner).max(1))
        .for_each(|(r, dr)| {
            let (o, d) = (r / p.dim, r % p.dim);
            let c = o * p.inner;
            let at = r * p.inner;
            let (xr, gr) = (&x[at..at + p.inner], &dy[at..at + p.inner]);
            let x0 = &x[o * plane..o * plane + p.inner];
            let wv = w[d];
            for k in 0..p.inner {
                let xh = ((xr[k] - x0[k]) - mean[c + k]) * rstd[c + k];
                dr[k] = rstd[c + k] * (gr[k] * wv - m1[c + k] - xh * m2[c + k]);
            }
        });
}

/// The statistics of one row: its first element, the mean of the row shifted by it, and
/// 1/sqrt(var + eps).
struct RowStats<T> {
    pivot: T,
    mean: T,
    rstd: T,
}

impl<T: Real> RowStats<T> {
    fn of(xr: &[T], eps: T) -> Self {
        let n = T::of(xr.len() as f64);
        let pivot = xr[0];
        let mean = pairwise(xr.len(), &|i| xr[i] - pivot) / n;
        let sq = |i: usize| {
            let c = (xr[i] - pivot) - mean;
            c * c
        };
        let var = pairwise(xr.len(), &sq) / n;
        RowStats {
            pivot,
            mean,
            rstd: T::one() / (var + eps).sqrt(),
        }
    }

    /// v − the row's mean.
    #[inline(always)]
    fn centered(&self, v: T) -> T {
        (v - self.pivot) - self.mean
    }
}

/// Σ term(i) for i < n: halves summed separately down to blocks of at most 64 terms, each in
/// eight interleaved lanes folded in a fixed order.
fn pairwise<T: Real>(n: usize, term: &impl Fn(usize) -> T) -> T {
    fn range<T: Real>(lo: usize, hi: usize, term: &impl Fn(usize) -> T) -> T {
        if hi - lo > 64 {
            let mid = lo + (hi - lo) / 2 / 8 * 8;
            return range(lo, mid, term) + range(mid, hi, term);
        }
        let mut a = [T::zero(); 8];
        for i in lo..hi {
            a[(i - lo) % 8] += term(i);
        }
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    }
    range(0, n, term)
}

/// acc += Σ_{d in ds} row(d), vector by vector: `add(d, acc)` adds row d's terms to acc;
/// halves are summed separately down to blocks of at most 8 rows.
fn column_pairwise<T: Real>(
    ds: std::ops::Range<usize>,
    acc: &mut [T],
    add: &impl Fn(usize, &mut [T]),
) {
    if ds.len() <= 8 {
        ds.for_each(|d| add(d, acc));
        return;
    }
    let mid = ds.start + ds.len() / 2;
    column_pairwise(ds.start..mid, acc, add);
    let mut other = vec![T::zero(); acc.len()];
    column_pairwise(mid..ds.end, &mut other, add);
    acc.iter_mut().zip(&other).for_each(|(a, &b)| *a += b);
}

/// Inner positions per job of the column statistics: about CHUNK elements of x.
fn column_width(p: &LayerNormParams) -> usize {
    (CHUNK / p.dim.max(1))
        .next_multiple_of(8)
        .clamp(8, p.inner.max(1))
}

/// The (outer index, first inner position) of column job `job` (see [`column_jobs`]).
fn column_job(p: &LayerNormParams, job: usize, width: usize) -> (usize, usize) {
    let per_outer = p.inner.div_ceil(width);
    (job / per_outer, job % per_outer * width)
}

/// Two [outer, inner] buffers cut into the jobs of [`column_job`]: `width` columns of one
/// outer block at a time.
fn column_jobs<'a, T>(
    p: &LayerNormParams,
    a: &'a mut [T],
    b: &'a mut [T],
    width: usize,
) -> Vec<(&'a mut [T], &'a mut [T])> {
    a.chunks_mut(p.inner)
        .zip(b.chunks_mut(p.inner))
        .flat_map(|(a, b)| a.chunks_mut(width).zip(b.chunks_mut(width)))
        .collect()
}

/// The mean over dim of every (outer, inner) column shifted by its first element
/// x[outer][0][inner], and its rstd, two-pass: [outer, inner] each.
fn column_stats<T: Real>(p: &LayerNormParams, x: &[T], eps: T) -> (Vec<T>, Vec<T>) {
    let n = T::of(p.dim as f64);
    let mut mean = vec![T::zero(); p.outer * p.inner];
    let mut rstd = vec![T::zero(); p.outer * p.inner];
    let width = column_width(p);
    let jobs = column_jobs(p, &mut mean, &mut rstd, width);
    jobs.into_par_iter().enumerate().for_each(|(job, (m, s))| {
        let (o, i0) = column_job(p, job, width);
        let cols = m.len();
        let row = |d: usize| &x[(o * p.dim + d) * p.inner + i0..][..cols];
        let x0 = row(0);
        column_pairwise(0..p.dim, m, &|d, acc: &mut [T]| {
            for ((a, &v), &v0) in acc.iter_mut().zip(row(d)).zip(x0) {
                *a += v - v0;
            }
        });
        for a in m.iter_mut() {
            *a = *a / n;
        }
        let mean: &[T] = m;
        column_pairwise(0..p.dim, s, &|d, acc: &mut [T]| {
            for (((a, &v), &v0), &mu) in acc.iter_mut().zip(row(d)).zip(x0).zip(mean) {
                let c = (v - v0) - mu;
                *a += c * c;
            }
        });
        for a in s.iter_mut() {
            *a = T::one() / (*a / n + eps).sqrt();
        }
    });
    (mean, rstd)
}
