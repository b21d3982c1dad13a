//! 3×3 stride-1 convolution by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). Each 4×4 output tile costs 36
//! multiplications per (input, output) channel pair instead of 144: the input's 6×6 tiles and
//! the 3×3 filters are transformed to 36 "positions", each position is one matrix product
//! [Cout × Cin]·[Cin × tiles], and the products are transformed back to 4×4 outputs. VGG is
//! all such convs, ResNet's bottlenecks about half.
//!
//! The transforms multiply by small integers (input, output) and by 1/4, 1/6, 1/12, 1/24
//! (filters, computed once per model in f64), so the result differs from im2col's by rounding:
//! ~1e-7 of the sum of the terms' magnitudes in f32 (F(2×2, 3×3), used before 2026-12-07,
//! gave ~1e-8 at 2.25× instead of 4× fewer multiplications); tested against the direct
//! convolution in f32 and f64.
//!
//! Work goes in blocks of whole tile rows of the batch (a block may span images, so the 7×7
//! and 14×14 maps of a batch still make products wide enough to pay for packing their
//! weights); a tile row's 4 output rows of a channel are one contiguous run, where the fused
//! epilogue and residual are applied, and a block's transformed inputs and products
//! (36·(Cin + Cout)·tiles values) stay in cache.

use super::epilogue::Epilogue;
use super::matmul::{matmul, Parallelism, View};
use super::real::Real;
use super::scratch::{buffer, Buffer};
use super::simd;
use crate::ops::Conv2dParams;
use rayon::prelude::*;
use std::ops::Range;

/// Outputs per tile edge, and the input tile's edge (m + 2 for a 3×3 filter).
const M: usize = 4;
const ALPHA: usize = M + 2;
/// Positions: one matrix product each.
const POS: usize = ALPHA * ALPHA;

/// With fewer input channels the products are too thin to pay for the transforms (a
/// network's first conv, with 3).
const MIN_CHANNELS: usize = 16;
/// Aim for this much scratch (transformed inputs and products) per block. (Unit tests use
/// small blocks, so that small images take every path: several blocks, blocks in parallel.)
const BLOCK_BYTES: usize = if cfg!(test) { 16 << 10 } else { 1 << 20 };
/// But at least this many tiles per block, so each product amortises packing its [Cout × Cin]
/// weights (a block reads all 36 of them; measured on vgg16's and resnet50's 3×3 convs, batch
/// 8, 2 threads: 64 tiles ~10% slower than 128–256).
const MIN_TILES: usize = if cfg!(test) { 4 } else { 128 };
/// Blocks run in parallel when there are at least this many per thread (so that whole blocks
/// balance); otherwise each block's transforms and products are shared out.
const BLOCKS_PER_THREAD: usize = 4;

/// Whether the CPU backend computes `p` with this module. Not the image size: even resnet50's
/// 7×7 maps (4 tiles an image) measured faster than im2col at batch 1 (2.7 vs 3.0 ms alone,
/// 17.5 vs 16.5 images/s for the whole network), and so whether it applies does not depend on
/// the batch.
pub fn applies(p: &Conv2dParams) -> bool {
    p.is_dense()
        && p.k_h == 3
        && p.k_w == 3
        && p.stride_h == 1
        && p.stride_w == 1
        && p.c_in >= MIN_CHANNELS
}

/// y = conv(x, w) + b, then the epilogue, given `u = filters(p, w)`. Shapes as
/// `conv::conv2d_forward`; `p` must satisfy the 3×3, stride-1 part of [`applies`] (the
/// channel count only decides speed).
pub fn conv2d_forward<T: Real>(
    p: &Conv2dParams,
    x: &[T],
    u: &[T],
    b: Option<&[T]>,
    epi: Option<Epilogue<T>>,
    y: &mut [T],
) {
    assert!(p.k_h == 3 && p.k_w == 3 && p.stride_h == 1 && p.stride_w == 1);
    assert_eq!(u.len(), POS * p.c_out * p.c_in);
    assert_eq!(x.len(), p.input_len());
    assert_eq!(y.len(), p.output_len());
    if y.is_empty() {
        return;
    }
    let g = Geometry::new(p);
    // bands[k] = block k's runs of outputs: per image, channel and tile row, its M output rows
    // (fewer at the bottom edge).
    let mut bands: Vec<Vec<Run<T>>> = (0..g.blocks()).map(|_| Vec::new()).collect();
    for (img, yi) in y.chunks_mut(p.c_out * g.pix).enumerate() {
        for (co, plane) in yi.chunks_mut(g.pix).enumerate() {
            for (ty, out) in plane.chunks_mut(M * g.wo).enumerate() {
                let row = img * g.th + ty;
                bands[row / g.rows].push(Run { img, co, row, out });
            }
        }
    }
    let threads = rayon::current_num_threads();
    let block = |s: &mut Scratch<T>, (k, runs): (usize, Vec<Run<T>>), par: bool| {
        g.block(p, x, u, b, epi, g.tile_rows(k), runs, s, par)
    };
    if g.blocks() >= BLOCKS_PER_THREAD * threads {
        bands
            .into_par_iter()
            .enumerate()
            .for_each_init(Scratch::new, |s, kb| block(s, kb, false));
    } else {
        // Too few blocks to share out: each block's transforms and products run in parallel.
        let mut scratch = Scratch::new();
        for kb in bands.into_iter().enumerate() {
            block(&mut scratch, kb, threads > 1);
        }
    }
}

/// The input gradient of a 3×3 stride-1 conv with padding ≤ 2 is itself such a conv: of dy,
/// with padding 2 − pad and each filter transposed (Cin ↔ Cout) and rotated by 180°. Returns
/// that conv's params when [`applies`] to it, for `conv2d_backward_input`.
pub fn backward_as_forward(p: &Conv2dParams) -> Option<Conv2dParams> {
    if p.k_h != 3 || p.k_w != 3 || p.stride_h != 1 || p.stride_w != 1 || p.pad_h > 2 || p.pad_w > 2
    {
        return None;
    }
    let q = Conv2dParams::dense(
        p.n,
        p.c_out,
        (p.h_out(), p.w_out()),
        p.c_in,
        (3, 3),
        (1, 1),
        (2 - p.pad_h, 2 - p.pad_w),
    );
    applies(&q).then_some(q)
}

/// The filters [`conv2d_forward`] takes for the input gradient of `p` (see
/// [`backward_as_forward`], which must apply): of `w` transposed and rotated.
pub fn backward_filters<T: Real>(p: &Conv2dParams, w: &[T]) -> Vec<T> {
    let q = backward_as_forward(p).expect("Winograd applies to the input gradient");
    filters(&q, &transpose_rotate(p, w))
}

/// w [Cout, Cin, 3, 3] → [Cin, Cout, 3, 3], each filter rotated by 180°.
fn transpose_rotate<T: Real>(p: &Conv2dParams, w: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); w.len()];
    for (k, g) in w.chunks_exact(9).enumerate() {
        let (co, ci) = (k / p.c_in, k % p.c_in);
        let dst = &mut out[(ci * p.c_out + co) * 9..][..9];
        for (d, &v) in dst.iter_mut().zip(g.iter().rev()) {
            *d = v;
        }
    }
    out
}

/// One tile row's M output rows of channel `co` of image `img`; `row` is the tile row's index
/// in the batch (img · tile rows per image + its row in the image).
struct Run<'a, T> {
    img: usize,
    co: usize,
    row: usize,
    out: &'a mut [T],
}

/// Per-block scratch: transformed inputs [Cin][36][tiles] (one channel's contiguous, so the
/// input transform can run in parallel over channels) and products [36][Cout][tiles] (one
/// position's contiguous, so the products can).
struct Scratch<T: Real> {
    v: Buffer<T>,
    m: Buffer<T>,
}

impl<T: Real> Scratch<T> {
    fn new() -> Self {
        Self {
            v: buffer(),
            m: buffer(),
        }
    }
}

/// The tiling of the batch.
struct Geometry {
    wo: usize,
    pix: usize,
    /// Tiles per row, tile rows per image, tile rows in the batch.
    tw: usize,
    th: usize,
    total: usize,
    /// Tile rows per block.
    rows: usize,
}

impl Geometry {
    fn new(p: &Conv2dParams) -> Self {
        let (ho, wo) = (p.h_out(), p.w_out());
        let (tw, th) = (wo.div_ceil(M), ho.div_ceil(M));
        let total = p.n * th;
        let per_tile = POS * (p.c_in + p.c_out) * size_of::<f32>();
        let target = (BLOCK_BYTES / per_tile.max(1)).max(MIN_TILES);
        let rows = target.div_ceil(tw.max(1)).clamp(1, total.max(1));
        // The same number of rows in every block, as far as possible.
        let rows = total.div_ceil(total.div_ceil(rows).max(1)).max(1);
        Self {
            wo,
            pix: ho * wo,
            tw,
            th,
            total,
            rows,
        }
    }

    fn blocks(&self) -> usize {
        self.total.div_ceil(self.rows)
    }

    fn tile_rows(&self, k: usize) -> Range<usize> {
        k * self.rows..((k + 1) * self.rows).min(self.total)
    }

    /// Block `k` (tile rows `rows` of the batch): transform its tiles, 36 products, transform
    /// back into its runs, then the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn block<T: Real>(
        &self,
        p: &Conv2dParams,
        x: &[T],
        u: &[T],
        b: Option<&[T]>,
        epi: Option<Epilogue<T>>,
        rows: Range<usize>,
        mut runs: Vec<Run<T>>,
        s: &mut Scratch<T>,
        parallel: bool,
    ) {
        let tiles = rows.len() * self.tw;
        s.v.resize(POS * p.c_in * tiles, T::zero());
        s.m.resize(POS * p.c_out * tiles, T::zero());
        let (v, m) = (
            &mut s.v[..POS * p.c_in * tiles],
            &mut s.m[..POS * p.c_out * tiles],
        );
        let input = |t: &mut Buffer<T>, (ci, vc): (usize, &mut [T])| {
            simd::dispatch(
                #[inline(always)]
                || self.transform_input(p, x, ci, rows.clone(), vc, t),
            )
        };
        if parallel {
            v.par_chunks_mut(POS * tiles)
                .enumerate()
                .for_each_init(buffer, input);
        } else {
            let mut t = buffer();
            v.chunks_mut(POS * tiles)
                .enumerate()
                .for_each(|cv| input(&mut t, cv));
        }
        // Position ξ: m[ξ] = u[ξ] [Cout × Cin] · v[·][ξ] [Cin × tiles].
        let v = &*v;
        let product = |(xi, (mx, ux)): (usize, (&mut [T], &[T]))| {
            let vx = View {
                data: &v[xi * tiles..],
                rs: POS * tiles,
                cs: 1,
            };
            let a = View::row_major(ux, p.c_in);
            matmul(
                mx,
                (p.c_out, tiles, p.c_in),
                a,
                vx,
                false,
                Parallelism::None,
            );
        };
        let (m_len, u_len) = (p.c_out * tiles, p.c_out * p.c_in);
        if parallel {
            m.par_chunks_mut(m_len)
                .zip(u.par_chunks(u_len))
                .enumerate()
                .for_each(product);
        } else {
            m.chunks_mut(m_len)
                .zip(u.chunks(u_len))
                .enumerate()
                .for_each(product);
        }
        let m = &*m;
        // Each channel's runs together, in tile-row order.
        runs.sort_unstable_by_key(|run| (run.co, run.row));
        let per_channel = rows.len();
        let output = |t: &mut Buffer<T>, runs: &mut [Run<T>]| {
            let co = runs[0].co;
            let bias = b.map_or(T::zero(), |b| b[co]);
            simd::dispatch(
                #[inline(always)]
                || self.transform_output(co, m, tiles, bias, runs, t),
            );
            if let Some(e) = epi {
                for run in runs {
                    let ty = run.row - run.img * self.th;
                    let e = e.for_image(run.img, p.c_out * self.pix);
                    e.apply_row(co, run.out, co * self.pix + M * ty * self.wo);
                }
            }
        };
        if parallel {
            runs.par_chunks_mut(per_channel)
                .for_each_init(buffer, output);
        } else {
            let mut t = buffer();
            runs.chunks_mut(per_channel)
                .for_each(|runs| output(&mut t, runs));
        }
    }

    /// vc[ξ][t] = (Bᵀ·d·B)[ξ] for the 6×6 input tile d of channel `ci` of every tile t of tile
    /// rows `rows`. The tiles are first gathered, d[i][c][t] (each input row split by column
    /// mod 4: tile tx reads columns 4tx … 4tx + 5), then transformed by rows (d·B) and columns
    /// (Bᵀ·) in loops over all the block's tiles, which the compiler vectorizes whatever the
    /// image width.
    #[inline(always)]
    fn transform_input<T: Real>(
        &self,
        p: &Conv2dParams,
        x: &[T],
        ci: usize,
        rows: Range<usize>,
        vc: &mut [T],
        t: &mut Vec<T>,
    ) {
        let tw = self.tw;
        let tiles = vc.len() / POS;
        // t: one zero-padded input row, its columns by phase (phases[k][tx] = column 4tx + k),
        // the gathered tiles d and d·B (36 × tiles each).
        let width = M * (tw + 1);
        t.resize(2 * width + 2 * POS * tiles, T::zero());
        let (padded, rest) = t.split_at_mut(width);
        let (phases, rest) = rest.split_at_mut(width);
        let (d, db) = rest.split_at_mut(POS * tiles);
        // Columns of the padded row that hold input columns 0 .. w_in.
        let lo = p.pad_w.min(width);
        let hi = (p.pad_w + p.w_in).min(width);
        let plane_len = p.h_in * p.w_in;
        for (r, row) in rows.enumerate() {
            let (img, ty) = (row / self.th, row % self.th);
            let plane = &x[(img * p.c_in + ci) * plane_len..][..plane_len];
            for i in 0..ALPHA {
                let iy = (M * ty + i) as isize - p.pad_h as isize;
                padded.fill(T::zero());
                if iy >= 0 && (iy as usize) < p.h_in && lo < hi {
                    let line = &plane[iy as usize * p.w_in..];
                    padded[lo..hi].copy_from_slice(&line[..hi - lo]);
                }
                let [p0, p1, p2, p3] = disjoint(phases, |k| k * (tw + 1), tw + 1);
                deinterleave(padded, p0, p1, p2, p3);
                // Tile tx's columns 0 … 5: phases 0 … 3 at tx, phases 0, 1 at tx + 1.
                for c in 0..ALPHA {
                    let src = &phases[(c % M) * (tw + 1) + c / M..][..tw];
                    d[(ALPHA * i + c) * tiles + r * tw..][..tw].copy_from_slice(src);
                }
            }
        }
        for i in 0..ALPHA {
            let ins = std::array::from_fn(|c| &d[(ALPHA * i + c) * tiles..][..tiles]);
            input_tiles(ins, disjoint(db, |j| (ALPHA * i + j) * tiles, tiles));
        }
        for j in 0..ALPHA {
            let ins = std::array::from_fn(|i| &db[(ALPHA * i + j) * tiles..][..tiles]);
            input_tiles(ins, disjoint(vc, |i| (ALPHA * i + j) * tiles, tiles));
        }
    }

    /// Channel `co` of a block: Aᵀ·m·A + bias of every tile, in loops over all the block's
    /// tiles, then scattered into `runs` (the channel's runs, one per tile row of the block, in
    /// order; tiles past the image's edge are cut).
    #[inline(always)]
    fn transform_output<T: Real>(
        &self,
        co: usize,
        m: &[T],
        tiles: usize,
        bias: T,
        runs: &mut [Run<T>],
        t: &mut Vec<T>,
    ) {
        let (tw, wo) = (self.tw, self.wo);
        let pos = m.len() / POS;
        let at = co * tiles;
        // t: Aᵀ·m (4 × 6 × tiles), then Aᵀ·m·A (4 × 4 × tiles).
        t.resize((M * ALPHA + M * M) * tiles, T::zero());
        let (am, y) = t.split_at_mut(M * ALPHA * tiles);
        for j in 0..ALPHA {
            let ins = std::array::from_fn(|i| &m[(ALPHA * i + j) * pos + at..][..tiles]);
            output_tiles(
                ins,
                T::zero(),
                disjoint(am, |k| (ALPHA * k + j) * tiles, tiles),
            );
        }
        for k in 0..M {
            let ins = std::array::from_fn(|j| &am[(ALPHA * k + j) * tiles..][..tiles]);
            output_tiles(ins, bias, disjoint(y, |c| (M * k + c) * tiles, tiles));
        }
        for (r, run) in runs.iter_mut().enumerate() {
            for (k, line) in run.out.chunks_mut(wo).enumerate() {
                let col = |c: usize| &y[(M * k + c) * tiles + r * tw..][..tw];
                interleave(col(0), col(1), col(2), col(3), line);
                let full = wo / M;
                for (c, v) in line[M * full..].iter_mut().enumerate() {
                    *v = col(c)[full];
                }
            }
        }
    }
}

/// Bᵀ·d for one column (or row) d of an input tile, with
/// Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0],
///       [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0], [0, 4, 0, −5, 0, 1]].
#[inline(always)]
fn input_1d<T: Real>(d: [T; ALPHA]) -> [T; ALPHA] {
    let (two, four, five) = (T::of(2.0), T::of(4.0), T::of(5.0));
    let (t0, t1) = (d[4] - four * d[2], d[3] - four * d[1]);
    let (t2, t3) = (d[4] - d[2], two * (d[3] - d[1]));
    [
        four * d[0] - five * d[2] + d[4],
        t0 + t1,
        t0 - t1,
        t2 + t3,
        t2 - t3,
        four * d[1] - five * d[3] + d[5],
    ]
}

/// Aᵀ·m for one column (or row) m of a product tile, with
/// Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]].
#[inline(always)]
fn output_1d<T: Real>(m: [T; ALPHA]) -> [T; M] {
    let (a, b) = (m[1] + m[2], m[1] - m[2]);
    let (c, d) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + a + c,
        b + T::of(2.0) * d,
        a + T::of(4.0) * c,
        b + T::of(8.0) * d + m[5],
    ]
}

/// o_j[tx] = (Bᵀ·d)[j] with d = (i_0 … i_5)[tx], for every tile tx of a row: a loop the
/// compiler vectorizes (each slice its own parameter, so it knows the outputs overlap nothing,
/// and all cut to the same length, so no bounds check is left in it).
#[inline(always)]
fn input_tiles<T: Real>([i0, i1, i2, i3, i4, i5]: [&[T]; ALPHA], o: [&mut [T]; ALPHA]) {
    let [o0, o1, o2, o3, o4, o5] = o;
    input_row(i0, i1, i2, i3, i4, i5, o0, o1, o2, o3, o4, o5)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn input_row<T: Real>(
    i0: &[T],
    i1: &[T],
    i2: &[T],
    i3: &[T],
    i4: &[T],
    i5: &[T],
    o0: &mut [T],
    o1: &mut [T],
    o2: &mut [T],
    o3: &mut [T],
    o4: &mut [T],
    o5: &mut [T],
) {
    let n = o0.len();
    let (i0, i1, i2, i3, i4, i5) = (&i0[..n], &i1[..n], &i2[..n], &i3[..n], &i4[..n], &i5[..n]);
    let (o1, o2, o3, o4, o5) = (
        &mut o1[..n],
        &mut o2[..n],
        &mut o3[..n],
        &mut o4[..n],
        &mut o5[..n],
    );
    for tx in 0..n {
        let r = input_1d([i0[tx], i1[tx], i2[tx], i3[tx], i4[tx], i5[tx]]);
        (o0[tx], o1[tx], o2[tx]) = (r[0], r[1], r[2]);
        (o3[tx], o4[tx], o5[tx]) = (r[3], r[4], r[5]);
    }
}

/// o_k[tx] = (Aᵀ·m)[k] + bias with m = (i_0 … i_5)[tx], for every tile tx of a row;
/// vectorized as [`input_tiles`].
#[inline(always)]
fn output_tiles<T: Real>([i0, i1, i2, i3, i4, i5]: [&[T]; ALPHA], bias: T, o: [&mut [T]; M]) {
    let [o0, o1, o2, o3] = o;
    output_row(i0, i1, i2, i3, i4, i5, bias, o0, o1, o2, o3)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_row<T: Real>(
    i0: &[T],
    i1: &[T],
    i2: &[T],
    i3: &[T],
    i4: &[T],
    i5: &[T],
    bias: T,
    o0: &mut [T],
    o1: &mut [T],
    o2: &mut [T],
    o3: &mut [T],
) {
    let n = o0.len();
    let (i0, i1, i2, i3, i4, i5) = (&i0[..n], &i1[..n], &i2[..n], &i3[..n], &i4[..n], &i5[..n]);
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for tx in 0..n {
        let r = output_1d([i0[tx], i1[tx], i2[tx], i3[tx], i4[tx], i5[tx]]);
        (o0[tx], o1[tx]) = (r[0] + bias, r[1] + bias);
        (o2[tx], o3[tx]) = (r[2] + bias, r[3] + bias);
    }
}

/// row[4tx + k] = y_k[tx] for every whole tile tx: a tile row's 4 output columns interleaved.
#[inline(always)]
fn interleave<T: Real>(y0: &[T], y1: &[T], y2: &[T], y3: &[T], row: &mut [T]) {
    let n = (row.len() / M).min(y0.len());
    let (y0, y1, y2, y3) = (&y0[..n], &y1[..n], &y2[..n], &y3[..n]);
    for (tx, quad) in row.chunks_exact_mut(M).take(n).enumerate() {
        (quad[0], quad[1], quad[2], quad[3]) = (y0[tx], y1[tx], y2[tx], y3[tx]);
    }
}

/// p_k[tx] = row[4tx + k]: a row split by column mod 4.
#[inline(always)]
fn deinterleave<T: Real>(row: &[T], p0: &mut [T], p1: &mut [T], p2: &mut [T], p3: &mut [T]) {
    let n = p0.len();
    let (p1, p2, p3) = (&mut p1[..n], &mut p2[..n], &mut p3[..n]);
    for (tx, quad) in row.chunks_exact(M).take(n).enumerate() {
        (p0[tx], p1[tx], p2[tx], p3[tx]) = (quad[0], quad[1], quad[2], quad[3]);
    }
}

/// N disjoint slices of `s` of length `len`, the j-th starting at `start(j)`.
#[inline(always)]
fn disjoint<T, const N: usize>(
    s: &mut [T],
    start: impl Fn(usize) -> usize,
    len: usize,
) -> [&mut [T]; N] {
    let ranges = std::array::from_fn(|j| start(j)..start(j) + len);
    s.get_disjoint_mut(ranges)
        .expect("Winograd's slices are disjoint and in bounds")
}

/// The transformed filters [`conv2d_forward`] takes: u\[ξ\]\[co\]\[ci\] = (G·g·Gᵀ)\[ξ\] for every 3×3
/// filter g = w\[co\]\[ci\], with G = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙],
/// [1/24, −1/12, ⅙], [0, 0, 1]], computed in f64 and rounded once. They depend on the weights
/// only, so a caller that keeps them computes them once per model.
pub fn filters<T: Real>(p: &Conv2dParams, w: &[T]) -> Vec<T> {
    let pos = p.c_out * p.c_in;
    let mut u = vec![T::zero(); POS * pos];
    if pos == 0 {
        return u;
    }
    // Runs of filters in parallel (a model's first batch waits for them): run r holds filters
    // [r·RUN, (r + 1)·RUN) of every position.
    const RUN: usize = 4096;
    let mut runs: Vec<Vec<&mut [T]>> = (0..pos.div_ceil(RUN))
        .map(|_| Vec::with_capacity(POS))
        .collect();
    for plane in u.chunks_mut(pos) {
        for (piece, run) in plane.chunks_mut(RUN).zip(&mut runs) {
            run.push(piece);
        }
    }
    let g_col = |a: f64, b: f64, c: f64| {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    };
    runs.into_par_iter()
        .enumerate()
        .for_each(|(r, mut planes)| {
            for (k, g) in w[9 * r * RUN..]
                .chunks_exact(9)
                .take(planes[0].len())
                .enumerate()
            {
                let g: [f64; 9] = std::array::from_fn(|i| g[i].f64());
                // G·g: column by column.
                let cols: [[f64; ALPHA]; 3] =
                    std::array::from_fn(|c| g_col(g[c], g[3 + c], g[6 + c]));
                for i in 0..ALPHA {
                    // Row i of G·g, times Gᵀ.
                    let row = g_col(cols[0][i], cols[1][i], cols[2][i]);
                    for (j, val) in row.into_iter().enumerate() {
                        planes[ALPHA * i + j][k] = T::of(val);
                    }
                }
            }
        });
    u
}

#[cfg(test)]
mod tests {
    //! The direct-loop comparison of every conv path is in `conv::tests`, which covers this
    //! module's shapes; here: the block layout and the fused epilogue.

    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn params(
        n: usize,
        c_in: usize,
        (h, w): (usize, usize),
        c_out: usize,
        pad: usize,
    ) -> Conv2dParams {
        Conv2dParams::dense(n, c_in, (h, w), c_out, (3, 3), (1, 1), (pad, pad))
    }

    #[test]
    fn blocks_cover_every_tile_row_of_the_batch_once() {
        for (n, h, w, c) in [
            (1, 1, 1, 16),
            (2, 5, 6, 17),
            (1, 224, 224, 64),
            (8, 14, 14, 512),
            (3, 75, 9, 20),
        ] {
            let p = params(n, c, (h, w), c, 1);
            let g = Geometry::new(&p);
            let covered: Vec<usize> = (0..g.blocks()).flat_map(|k| g.tile_rows(k)).collect();
            assert_eq!(
                covered,
                (0..n * g.th).collect::<Vec<_>>(),
                "{n}×{h}×{w}×{c}"
            );
            assert!(g.tile_rows(g.blocks() - 1).len() <= g.rows);
        }
    }

    /// The fused epilogue (BatchNorm affine, residual, ReLU) gives exactly what applying it to
    /// the unfused output gives, on several blocks, in parallel or not.
    #[test]
    fn fused_epilogue_equals_separate_ops() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut r =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        // 6×5 images: blocks of several images each.
        for (n, threads, hw) in [
            (1, 1, (23, 19)),
            (1, 2, (23, 19)),
            (3, 2, (23, 19)),
            (1, 3, (23, 19)),
            (5, 2, (6, 5)),
            (4, 1, (6, 5)),
        ] {
            let p = params(n, 18, hw, 5, 1);
            let (x, w, b) = (r(p.input_len()), r(p.weight_len()), r(p.c_out));
            let w = filters(&p, &w);
            let (scale, shift, res) = (r(p.c_out), r(p.c_out), r(p.output_len()));
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut plain = vec![f32::NAN; p.output_len()];
                conv2d_forward(&p, &x, &w, Some(&b), None, &mut plain);
                let epi = Epilogue {
                    bn: Some((&scale, &shift)),
                    residual: Some(&res),
                    act: Some(crate::ops::ActivationParams {
                        act: crate::ops::Activation::Relu,
                        alpha: 0.0,
                        beta: 0.0,
                        len: p.output_len(),
                    }),
                };
                let mut fused = vec![f32::NAN; p.output_len()];
                conv2d_forward(&p, &x, &w, Some(&b), Some(epi), &mut fused);
                let pix = p.h_out() * p.w_out();
                for (i, (&f, &v)) in fused.iter().zip(&plain).enumerate() {
                    let c = (i / pix) % p.c_out;
                    let want = (v * scale[c] + shift[c] + res[i]).max(0.0);
                    assert_eq!(
                        f.to_bits(),
                        want.to_bits(),
                        "[{i}] threads {threads}, n {n}"
                    );
                }
            });
        }
    }
}
