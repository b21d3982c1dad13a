//! conv2d for every [`Conv2dParams`]: grouped (depthwise included), dilated, with zero padding
//! that may differ between the leading and trailing sides.
//!
//! Three routes:
//! - dense convs (groups 1, dilation 1, symmetric padding) go to [`super::conv`]
//!   (im2col / Winograd around the BLIS-style matrix product);
//! - groups with few input channels (depthwise, ResNeXt's and RegNet's narrow groups, or a
//!   dilated / asymmetrically padded conv on a thin input) run a direct kernel: each task owns
//!   a block of up to 8 output planes of one image and one group and sweeps them output row by
//!   output row; every (input channel, ky, kx) tap of a row is a shifted, strided view of an
//!   input row, and the interior of the row (where every tap is inside the input) is computed
//!   in register tiles of up to 8 channels × 8–32 pixels without bounds checks, so LLVM
//!   vectorizes it along the output row and each input load feeds every channel of the block.
//!   Only the few border pixels of each row take the clipped per-tap loop;
//! - wider groups use im2col + the matrix product per (image, group).
//!
//! The input gradient of the direct route is a gather: each task owns a block of input-gradient
//! planes, and each of their rows is split into the `stride_w` column phases (ix mod stride_w);
//! within one phase every contributing (output channel, ky, kx) reads a contiguous run of an
//! output-gradient row, so the same register-tiled row kernel (stride 1) computes it.
//!
//! Every output element is summed in a fixed order (its taps in (channel, ky, kx) order, the
//! products' fixed blocking), by one task, so results do not depend on the thread count.
//! Where the CPU has AVX2 and FMA, or AVX-512 (detected at run time), the row kernel is
//! compiled for them and uses fused multiply-adds (the AVX-512 build also takes 16-pixel tiles
//! for 5–8 channels; both give the same bits). The row tap lists depend only on the conv's
//! geometry, so they are built once per call (`RowTaps`) and shared by every block.

use super::conv::{
    self, block_width, col2im, im2col, valid_outputs, MIN_BLOCK, MIN_BLOCK_BACKWARD,
};
use super::matmul::{matmul, matmul_strided, Parallelism, View};
use super::pages::prefer_huge_pages;
use super::real::Real;
use super::simd::{self, Level};
use super::weight_grad;
use crate::ops::Conv2dParams;
use rayon::prelude::*;
use std::ops::Range;

/// Input channels per group up to which the direct kernels run; wider groups go through
/// im2col and the matrix product. Measured (f32, 2 threads, batch 8, 3×3 stride 1, 28×28 and
/// 56×56, c_in_group = c_out_group): the direct kernel is 2–3× faster at 4–8 channels per
/// group, about even at 16–32, and the product wins from 48 on.
const DIRECT_MAX_C_IN_GROUP: usize = 32;
/// Output (or input-gradient) planes per task of the direct kernels, and the largest register
/// tile's channel count.
const BLOCK: usize = 8;
/// At least this many output elements per rayon job (tiny planes, e.g. 7×7 depthwise, are
/// batched).
const JOB_ELEMS: usize = 8192;

/// y = conv(x, w) + b. x: [N, Cin, H, W], w: [Cout, Cin/groups, kh, kw], b: \[Cout\],
/// y: [N, Cout, Ho, Wo].
pub fn conv2d_forward<T: Real>(p: &Conv2dParams, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(y.len(), p.output_len());
    if let Some(b) = b {
        assert_eq!(b.len(), p.c_out);
    }
    assert_groups(p);
    if p.is_dense() {
        return conv::conv2d_forward(p, x, w, b, y);
    }
    prefer_huge_pages(y);
    if direct_applies(p) {
        direct_forward(p, x, w, b, y);
    } else {
        im2col_forward(p, x, w, b, y);
    }
}

/// dx = the gradient of conv2d with respect to its input. dy: [N, Cout, Ho, Wo],
/// w: [Cout, Cin/groups, kh, kw], dx: [N, Cin, H, W] (overwritten).
pub fn conv2d_backward_input<T: Real>(p: &Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(dx.len(), p.input_len());
    assert_groups(p);
    if p.is_dense() {
        return conv::conv2d_backward_input(p, dy, w, dx);
    }
    prefer_huge_pages(dx);
    if direct_applies(p) {
        direct_backward_input(p, dy, w, dx);
    } else {
        im2col_backward_input(p, dy, w, dx);
    }
}

/// dw = the gradient of conv2d with respect to its weight. x: [N, Cin, H, W],
/// dy: [N, Cout, Ho, Wo], dw: [Cout, Cin/groups, kh, kw] (overwritten). Dense convs take
/// [`weight_grad::conv2d_backward_weight`]; the others a direct loop, one task per output
/// channel, each element summed over images, rows and columns in that order.
pub fn conv2d_backward_weight<T: Real>(p: &Conv2dParams, x: &[T], dy: &[T], dw: &mut [T]) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(dw.len(), p.weight_len());
    assert_groups(p);
    if p.is_dense() {
        return weight_grad::conv2d_backward_weight(p, x, dy, dw);
    }
    let (ho, wo) = (p.h_out(), p.w_out());
    let (cig, cog) = (p.c_in_group(), p.c_out_group());
    let plane = p.h_in * p.w_in;
    let rows: Vec<Range<usize>> = (0..p.k_h)
        .map(|ky| valid_outputs(ky * p.dilation_h, p.stride_h, p.pad_h, p.h_in, ho))
        .collect();
    let cols: Vec<Range<usize>> = (0..p.k_w)
        .map(|kx| valid_outputs(kx * p.dilation_w, p.stride_w, p.pad_w, p.w_in, wo))
        .collect();
    dw.par_chunks_mut(p.k_len().max(1))
        .enumerate()
        .for_each(|(o, dwo)| {
            let g = o / cog;
            for ci in 0..cig {
                for ky in 0..p.k_h {
                    for kx in 0..p.k_w {
                        let mut s = T::zero();
                        for img in 0..p.n {
                            let dyo = &dy[(img * p.c_out + o) * ho * wo..][..ho * wo];
                            let xc = &x[(img * p.c_in + g * cig + ci) * plane..][..plane];
                            for oy in rows[ky].clone() {
                                let iy = oy * p.stride_h + ky * p.dilation_h - p.pad_h;
                                let (r, c) = (&dyo[oy * wo..(oy + 1) * wo], cols[kx].clone());
                                let x0 = c.start * p.stride_w + kx * p.dilation_w - p.pad_w;
                                let xr = &xc[iy * p.w_in + x0..];
                                let terms = r[c].iter().zip(xr.iter().step_by(p.stride_w));
                                s += terms.fold(T::zero(), |a, (&g, &v)| a + g * v);
                            }
                        }
                        dwo[(ci * p.k_h + ky) * p.k_w + kx] = s;
                    }
                }
            }
        });
}

fn assert_groups(p: &Conv2dParams) {
    assert!(
        p.groups >= 1 && p.c_in.is_multiple_of(p.groups) && p.c_out.is_multiple_of(p.groups),
        "conv2d: {} groups do not divide {} input / {} output channels",
        p.groups,
        p.c_in,
        p.c_out
    );
    assert!(p.stride_h >= 1 && p.stride_w >= 1 && p.dilation_h >= 1 && p.dilation_w >= 1);
}

/// Whether a non-dense conv takes the direct kernels.
pub(crate) fn direct_applies(p: &Conv2dParams) -> bool {
    p.c_in_group() <= DIRECT_MAX_C_IN_GROUP
}

// ---------------------------------------------------------------------------------------------
// The register-tiled row kernel.

/// One term of a row sum: output pixel j gains wts[widx][m]·src[base + j·step] in channel m
/// of the block. The sources are padded (see the callers), so every tap is inside its source
/// for every pixel of the row.
#[derive(Clone, Copy)]
struct Tap {
    base: usize,
    widx: usize,
}

#[inline(always)]
fn madd<T: Real, const FMA: bool>(w: T, x: T, acc: T) -> T {
    if FMA {
        w.mul_add(x, acc)
    } else {
        acc + w * x
    }
}

/// A row of M channels: out[m·ostride + off + j] = init[m] + Σ_t wts[t.widx][m]·src[t.base +
/// j·step] for j in 0..len, the taps added in order.
struct RowJob<'a, T, const M: usize> {
    ostride: usize,
    off: usize,
    len: usize,
    step: usize,
    src: &'a [T],
    taps: &'a [Tap],
    wts: &'a [[T; M]],
    init: [T; M],
}

fn row<T: Real, const M: usize>(out: &mut [T], job: &RowJob<T, M>, simd: Level) {
    match job.step {
        1 => row_stride::<T, M, 1>(out, job, simd),
        2 => row_stride::<T, M, 2>(out, job, simd),
        _ => row_stride::<T, M, 0>(out, job, simd),
    }
}

fn row_stride<T: Real, const M: usize, const S: usize>(
    out: &mut [T],
    job: &RowJob<T, M>,
    simd: Level,
) {
    // SAFETY: `simd` is never above what the CPU has (see `simd::level`).
    #[cfg(target_arch = "x86_64")]
    match simd {
        Level::Avx512 => return unsafe { row_avx512::<T, M, S>(out, job) },
        Level::Avx2 => return unsafe { row_avx2::<T, M, S>(out, job) },
        Level::Baseline => {}
    }
    let _ = simd;
    row_impl::<T, M, S, false, false>(out, job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2<T: Real, const M: usize, const S: usize>(out: &mut [T], job: &RowJob<T, M>) {
    row_impl::<T, M, S, true, false>(out, job)
}

/// With 32 vector registers, blocks of 5–8 channels take 16-pixel tiles too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn row_avx512<T: Real, const M: usize, const S: usize>(out: &mut [T], job: &RowJob<T, M>) {
    row_impl::<T, M, S, true, true>(out, job)
}

/// The row kernel: tiles of V pixels × M channels held in registers, the widest that fit
/// first; the last tile of a row overlaps its predecessor instead of running a scalar tail
/// (a tile computes its outputs afresh, so recomputing a few is harmless). S is the column
/// step when nonzero (so strided loads vectorize), else `job.step` is. WIDE: 16-pixel tiles
/// for up to 8 channels (AVX-512's 32 registers hold them). Each output is the same sum in
/// the same order whatever its tile, so WIDE changes no bits.
#[inline(always)]
fn row_impl<T: Real, const M: usize, const S: usize, const FMA: bool, const WIDE: bool>(
    out: &mut [T],
    job: &RowJob<T, M>,
) {
    let len = job.len;
    let mut j = 0;
    if M == 1 {
        while j + 32 <= len {
            tile::<T, M, 32, S, FMA>(out, job, j);
            j += 32;
        }
    }
    if M <= 4 || WIDE {
        while j + 16 <= len {
            tile::<T, M, 16, S, FMA>(out, job, j);
            j += 16;
        }
    }
    while j + 8 <= len {
        tile::<T, M, 8, S, FMA>(out, job, j);
        j += 8;
    }
    if j < len && len >= 8 {
        tile::<T, M, 8, S, FMA>(out, job, len - 8);
        return;
    }
    while j + 4 <= len {
        tile::<T, M, 4, S, FMA>(out, job, j);
        j += 4;
    }
    if j < len && len >= 4 {
        tile::<T, M, 4, S, FMA>(out, job, len - 4);
        return;
    }
    let step = if S == 0 { job.step } else { S };
    for j in j..len {
        let mut acc = job.init;
        for t in job.taps {
            let v = job.src[t.base + j * step];
            for (a, &w) in acc.iter_mut().zip(&job.wts[t.widx]) {
                *a = madd::<T, FMA>(w, v, *a);
            }
        }
        for (m, &a) in acc.iter().enumerate() {
            out[m * job.ostride + job.off + j] = a;
        }
    }
}

/// One register tile: pixels j0..j0 + V of each of the M channels.
#[inline(always)]
fn tile<T: Real, const M: usize, const V: usize, const S: usize, const FMA: bool>(
    out: &mut [T],
    job: &RowJob<T, M>,
    j0: usize,
) {
    let step = if S == 0 { job.step } else { S };
    let mut acc: [[T; V]; M] = std::array::from_fn(|m| [job.init[m]; V]);
    for t in job.taps {
        let start = t.base + j0 * step;
        let xv: [T; V] = if S == 1 {
            job.src[start..start + V].try_into().expect("tile")
        } else {
            let s = &job.src[start..start + (V - 1) * step + 1];
            std::array::from_fn(|j| s[j * step])
        };
        for (a, &w) in acc.iter_mut().zip(&job.wts[t.widx]) {
            for (a, &v) in a.iter_mut().zip(&xv) {
                *a = madd::<T, FMA>(w, v, *a);
            }
        }
    }
    for (m, a) in acc.iter().enumerate() {
        let at = m * job.ostride + job.off + j0;
        out[at..at + V].copy_from_slice(a);
    }
}

/// Per-thread scratch of the direct kernels.
struct Scratch<T> {
    /// The padded source rows.
    pad: Vec<T>,
    /// The block's weights, M per tap index.
    wts: Vec<T>,
    taps: Vec<Tap>,
    /// Phase rows of a strided input gradient.
    tmp: Vec<T>,
}

impl<T> Scratch<T> {
    fn new() -> Self {
        Scratch {
            pad: Vec::new(),
            wts: Vec::new(),
            taps: Vec::new(),
            tmp: Vec::new(),
        }
    }
}

/// Rows of `width` elements from `src`, each with `left` zeros before and `right` after
/// (in `buf`; `src` itself when no padding is needed). Within one kernel call the layout
/// never changes, so the zeros of a reused buffer are written once.
fn pad_columns<'a, T: Real>(
    src: &'a [T],
    width: usize,
    (left, right): (usize, usize),
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    if left == 0 && right == 0 {
        return src;
    }
    let wp = left + width + right;
    let rows = src.len() / width.max(1);
    if buf.len() != rows * wp {
        buf.clear();
        buf.resize(rows * wp, T::zero());
    }
    for (dst, line) in buf.chunks_exact_mut(wp).zip(src.chunks_exact(width.max(1))) {
        dst[left..left + width].copy_from_slice(line);
    }
    buf
}

// ---------------------------------------------------------------------------------------------
// The direct route.

/// Splits `buf` into per-(image, group) chunks of `per_group` planes, each into blocks of at
/// most BLOCK planes: (image·groups + group, first plane of the block in the group, block).
fn plane_blocks<T>(buf: &mut [T], per_group: usize, plane: usize) -> Vec<(usize, usize, &mut [T])> {
    let block = per_group.min(BLOCK);
    buf.chunks_mut((per_group * plane).max(1))
        .enumerate()
        .flat_map(|(ig, chunk)| {
            chunk
                .chunks_mut((block * plane).max(1))
                .enumerate()
                .map(move |(bi, c)| (ig, bi * block, c))
        })
        .collect()
}

/// Runs `f(m0, M)` over `count` channels in blocks of 8, 4, 2 and 1.
fn for_each_block(count: usize, mut f: impl FnMut(usize, usize)) {
    let mut m0 = 0;
    for size in [8, 4, 2, 1] {
        while count - m0 >= size {
            f(m0, size);
            m0 += size;
        }
    }
}

pub(crate) fn direct_forward<T: Real>(
    p: &Conv2dParams,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    y: &mut [T],
) {
    let pix = p.h_out() * p.w_out();
    let (cig, cog) = (p.c_in_group(), p.c_out_group());
    let group_in = cig * p.h_in * p.w_in;
    let k_len = p.k_len();
    let simd = simd::level();
    let rows = RowTaps::new(p);
    let tasks = plane_blocks(y, cog, pix);
    let min_len = (JOB_ELEMS / (cog.min(BLOCK) * pix).max(1)).max(1);
    tasks.into_par_iter().with_min_len(min_len).for_each_init(
        Scratch::new,
        |s, (ig, o_in_group, yb)| {
            let (img, g) = (ig / p.groups, ig % p.groups);
            let xg = &x[(img * p.c_in + g * cig) * p.h_in * p.w_in..][..group_in];
            let xg = pad_columns(xg, p.w_in, (p.pad_w, p.pad_w_end), &mut s.pad);
            let o0 = g * cog + o_in_group;
            let planes = yb.len() / pix.max(1);
            for_each_block(planes, |m0, size| {
                let (o, yblk) = (o0 + m0, &mut yb[m0 * pix..(m0 + size) * pix]);
                let wblk = &w[o * k_len..(o + size) * k_len];
                let bblk = b.map(|b| &b[o..o + size]);
                let wts = &mut s.wts;
                match size {
                    8 => forward_block::<T, 8>(p, &rows, xg, wblk, bblk, yblk, wts, simd),
                    4 => forward_block::<T, 4>(p, &rows, xg, wblk, bblk, yblk, wts, simd),
                    2 => forward_block::<T, 2>(p, &rows, xg, wblk, bblk, yblk, wts, simd),
                    _ => forward_block::<T, 1>(p, &rows, xg, wblk, bblk, yblk, wts, simd),
                }
            });
        },
    );
}

/// The taps of every output row of a direct conv, the same for every group and block, so
/// built once per call: rows whose whole window is inside the input share one list, read at
/// an offset into the group's source; each border row has its own (without the input rows
/// that fall outside).
struct RowTaps {
    lists: Vec<Vec<Tap>>,
    /// Per output row: its list, and the source offset its bases are relative to.
    rows: Vec<(usize, usize)>,
}

impl RowTaps {
    fn new(p: &Conv2dParams) -> Self {
        let wp = p.w_in + p.pad_w + p.pad_w_end;
        let ho = p.h_out();
        // The taps of output row oy, their bases relative to input row `first`.
        let row_taps = |oy: usize, first: isize| {
            let mut taps = Vec::new();
            for ci in 0..p.c_in_group() {
                for ky in 0..p.k_h {
                    let iy = (oy * p.stride_h + ky * p.dilation_h) as isize - p.pad_h as isize;
                    if iy < 0 || iy >= p.h_in as isize {
                        continue;
                    }
                    let line = (ci * p.h_in) as isize + iy - first;
                    for kx in 0..p.k_w {
                        taps.push(Tap {
                            base: line as usize * wp + kx * p.dilation_w,
                            widx: (ci * p.k_h + ky) * p.k_w + kx,
                        });
                    }
                }
            }
            taps
        };
        let window = |oy: usize| (oy * p.stride_h) as isize - p.pad_h as isize;
        let last = valid_outputs((p.k_h - 1) * p.dilation_h, p.stride_h, p.pad_h, p.h_in, ho);
        let inner = valid_outputs(0, p.stride_h, p.pad_h, p.h_in, ho)
            .start
            .max(last.start)..last.end;
        let mut lists = Vec::new();
        if !inner.is_empty() {
            lists.push(row_taps(inner.start, window(inner.start)));
        }
        let rows = (0..ho)
            .map(|oy| {
                if inner.contains(&oy) {
                    (0, window(oy) as usize * wp)
                } else {
                    lists.push(row_taps(oy, 0));
                    (lists.len() - 1, 0)
                }
            })
            .collect();
        RowTaps { lists, rows }
    }
}

/// M output planes (weights `wm`: M·k_len, bias `bm`: M) from one group's input channels
/// `xg`, whose rows carry pad_w zeros before and pad_w_end after them.
#[allow(clippy::too_many_arguments)]
fn forward_block<T: Real, const M: usize>(
    p: &Conv2dParams,
    rows: &RowTaps,
    xg: &[T],
    wm: &[T],
    bm: Option<&[T]>,
    ym: &mut [T],
    wts: &mut Vec<T>,
    simd: Level,
) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let k_len = p.k_len();
    wts.clear();
    wts.extend((0..k_len * M).map(|i| wm[(i % M) * k_len + i / M]));
    let wts = wts.as_chunks::<M>().0;
    for (oy, &(list, offset)) in rows.rows.iter().enumerate() {
        let job = RowJob {
            ostride: ho * wo,
            off: oy * wo,
            len: wo,
            step: p.stride_w,
            src: &xg[offset..],
            taps: &rows.lists[list],
            wts,
            init: std::array::from_fn(|m| bm.map_or(T::zero(), |b| b[m])),
        };
        row(ym, &job, simd);
    }
}

/// Column phase r of an input-gradient row (the inputs ix = r + j·sw, j < len): its taps are
/// the kx with r + pad_w − kx·dilation_w = q·sw, each reading output-gradient column j + q.
struct Phase {
    len: usize,
    kxs: Vec<(usize, isize)>,
}

fn phases(p: &Conv2dParams) -> Vec<Phase> {
    let sw = p.stride_w;
    (0..sw.min(p.w_in))
        .map(|r| {
            let len = (p.w_in - r).div_ceil(sw);
            let kxs = (0..p.k_w)
                .filter_map(|kx| {
                    let u = (r + p.pad_w) as isize - (kx * p.dilation_w) as isize;
                    let q = u.div_euclid(sw as isize);
                    // Taps whose columns all fall outside the output gradient are dropped.
                    let hits = q < p.w_out() as isize && q + len as isize > 0;
                    (u.rem_euclid(sw as isize) == 0 && hits).then_some((kx, q))
                })
                .collect();
            Phase { len, kxs }
        })
        .collect()
}

pub(crate) fn direct_backward_input<T: Real>(p: &Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let pix = ho * wo;
    let plane = p.h_in * p.w_in;
    let (cig, cog) = (p.c_in_group(), p.c_out_group());
    let simd = simd::level();
    // Output-gradient rows are padded with zeros so that every tap of every phase stays
    // inside them: `left` zeros before, `right` after.
    let phases = phases(p);
    let (mut left, mut right) = (0usize, 0usize);
    for ph in &phases {
        for &(_, q) in &ph.kxs {
            left = left.max((-q).max(0) as usize);
            right = right.max((q + ph.len as isize - wo as isize).max(0) as usize);
        }
    }
    let tasks = plane_blocks(dx, cig, plane);
    let min_len = (JOB_ELEMS / (cig.min(BLOCK) * plane).max(1)).max(1);
    tasks.into_par_iter().with_min_len(min_len).for_each_init(
        Scratch::new,
        |s, (ig, c_in_group, dxb)| {
            let (img, g) = (ig / p.groups, ig % p.groups);
            let dyg = &dy[(img * p.c_out + g * cog) * pix..][..cog * pix];
            let dyg = pad_columns(dyg, wo, (left, right), &mut s.pad);
            let planes = dxb.len() / plane.max(1);
            for_each_block(planes, |m0, size| {
                let (c, dblk) = (c_in_group + m0, &mut dxb[m0 * plane..(m0 + size) * plane]);
                let b = BackwardBlock {
                    p,
                    phases: &phases,
                    dyg,
                    left,
                    wp: left + wo + right,
                    w,
                    g,
                    c0: c,
                };
                let (wts, taps, tmp) = (&mut s.wts, &mut s.taps, &mut s.tmp);
                match size {
                    8 => b.run::<8>(dblk, wts, taps, tmp, simd),
                    4 => b.run::<4>(dblk, wts, taps, tmp, simd),
                    2 => b.run::<2>(dblk, wts, taps, tmp, simd),
                    _ => b.run::<1>(dblk, wts, taps, tmp, simd),
                }
            });
        },
    );
}

/// The input gradient of M input planes of group `g` (its channels c0..) from the group's
/// output-gradient planes `dyg`, whose rows (wp wide) carry `left` zeros before them.
struct BackwardBlock<'a, T> {
    p: &'a Conv2dParams,
    phases: &'a [Phase],
    dyg: &'a [T],
    left: usize,
    wp: usize,
    w: &'a [T],
    g: usize,
    c0: usize,
}

impl<T: Real> BackwardBlock<'_, T> {
    fn run<const M: usize>(
        &self,
        dm: &mut [T],
        wts: &mut Vec<T>,
        taps: &mut Vec<Tap>,
        tmp: &mut Vec<T>,
        simd: Level,
    ) {
        let p = self.p;
        let (ho, sw) = (p.h_out(), p.stride_w);
        let plane = p.h_in * p.w_in;
        let (cig, cog, kk) = (p.c_in_group(), p.c_out_group(), p.k_h * p.k_w);
        let sh = p.stride_h as isize;
        // wts[o·kk + ky·kw + kx][m] = w[g·cog + o][c0 + m][ky][kx].
        wts.clear();
        wts.extend((0..cog * kk * M).map(|i| {
            let (o, k, m) = (i / (kk * M), i / M % kk, i % M);
            self.w[((self.g * cog + o) * cig + self.c0 + m) * kk + k]
        }));
        let wts = wts.as_chunks::<M>().0;
        // Phase r of channel m goes to tmp[(m·sw + r)·lmax..] before the row is interleaved.
        let lmax = p.w_in.div_ceil(sw);
        tmp.resize(M * sw * lmax, T::zero());
        for iy in 0..p.h_in {
            for (r, ph) in self.phases.iter().enumerate() {
                taps.clear();
                for o in 0..cog {
                    for ky in 0..p.k_h {
                        let t = (iy + p.pad_h) as isize - (ky * p.dilation_h) as isize;
                        if t < 0 || t % sh != 0 || t / sh >= ho as isize {
                            continue;
                        }
                        let line = (o * ho + (t / sh) as usize) * self.wp + self.left;
                        for &(kx, q) in &ph.kxs {
                            taps.push(Tap {
                                base: (line as isize + q) as usize,
                                widx: (o * p.k_h + ky) * p.k_w + kx,
                            });
                        }
                    }
                }
                let mut job = RowJob {
                    ostride: plane,
                    off: iy * p.w_in,
                    len: ph.len,
                    step: 1,
                    src: self.dyg,
                    taps,
                    wts,
                    init: [T::zero(); M],
                };
                if sw == 1 {
                    row(dm, &job, simd);
                } else {
                    (job.ostride, job.off) = (sw * lmax, r * lmax);
                    row(tmp, &job, simd);
                }
            }
            if sw == 1 {
                continue;
            }
            for m in 0..M {
                let dst = &mut dm[m * plane + iy * p.w_in..m * plane + (iy + 1) * p.w_in];
                let src = &tmp[m * sw * lmax..(m + 1) * sw * lmax];
                if sw == 2 {
                    let (even, odd) = src.split_at(lmax);
                    let pairs = dst.chunks_exact_mut(2);
                    for ((d, &a), &b) in pairs.zip(even).zip(odd) {
                        (d[0], d[1]) = (a, b);
                    }
                    if p.w_in % 2 == 1 {
                        dst[p.w_in - 1] = even[p.w_in / 2];
                    }
                } else {
                    for (ix, d) in dst.iter_mut().enumerate() {
                        *d = src[(ix % sw) * lmax + ix / sw];
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The im2col route for wide groups: the dense route's panels (conv.rs) per (image, group).

pub(crate) fn im2col_forward<T: Real>(
    p: &Conv2dParams,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    y: &mut [T],
) {
    let pix = p.h_out() * p.w_out();
    let (cig, cog, k_len) = (p.c_in_group(), p.c_out_group(), p.k_len());
    let group_in = cig * p.h_in * p.w_in;
    let width = block_width::<T>(p, MIN_BLOCK);
    let outer = p.n * p.groups >= rayon::current_num_threads();
    let par = if outer {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    };
    let run = |ig: usize, yg: &mut [T]| {
        let (img, g) = (ig / p.groups, ig % p.groups);
        let xg = &x[(img * p.c_in + g * cig) * p.h_in * p.w_in..][..group_in];
        let wv = View::row_major(&w[g * cog * k_len..(g + 1) * cog * k_len], k_len);
        let mut col = vec![T::zero(); k_len * width];
        for p0 in (0..pix).step_by(width) {
            let cols = width.min(pix - p0);
            let panel = &mut col[..k_len * cols];
            im2col(p, xg, p0, cols, panel);
            if let Some(b) = b {
                for (o, row) in yg.chunks_exact_mut(pix).enumerate() {
                    row[p0..p0 + cols].fill(b[g * cog + o]);
                }
            }
            let pv = View::row_major(panel, cols);
            let dims = (cog, cols, k_len);
            matmul_strided(&mut yg[p0..], pix, dims, wv, pv, b.is_some(), par);
        }
    };
    if outer {
        y.par_chunks_mut((cog * pix).max(1))
            .enumerate()
            .for_each(|(ig, yg)| run(ig, yg));
    } else {
        y.chunks_mut((cog * pix).max(1))
            .enumerate()
            .for_each(|(ig, yg)| run(ig, yg));
    }
}

pub(crate) fn im2col_backward_input<T: Real>(p: &Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let pix = p.h_out() * p.w_out();
    let (cig, cog, k_len) = (p.c_in_group(), p.c_out_group(), p.k_len());
    let group_in = cig * p.h_in * p.w_in;
    let width = block_width::<T>(p, MIN_BLOCK_BACKWARD);
    let outer = p.n * p.groups >= rayon::current_num_threads();
    let par = if outer {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    };
    let run = |ig: usize, dxg: &mut [T]| {
        let (img, g) = (ig / p.groups, ig % p.groups);
        let dyg = &dy[(img * p.c_out + g * cog) * pix..][..cog * pix];
        let wt = View::transposed(&w[g * cog * k_len..(g + 1) * cog * k_len], k_len);
        dxg.fill(T::zero());
        let mut col = vec![T::zero(); k_len * width];
        for p0 in (0..pix).step_by(width) {
            let cols = width.min(pix - p0);
            let panel = &mut col[..k_len * cols];
            let dyv = View {
                data: &dyg[p0..],
                rs: pix,
                cs: 1,
            };
            matmul(panel, (k_len, cols, cog), wt, dyv, false, par);
            col2im(p, panel, p0, cols, dxg);
        }
    };
    if outer {
        dx.par_chunks_mut(group_in.max(1))
            .enumerate()
            .for_each(|(ig, dxg)| run(ig, dxg));
    } else {
        dx.chunks_mut(group_in.max(1))
            .enumerate()
            .for_each(|(ig, dxg)| run(ig, dxg));
    }
}

#[cfg(test)]
mod tests {
    //! Both routes (direct and im2col) against a direct loop over every tap, on random
    //! grouped / dilated / asymmetrically padded convs; and a timing run (ignored).

    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random<T: Real>(n: usize, rng: &mut StdRng) -> Vec<T> {
        (0..n).map(|_| T::of(rng.random_range(-1.0..1.0))).collect()
    }

    /// f64 forward and input gradient by the definition, and the magnitudes of their terms.
    fn reference<T: Real>(
        p: &Conv2dParams,
        x: &[T],
        w: &[T],
        dy: &[T],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (ho, wo) = (p.h_out(), p.w_out());
        let (cig, cog) = (p.c_in_group(), p.c_out_group());
        let mut y = vec![0.0; p.output_len()];
        let mut ym = vec![0.0; p.output_len()];
        let mut dx = vec![0.0; p.input_len()];
        let mut dxm = vec![0.0; p.input_len()];
        for n in 0..p.n {
            for o in 0..p.c_out {
                let g = o / cog;
                for oy in 0..ho {
                    for ox in 0..wo {
                        let yi = ((n * p.c_out + o) * ho + oy) * wo + ox;
                        for ci in 0..cig {
                            for ky in 0..p.k_h {
                                for kx in 0..p.k_w {
                                    let iy = (oy * p.stride_h + ky * p.dilation_h) as isize
                                        - p.pad_h as isize;
                                    let ix = (ox * p.stride_w + kx * p.dilation_w) as isize
                                        - p.pad_w as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= p.h_in as isize
                                        || ix >= p.w_in as isize
                                    {
                                        continue;
                                    }
                                    let c = g * cig + ci;
                                    let xi = ((n * p.c_in + c) * p.h_in + iy as usize) * p.w_in
                                        + ix as usize;
                                    let wv = w[((o * cig + ci) * p.k_h + ky) * p.k_w + kx].f64();
                                    y[yi] += wv * x[xi].f64();
                                    ym[yi] += (wv * x[xi].f64()).abs();
                                    dx[xi] += wv * dy[yi].f64();
                                    dxm[xi] += (wv * dy[yi].f64()).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, ym, dx, dxm)
    }

    fn close<T: Real>(
        what: &str,
        p: &Conv2dParams,
        got: &[T],
        want: &[f64],
        mag: &[f64],
        tol: f64,
    ) {
        for i in 0..got.len() {
            let err = (got[i].f64() - want[i]).abs();
            assert!(
                err <= tol * (mag[i] + 1.0),
                "{what} {p:?} [{i}]: {:?} vs {}",
                got[i],
                want[i]
            );
        }
    }

    fn check<T: Real>(p: &Conv2dParams, tol: f64, rng: &mut StdRng) {
        let x = random::<T>(p.input_len(), rng);
        let w = random::<T>(p.weight_len(), rng);
        let dy = random::<T>(p.output_len(), rng);
        let (y_ref, ym, dx_ref, dxm) = reference(p, &x, &w, &dy);
        let mut y = vec![T::nan(); p.output_len()];
        direct_forward(p, &x, &w, None, &mut y);
        close("direct forward", p, &y, &y_ref, &ym, tol);
        let mut y = vec![T::nan(); p.output_len()];
        im2col_forward(p, &x, &w, None, &mut y);
        close("im2col forward", p, &y, &y_ref, &ym, tol);
        let mut dx = vec![T::nan(); p.input_len()];
        direct_backward_input(p, &dy, &w, &mut dx);
        close("direct backward", p, &dx, &dx_ref, &dxm, tol);
        let mut dx = vec![T::nan(); p.input_len()];
        im2col_backward_input(p, &dy, &w, &mut dx);
        close("im2col backward", p, &dx, &dx_ref, &dxm, tol);
    }

    fn random_case(rng: &mut StdRng) -> Conv2dParams {
        let groups = rng.random_range(1..=4);
        let (cig, cog) = (rng.random_range(1..=9), rng.random_range(1..=10));
        let (k_h, k_w): (usize, usize) = (rng.random_range(1..=5), rng.random_range(1..=5));
        let (dilation_h, dilation_w): (usize, usize) =
            (rng.random_range(1..=2), rng.random_range(1..=2));
        let span = (dilation_h * (k_h - 1) + 1, dilation_w * (k_w - 1) + 1);
        let pads: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..=2));
        // Drawn in the order the cases have always been drawn.
        let n = rng.random_range(1..=3);
        let h_in = rng.random_range(span.0.saturating_sub(pads[0] + pads[2]).max(1)..=40);
        let w_in = rng.random_range(span.1.saturating_sub(pads[1] + pads[3]).max(1)..=45);
        let stride = (rng.random_range(1..=3), rng.random_range(1..=3));
        let (c_in, c_out) = (groups * cig, groups * cog);
        Conv2dParams::dense(n, c_in, (h_in, w_in), c_out, (k_h, k_w), stride, (0, 0))
            .with_padding(pads)
            .with_dilation((dilation_h, dilation_w))
            .with_groups(groups)
    }

    #[test]
    fn direct_and_im2col_routes_match_the_definition() {
        let mut rng = StdRng::seed_from_u64(17);
        let mut cases: Vec<Conv2dParams> = (0..80).map(|_| random_case(&mut rng)).collect();
        // Depthwise 3×3 / 5×5 / 7×7 at stride 1 and 2, wide rows (every tile width).
        for (k, s, hw) in [(3, 1, 70), (3, 2, 71), (5, 1, 37), (5, 2, 40), (7, 1, 45)] {
            let p = Conv2dParams::dense(2, 5, (hw - 3, hw), 5, (k, k), (s, s), (k / 2, k / 2));
            cases.push(p.with_groups(5));
        }
        for p in &cases {
            assert!(p.fits(), "{p:?}");
            check::<f32>(p, 1e-5, &mut rng);
            check::<f64>(p, 1e-12, &mut rng);
        }
    }

    /// Timing of the direct and im2col routes (not a test: `cargo test --release --lib
    /// grouped_conv::tests::timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn timing() {
        let mut rng = StdRng::seed_from_u64(1);
        // TIMING_FILTER=<substring> times only the matching cases.
        let filter = std::env::var("TIMING_FILTER").unwrap_or_default();
        let run = |name: &str, p: &Conv2dParams, rng: &mut StdRng| {
            if !name.contains(filter.as_str()) {
                return;
            }
            let x = random::<f32>(p.input_len(), rng);
            let w = random::<f32>(p.weight_len(), rng);
            let dy = random::<f32>(p.output_len(), rng);
            let flop = 2.0 * p.output_len() as f64 * p.k_len() as f64;
            let mut y = vec![0.0f32; p.output_len()];
            let mut dx = vec![0.0f32; p.input_len()];
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = std::time::Instant::now();
                let reps = 5;
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            };
            if p.input_len() == p.output_len() {
                // The memory-bound floor: one parallel pass reading x and writing y.
                let c = time(&mut || {
                    y.par_chunks_mut(1 << 16)
                        .zip(x.par_chunks(1 << 16))
                        .for_each(|(a, b)| a.copy_from_slice(b))
                });
                println!("{name:40} copy x → y {:7.2} ms", c * 1e3);
            }
            let fd = time(&mut || direct_forward(p, &x, &w, None, &mut y));
            // TIMING_DIRECT=1 times the direct route only.
            let direct_only = std::env::var("TIMING_DIRECT").is_ok();
            let mut fi = 0.0;
            if !direct_only {
                fi = time(&mut || im2col_forward(p, &x, &w, None, &mut y));
            }
            let bd = time(&mut || direct_backward_input(p, &dy, &w, &mut dx));
            let mut bi = 0.0;
            if !direct_only {
                bi = time(&mut || im2col_backward_input(p, &dy, &w, &mut dx));
            }
            println!(
                "{name:40} fwd direct {:7.2} ms ({:5.1} GFLOP/s) im2col {:7.2} ms | bwd direct {:7.2} ms ({:5.1} GFLOP/s) im2col {:7.2} ms",
                fd * 1e3,
                flop / fd * 1e-9,
                fi * 1e3,
                bd * 1e3,
                flop / bd * 1e-9,
                bi * 1e3
            );
        };
        let grouped = |c: usize, hw: usize, g: usize, k: usize, s: usize| {
            Conv2dParams::dense(8, c, (hw, hw), c, (k, k), (s, s), (k / 2, k / 2)).with_groups(g)
        };
        run(
            "depthwise 3x3 s1 112x112x96",
            &grouped(96, 112, 96, 3, 1),
            &mut rng,
        );
        run(
            "depthwise 3x3 s2 112x112x96",
            &grouped(96, 112, 96, 3, 2),
            &mut rng,
        );
        run(
            "depthwise 5x5 s1 28x28x240",
            &grouped(240, 28, 240, 5, 1),
            &mut rng,
        );
        run(
            "depthwise 7x7 s1 56x56x96",
            &grouped(96, 56, 96, 7, 1),
            &mut rng,
        );
        for cig in [4, 8, 16, 24, 32, 48, 64] {
            let c = 128.max(cig * 8);
            run(
                &format!("grouped 3x3 56x56x{c} width {cig}"),
                &grouped(c, 56, c / cig, 3, 1),
                &mut rng,
            );
        }
        for cig in [8, 16, 32, 64] {
            run(
                &format!("grouped 3x3 28x28x256 width {cig}"),
                &grouped(256, 28, 256 / cig, 3, 1),
                &mut rng,
            );
        }
    }
}
