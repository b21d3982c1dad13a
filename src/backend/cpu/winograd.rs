//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). Each 2×2 output tile costs 16
//! multiplications per (input, output) channel pair instead of 36: the input's 4×4 tiles and
//! the 3×3 filters are transformed to 16 "positions", each position is one matrix product
//! [Cout × Cin]·[Cin × tiles], and the products are transformed back to 2×2 outputs. VGG is
//! all such convs, ResNet's bottlenecks about half.
//!
//! The transforms only add and halve, so the result differs from im2col's by rounding
//! (~1e-6 relative in f32; tested against the direct convolution in f32 and f64).
//!
//! Work goes in blocks of whole tile rows, so a block's outputs are one contiguous pixel run
//! of every channel (where the fused epilogue and residual are applied), and its transformed
//! inputs and products (16·(Cin + Cout)·tiles values) stay in cache.

use super::epilogue::Epilogue;
use super::matmul::{matmul, Parallelism, View};
use super::real::Real;
use super::simd;
use crate::ops::Conv2dParams;
use rayon::prelude::*;
use std::ops::Range;

/// With fewer input channels the products are too thin to pay for the transforms (a
/// network's first conv, with 3).
const MIN_CHANNELS: usize = 16;
/// Aim for this much scratch (transformed inputs and products) per block. (Unit tests use
/// small blocks, so that small images take every path: several blocks, blocks in parallel.)
const BLOCK_BYTES: usize = if cfg!(test) { 16 << 10 } else { 1 << 20 };
/// But at least this many tiles per block, so each product amortises packing its weights.
const MIN_TILES: usize = if cfg!(test) { 4 } else { 64 };

/// Below this many tiles per image, the products are too narrow to pay for packing their
/// [Cout × Cin] weights (ResNet's 7×7 layer4: 16 tiles, measured 2× slower than im2col).
const MIN_IMAGE_TILES: usize = if cfg!(test) { 1 } else { 32 };

/// Whether the CPU backend computes `p` with this module.
pub fn applies(p: &Conv2dParams) -> bool {
    p.is_dense()
        && p.k_h == 3
        && p.k_w == 3
        && p.stride_h == 1
        && p.stride_w == 1
        && p.c_in >= MIN_CHANNELS
        && p.h_out().div_ceil(2) * p.w_out().div_ceil(2) >= MIN_IMAGE_TILES
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
    assert_eq!(u.len(), 16 * p.c_out * p.c_in);
    let g = Geometry::new(p);
    let (in_img, out_img) = (p.c_in * p.h_in * p.w_in, p.c_out * g.pix);
    let threads = rayon::current_num_threads();
    let image = |img: usize, xi: &[T], yi: &mut [T], parallel: bool| {
        let epi = epi.map(|e| e.for_image(img, out_img));
        // bands[k] = block k's run of every channel's outputs.
        let mut bands: Vec<Vec<&mut [T]>> = (0..g.blocks())
            .map(|_| Vec::with_capacity(p.c_out))
            .collect();
        for row in yi.chunks_mut(g.pix.max(1)) {
            for (run, band) in row.chunks_mut(g.band_pix()).zip(&mut bands) {
                band.push(run);
            }
        }
        let block = |scratch: &mut Scratch<T>, k: usize, out: Vec<&mut [T]>, par: bool| {
            g.block(p, xi, u, b, epi, k, out, scratch, par)
        };
        if !parallel {
            let mut scratch = Scratch::default();
            for (k, out) in bands.into_iter().enumerate() {
                block(&mut scratch, k, out, false);
            }
        } else if g.blocks() >= 2 * threads {
            bands
                .into_par_iter()
                .enumerate()
                .for_each_init(Scratch::default, |s, (k, out)| block(s, k, out, false));
        } else {
            // Too few blocks to share out: the 16 products of each block run in parallel.
            let mut scratch = Scratch::default();
            for (k, out) in bands.into_iter().enumerate() {
                block(&mut scratch, k, out, true);
            }
        }
    };
    if p.n >= threads {
        y.par_chunks_mut(out_img.max(1))
            .zip(x.par_chunks(in_img.max(1)))
            .enumerate()
            .for_each(|(img, (yi, xi))| image(img, xi, yi, false));
    } else {
        y.chunks_mut(out_img.max(1))
            .zip(x.chunks(in_img.max(1)))
            .enumerate()
            .for_each(|(img, (yi, xi))| image(img, xi, yi, threads > 1));
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
    let q = Conv2dParams {
        c_in: p.c_out,
        h_in: p.h_out(),
        w_in: p.w_out(),
        c_out: p.c_in,
        pad_h: 2 - p.pad_h,
        pad_w: 2 - p.pad_w,
        pad_h_end: 2 - p.pad_h,
        pad_w_end: 2 - p.pad_w,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
        ..*p
    };
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

/// Per-block scratch: transformed inputs [16][Cin][tiles] and products [16][Cout][tiles].
#[derive(Default)]
struct Scratch<T> {
    v: Vec<T>,
    m: Vec<T>,
    /// The transforms' row buffers.
    t: Vec<T>,
}

/// The tiling of one image.
struct Geometry {
    wo: usize,
    pix: usize,
    /// Tiles per row and tile rows.
    tw: usize,
    th: usize,
    /// Tile rows per block.
    rows: usize,
}

impl Geometry {
    fn new(p: &Conv2dParams) -> Self {
        let (ho, wo) = (p.h_out(), p.w_out());
        let (tw, th) = (wo.div_ceil(2), ho.div_ceil(2));
        let per_tile = 16 * (p.c_in + p.c_out) * size_of::<f32>();
        let target = (BLOCK_BYTES / per_tile.max(1)).max(MIN_TILES);
        let rows = target.div_ceil(tw.max(1)).clamp(1, th.max(1));
        // The same number of rows in every block, as far as possible.
        let rows = th.div_ceil(th.div_ceil(rows).max(1)).max(1);
        Self {
            wo,
            pix: ho * wo,
            tw,
            th,
            rows,
        }
    }

    fn blocks(&self) -> usize {
        self.th.div_ceil(self.rows)
    }

    /// Output pixels of a full block: two output rows per tile row.
    fn band_pix(&self) -> usize {
        (2 * self.rows * self.wo).max(1)
    }

    fn tile_rows(&self, k: usize) -> Range<usize> {
        k * self.rows..((k + 1) * self.rows).min(self.th)
    }

    /// Block `k` of one image: transform its tiles, 16 products, transform back into `out`
    /// (block k's run of each channel), then the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn block<T: Real>(
        &self,
        p: &Conv2dParams,
        xi: &[T],
        u: &[T],
        b: Option<&[T]>,
        epi: Option<Epilogue<T>>,
        k: usize,
        mut out: Vec<&mut [T]>,
        s: &mut Scratch<T>,
        parallel: bool,
    ) {
        let rows = self.tile_rows(k);
        let tiles = rows.len() * self.tw;
        s.v.resize(16 * p.c_in * tiles, T::zero());
        s.m.resize(16 * p.c_out * tiles, T::zero());
        let (v, m) = (
            &mut s.v[..16 * p.c_in * tiles],
            &mut s.m[..16 * p.c_out * tiles],
        );
        simd::dispatch(
            #[inline(always)]
            || self.transform_input(p, xi, rows.clone(), v, &mut s.t),
        );
        let product = |(mx, (ux, vx)): (&mut [T], (&[T], &[T]))| {
            let (a, bv) = (View::row_major(ux, p.c_in), View::row_major(vx, tiles));
            matmul(
                mx,
                (p.c_out, tiles, p.c_in),
                a,
                bv,
                false,
                Parallelism::None,
            );
        };
        let (m_len, u_len, v_len) = (p.c_out * tiles, p.c_out * p.c_in, p.c_in * tiles);
        if parallel {
            m.par_chunks_mut(m_len)
                .zip(u.par_chunks(u_len).zip(v.par_chunks(v_len)))
                .for_each(product);
        } else {
            m.chunks_mut(m_len)
                .zip(u.chunks(u_len).zip(v.chunks(v_len)))
                .for_each(product);
        }
        let p0 = 2 * rows.start * self.wo;
        for (co, run) in out.iter_mut().enumerate() {
            let bias = b.map_or(T::zero(), |b| b[co]);
            simd::dispatch(
                #[inline(always)]
                || self.transform_output(co, m, tiles, bias, run, &mut s.t),
            );
            if let Some(e) = epi {
                e.apply_row(co, run, co * self.pix + p0);
            }
        }
    }

    /// v[ξ][ci][t] = (Bᵀ·d·B)[ξ] for the 4×4 input tile d of every tile t of tile rows `rows`,
    /// with Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]. A tile row at a
    /// time, each step a loop over the row's tiles that the compiler vectorizes: the four input
    /// rows are split into even and odd columns (tile tx reads columns 2tx … 2tx + 3), the
    /// columns are transformed (d·B), then the rows (Bᵀ·), straight into the 16 positions.
    #[inline(always)]
    fn transform_input<T: Real>(
        &self,
        p: &Conv2dParams,
        xi: &[T],
        rows: Range<usize>,
        v: &mut [T],
        t: &mut Vec<T>,
    ) {
        let (tw, tiles) = (self.tw, rows.len() * self.tw);
        let pos = p.c_in * tiles;
        // t: one zero-padded input row (tile tx reads its columns 2tx … 2tx + 3), its even
        // and odd columns, then d·B of the 4 rows (16 × tw).
        let width = 2 * tw + 2;
        t.resize(2 * width + 16 * tw, T::zero());
        let (padded, rest) = t.split_at_mut(width);
        let (split, db) = rest.split_at_mut(width);
        let (even, odd) = split.split_at_mut(tw + 1);
        // Columns of the padded row that hold input columns 0 .. w_in.
        let lo = p.pad_w.min(width);
        let hi = (p.pad_w + p.w_in).min(width);
        for (ci, plane) in xi.chunks_exact((p.h_in * p.w_in).max(1)).enumerate() {
            for (r, ty) in rows.clone().enumerate() {
                for (i, out) in db.chunks_exact_mut(4 * tw).enumerate() {
                    let iy = (2 * ty + i) as isize - p.pad_h as isize;
                    padded.fill(T::zero());
                    if iy >= 0 && (iy as usize) < p.h_in && lo < hi {
                        let line = &plane[iy as usize * p.w_in..];
                        padded[lo..hi].copy_from_slice(&line[..hi - lo]);
                    }
                    for ((e, o), pair) in even
                        .iter_mut()
                        .zip(odd.iter_mut())
                        .zip(padded.chunks_exact(2))
                    {
                        (*e, *o) = (pair[0], pair[1]);
                    }
                    // d·B of row i: [a − c, b + c, c − b, b − d] with a, b, c, d = columns
                    // 2tx … 2tx + 3 = even[tx], odd[tx], even[tx + 1], odd[tx + 1].
                    let (o0, rest) = out.split_at_mut(tw);
                    let (o1, rest) = rest.split_at_mut(tw);
                    let (o2, o3) = rest.split_at_mut(tw);
                    let cols = even
                        .iter()
                        .zip(&odd[..])
                        .zip(even[1..].iter().zip(&odd[1..]));
                    let outs = o0
                        .iter_mut()
                        .zip(o1.iter_mut())
                        .zip(o2.iter_mut().zip(o3.iter_mut()));
                    for (((o0, o1), (o2, o3)), ((&a, &b), (&c, &d))) in outs.zip(cols) {
                        *o0 = a - c;
                        *o1 = b + c;
                        *o2 = c - b;
                        *o3 = b - d;
                    }
                }
                // Bᵀ·(d·B): position (i, j) combines rows of column j.
                let at = ci * tiles + r * tw;
                let row = |i: usize, j: usize| &db[(4 * i + j) * tw..(4 * i + j + 1) * tw];
                for j in 0..4 {
                    let (r0, r1, r2, r3) = (row(0, j), row(1, j), row(2, j), row(3, j));
                    let at = |i: usize| (4 * i + j) * pos + at;
                    zip_with(&mut v[at(0)..][..tw], r0, r2, |a, c| a - c);
                    zip_with(&mut v[at(1)..][..tw], r1, r2, |b, c| b + c);
                    zip_with(&mut v[at(2)..][..tw], r2, r1, |c, b| c - b);
                    zip_with(&mut v[at(3)..][..tw], r1, r3, |b, d| b - d);
                }
            }
        }
    }

    /// Channel `co` of a block's outputs: Aᵀ·m·A + bias of every tile, with
    /// Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], written to `run` (the block's output rows of
    /// channel co; tiles past the image's edge are cut). Vectorized over a tile row like
    /// [`Self::transform_input`].
    #[inline(always)]
    fn transform_output<T: Real>(
        &self,
        co: usize,
        m: &[T],
        tiles: usize,
        bias: T,
        run: &mut [T],
        t: &mut Vec<T>,
    ) {
        let (tw, wo) = (self.tw, self.wo);
        let pos = m.len() / 16;
        // t: Aᵀ·m (8 × tw), then the 2×2 outputs (4 × tw).
        t.resize(12 * tw, T::zero());
        let (am, y) = t.split_at_mut(8 * tw);
        for (r, lines) in run.chunks_mut(2 * wo.max(1)).enumerate() {
            let at = co * tiles + r * tw;
            let mv = |i: usize, j: usize| &m[(4 * i + j) * pos + at..][..tw];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mv(0, j), mv(1, j), mv(2, j), mv(3, j));
                let (s0, s1) = am[2 * j * tw..(2 * j + 2) * tw].split_at_mut(tw);
                for tx in 0..tw {
                    s0[tx] = m0[tx] + m1[tx] + m2[tx];
                    s1[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            let s = |j: usize, k: usize| &am[(2 * j + k) * tw..(2 * j + k + 1) * tw];
            for (k, out) in y.chunks_exact_mut(2 * tw).enumerate() {
                let (left, right) = out.split_at_mut(tw);
                let (c0, c1, c2, c3) = (s(0, k), s(1, k), s(2, k), s(3, k));
                for tx in 0..tw {
                    left[tx] = c0[tx] + c1[tx] + c2[tx] + bias;
                    right[tx] = c1[tx] - c2[tx] - c3[tx] + bias;
                }
            }
            for (k, line) in lines.chunks_mut(wo.max(1)).enumerate() {
                let (left, right) = y[2 * k * tw..(2 * k + 2) * tw].split_at(tw);
                let pairs = line.chunks_exact_mut(2);
                for (pair, (&a, &b)) in pairs.zip(left.iter().zip(right)) {
                    pair[0] = a;
                    pair[1] = b;
                }
                if wo % 2 == 1 {
                    line[wo - 1] = left[tw - 1];
                }
            }
        }
    }
}

/// out[k] = f(x[k], y[k]): a loop the compiler vectorizes.
#[inline(always)]
fn zip_with<T: Copy>(out: &mut [T], x: &[T], y: &[T], f: impl Fn(T, T) -> T) {
    for (o, (&x, &y)) in out.iter_mut().zip(x.iter().zip(y)) {
        *o = f(x, y);
    }
}

/// The transformed filters [`conv2d_forward`] takes: u[ξ][co][ci] = (G·g·Gᵀ)[ξ] for every 3×3
/// filter g = w[co][ci], with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]. They depend on
/// the weights only, so a caller that keeps them computes them once per model.
pub fn filters<T: Real>(p: &Conv2dParams, w: &[T]) -> Vec<T> {
    let pos = p.c_out * p.c_in;
    let mut u = vec![T::zero(); 16 * pos];
    let half = T::of(0.5);
    let g_rows = |a: T, b: T, c: T| [a, (a + b + c) * half, (a - b + c) * half, c];
    for (k, g) in w.chunks_exact(9).enumerate() {
        // G·g: column by column.
        let cols: [[T; 4]; 3] = std::array::from_fn(|c| g_rows(g[c], g[3 + c], g[6 + c]));
        for i in 0..4 {
            // Row i of G·g, times Gᵀ.
            let row = g_rows(cols[0][i], cols[1][i], cols[2][i]);
            for (j, val) in row.into_iter().enumerate() {
                u[(4 * i + j) * pos + k] = val;
            }
        }
    }
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
        Conv2dParams {
            n,
            c_in,
            h_in: h,
            w_in: w,
            c_out,
            k_h: 3,
            k_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: pad,
            pad_w: pad,
            pad_h_end: pad,
            pad_w_end: pad,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        }
    }

    #[test]
    fn blocks_cover_every_tile_row_once() {
        for (h, w, c) in [
            (1, 1, 16),
            (5, 6, 17),
            (224, 224, 64),
            (14, 14, 512),
            (75, 9, 20),
        ] {
            let p = params(1, c, (h, w), c, 1);
            let g = Geometry::new(&p);
            let covered: Vec<usize> = (0..g.blocks()).flat_map(|k| g.tile_rows(k)).collect();
            assert_eq!(covered, (0..g.th).collect::<Vec<_>>(), "{h}×{w}×{c}");
            assert_eq!(g.pix.div_ceil(g.band_pix()), g.blocks());
        }
    }

    /// The fused epilogue (BatchNorm affine, residual, ReLU) gives exactly what applying it to
    /// the unfused output gives, on several blocks, in parallel or not.
    #[test]
    fn fused_epilogue_equals_separate_ops() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut r =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        for (n, threads) in [(1, 1), (1, 2), (3, 2), (1, 3)] {
            let p = params(n, 18, (23, 19), 5, 1);
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
