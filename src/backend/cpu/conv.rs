//! conv2d forward and input gradient as im2col / col2im around matrix products.
//!
//! Each image is processed in blocks of output pixels: only one block's im2col panel
//! (c_in·k_h·k_w rows × a few hundred pixels) exists at a time, so it stays in cache between
//! being written and being read by the matrix product, instead of a full-image panel (115 MB
//! for VGG16's second conv) making a round trip through memory. The panels (`im2col`,
//! `col2im`, `block_width`) take dilated taps too: grouped_conv.rs builds its wide groups'
//! products from them, one group at a time.

use super::epilogue::Epilogue;
use super::matmul::{inner_parallelism, matmul, matmul_strided, split_batch, Parallelism, View};
use super::pages::prefer_huge_pages;
use super::real::Real;
use super::simd;
use super::winograd;
use crate::ops::Conv2dParams;
use rayon::prelude::*;
use std::ops::Range;

/// Aim for im2col panels of about this many bytes: well inside L3, and large enough that
/// the per-call overhead of the matrix product stays small.
const PANEL_BYTES: usize = 512 * 1024;
/// But never fewer pixels than this per block (deep layers with k_len in the thousands), so
/// each product still has enough rows to amortise reading the whole weight matrix.
pub(super) const MIN_BLOCK: usize = 256;
/// Output bytes per block of a 1×1 conv: inside L2.
const POINTWISE_OUT_BYTES: usize = 256 * 1024;
/// The input gradient's blocks are larger: there the panel is the product's output, and
/// every block reads the whole weight matrix again, which dominates for deep layers.
pub(super) const MIN_BLOCK_BACKWARD: usize = 1024;

/// y = conv(x, w) + b. x: [N, Cin, H, W], w: [Cout, Cin, kh, kw], b: \[Cout\], y: [N, Cout, Ho, Wo].
pub fn conv2d_forward<T: Real>(p: &Conv2dParams, x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T]) {
    conv2d_forward_fused(p, x, w, b, None, y)
}

/// conv2d with an optional epilogue (see [`Epilogue`]).
pub fn conv2d_forward_fused<T: Real>(
    p: &Conv2dParams,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    epi: Option<Epilogue<T>>,
    y: &mut [T],
) {
    let u = winograd::applies(p).then(|| winograd::filters(p, w));
    conv2d_forward_with(p, x, w, u.as_deref(), b, epi, y)
}

/// [`conv2d_forward_fused`] with Winograd's filters (`winograd::filters(p, w)`) given when
/// [`winograd::applies`] to `p`, by a caller that keeps them across calls; None: im2col.
pub fn conv2d_forward_with<T: Real>(
    p: &Conv2dParams,
    x: &[T],
    w: &[T],
    winograd_filters: Option<&[T]>,
    b: Option<&[T]>,
    epi: Option<Epilogue<T>>,
    y: &mut [T],
) {
    assert_eq!(x.len(), p.input_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(y.len(), p.output_len());
    prefer_huge_pages(y);
    if let Some(u) = winograd_filters {
        return winograd::conv2d_forward(p, x, u, b, epi, y);
    }
    let pix = p.h_out() * p.w_out();
    let in_img = p.c_in * p.h_in * p.w_in;
    let out_img = p.c_out * pix;
    let k_len = p.k_len();
    let width = block_width::<T>(p, MIN_BLOCK);
    let batch_parallel = split_batch(p.n);
    // With fewer images than threads, share each image's pixel blocks out over the threads
    // when there are enough of them to balance; otherwise the product itself uses the threads.
    let blocks = pix.div_ceil(width);
    let block_parallel =
        !batch_parallel && !p.is_pointwise() && blocks >= 2 * rayon::current_num_threads();
    let run = |img: usize, xi: &[T], yi: &mut [T]| {
        let epi = epi.map(|e| e.for_image(img, out_img));
        let par = inner_parallelism(batch_parallel);
        let wv = View::row_major(w, k_len);
        // Without a bias the product overwrites the outputs instead of adding to zeros.
        let accumulate = b.is_some();
        if p.is_pointwise() {
            // The input already is the im2col matrix; it is multiplied a block of pixel columns
            // at a time, so the epilogue finds the block's outputs in cache.
            let width = pointwise_block_width::<T>(p);
            for p0 in (0..pix).step_by(width) {
                let cols = width.min(pix - p0);
                if accumulate {
                    fill_bias(yi, pix, b, p0..p0 + cols);
                }
                let xv = View {
                    data: &xi[p0..],
                    rs: pix,
                    cs: 1,
                };
                let dims = (p.c_out, cols, k_len);
                matmul_strided(&mut yi[p0..], pix, dims, wv, xv, accumulate, par);
                if let Some(e) = epi {
                    e.apply(yi, pix, p0..p0 + cols, pix, 0);
                }
            }
            return;
        }
        let mut col = vec![T::zero(); k_len * width];
        for p0 in (0..pix).step_by(width) {
            let cols = width.min(pix - p0);
            let panel = &mut col[..k_len * cols];
            im2col(p, xi, p0, cols, panel);
            if accumulate {
                // Filled block by block, so the product finds the block's outputs in cache.
                fill_bias(yi, pix, b, p0..p0 + cols);
            }
            let dims = (p.c_out, cols, k_len);
            let pv = View::row_major(panel, cols);
            matmul_strided(&mut yi[p0..], pix, dims, wv, pv, accumulate, par);
            if let Some(e) = epi {
                e.apply(yi, pix, p0..p0 + cols, pix, 0);
            }
        }
    };
    if batch_parallel {
        y.par_chunks_mut(out_img)
            .zip(x.par_chunks(in_img))
            .enumerate()
            .for_each(|(img, (yi, xi))| run(img, xi, yi));
    } else if block_parallel {
        for (img, (yi, xi)) in y.chunks_mut(out_img).zip(x.chunks(in_img)).enumerate() {
            let epi = epi.map(|e| e.for_image(img, out_img));
            forward_blocks_in_parallel(p, xi, w, b, epi, width, yi);
        }
    } else {
        y.chunks_mut(out_img)
            .zip(x.chunks(in_img))
            .enumerate()
            .for_each(|(img, (yi, xi))| run(img, xi, yi));
    }
}

/// One image's forward pass with its pixel blocks computed in parallel. Each block's product
/// goes to a scratch [Cout × cols] buffer that is then copied into the block's columns of y
/// (the blocks are strided, interleaved parts of y, so they cannot be written in place
/// without unsafe code); the copy is small next to the product.
fn forward_blocks_in_parallel<T: Real>(
    p: &Conv2dParams,
    xi: &[T],
    w: &[T],
    b: Option<&[T]>,
    epi: Option<Epilogue<T>>,
    width: usize,
    yi: &mut [T],
) {
    let pix = p.h_out() * p.w_out();
    let k_len = p.k_len();
    // blocks[i] = the pieces of every channel's row that belong to block i.
    let mut blocks: Vec<Vec<&mut [T]>> = (0..pix.div_ceil(width))
        .map(|_| Vec::with_capacity(p.c_out))
        .collect();
    for row in yi.chunks_mut(pix) {
        for (piece, block) in row.chunks_mut(width).zip(&mut blocks) {
            block.push(piece);
        }
    }
    let wv = View::row_major(w, k_len);
    blocks.into_par_iter().enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(col, out), (i, rows)| {
            let (p0, cols) = (i * width, width.min(pix - i * width));
            col.resize(k_len * width, T::zero());
            out.resize(p.c_out * width, T::zero());
            let (panel, out) = (&mut col[..k_len * cols], &mut out[..p.c_out * cols]);
            im2col(p, xi, p0, cols, panel);
            fill_bias(out, cols, b, 0..cols);
            let pv = View::row_major(panel, cols);
            matmul(out, (p.c_out, cols, k_len), wv, pv, true, Parallelism::None);
            if let Some(e) = epi {
                e.apply(out, cols, 0..cols, pix, p0);
            }
            for (dst, src) in rows.into_iter().zip(out.chunks_exact(cols)) {
                dst.copy_from_slice(src);
            }
        },
    );
}

/// dx = conv_transpose(dy, w): the gradient of conv2d with respect to its input.
/// dy: [N, Cout, Ho, Wo], w: [Cout, Cin, kh, kw], dx: [N, Cin, H, W].
pub fn conv2d_backward_input<T: Real>(p: &Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) {
    let u = winograd::backward_as_forward(p).map(|_| winograd::backward_filters(p, w));
    conv2d_backward_input_with(p, dy, w, u.as_deref(), dx)
}

/// [`conv2d_backward_input`] with Winograd's filters (`winograd::backward_filters(p, w)`)
/// given when `winograd::backward_as_forward(p)` applies, by a caller that keeps them.
pub fn conv2d_backward_input_with<T: Real>(
    p: &Conv2dParams,
    dy: &[T],
    w: &[T],
    winograd_filters: Option<&[T]>,
    dx: &mut [T],
) {
    assert_eq!(dy.len(), p.output_len());
    assert_eq!(w.len(), p.weight_len());
    assert_eq!(dx.len(), p.input_len());
    prefer_huge_pages(dx);
    if let Some(u) = winograd_filters {
        let q = winograd::backward_as_forward(p).expect("Winograd applies to the input gradient");
        return winograd::conv2d_forward(&q, dy, u, None, None, dx);
    }
    let pix = p.h_out() * p.w_out();
    let in_img = p.c_in * p.h_in * p.w_in;
    let out_img = p.c_out * pix;
    let k_len = p.k_len();
    let width = block_width::<T>(p, MIN_BLOCK_BACKWARD);
    let batch_parallel = split_batch(p.n);
    let run = |dyi: &[T], dxi: &mut [T]| {
        let par = inner_parallelism(batch_parallel);
        let wt = View::transposed(w, k_len);
        if p.is_pointwise() {
            let dims = (k_len, pix, p.c_out);
            matmul(dxi, dims, wt, View::row_major(dyi, pix), false, par);
            return;
        }
        dxi.fill(T::zero());
        let mut col = vec![T::zero(); k_len * width];
        for p0 in (0..pix).step_by(width) {
            let cols = width.min(pix - p0);
            let panel = &mut col[..k_len * cols];
            // Columns p0.. of every output channel: rows of dy `pix` apart.
            let dyv = View {
                data: &dyi[p0..],
                rs: pix,
                cs: 1,
            };
            matmul(panel, (k_len, cols, p.c_out), wt, dyv, false, par);
            col2im(p, panel, p0, cols, dxi);
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

/// Sets pixels `cols` of every channel of one image's output [Cout, pix] to that channel's bias
/// (or 0), ready for the matrix product to accumulate into.
fn fill_bias<T: Real>(yi: &mut [T], pix: usize, b: Option<&[T]>, cols: Range<usize>) {
    for (c, row) in yi.chunks_exact_mut(pix.max(1)).enumerate() {
        row[cols.clone()].fill(b.map_or(T::zero(), |b| b[c]));
    }
}

/// Output pixels per block: about PANEL_BYTES of im2col panel but at least `min_block`, split
/// evenly over the image, rounded up to a multiple of 16 (the matrix product's row tile).
pub(super) fn block_width<T>(p: &Conv2dParams, min_block: usize) -> usize {
    let pix = p.h_out() * p.w_out();
    let target = (PANEL_BYTES / (p.k_len().max(1) * size_of::<T>())).max(min_block);
    let blocks = (pix / target).max(1);
    pix.div_ceil(blocks).next_multiple_of(16).min(pix).max(1)
}

/// Pixel columns per block of a 1×1 conv: about POINTWISE_OUT_BYTES of output block (the
/// epilogue's working set), at least MIN_BLOCK, a multiple of 16.
fn pointwise_block_width<T>(p: &Conv2dParams) -> usize {
    let pix = p.h_out() * p.w_out();
    let target = (POINTWISE_OUT_BYTES / (p.c_out.max(1) * size_of::<T>())).max(MIN_BLOCK);
    let blocks = (pix / target).max(1);
    pix.div_ceil(blocks).next_multiple_of(16).min(pix).max(1)
}

/// The outputs o whose tap at kernel offset k (already dilated) reads an input
/// o·stride + k − pad inside [0, len); the outputs outside this range read padding.
pub(super) fn valid_outputs(
    k: usize,
    stride: usize,
    pad: usize,
    len: usize,
    n_out: usize,
) -> Range<usize> {
    let lo = pad.saturating_sub(k).div_ceil(stride);
    let hi = if len + pad > k {
        ((len + pad - k - 1) / stride + 1).min(n_out)
    } else {
        0
    };
    lo.min(hi)..hi
}

/// Splits the flat pixel range [p0, p0 + cols) into runs inside one output row:
/// (oy, range of ox, offset of the run's first pixel within the block).
fn row_runs(
    p0: usize,
    cols: usize,
    wo: usize,
) -> impl Iterator<Item = (usize, Range<usize>, usize)> {
    let end = p0 + cols;
    let rows = if cols == 0 {
        0..0
    } else {
        p0 / wo..(end - 1) / wo + 1
    };
    rows.map(move |oy| {
        let start = (oy * wo).max(p0);
        let stop = ((oy + 1) * wo).min(end);
        (oy, start - oy * wo..stop - oy * wo, start - p0)
    })
}

/// Pixels [p0, p0 + cols) of the im2col matrix, as a [k_len × cols] panel:
/// col[(ci·kh + ky)·kw + kx][j] = x[ci][oy·s + ky·d − pad][ox·s + kx·d − pad] for pixel
/// p0 + j = oy·Wo + ox (0 where that reads padding; d: the dilation). In-bounds spans are
/// copied as whole slices (stride 1) or strided gathers, without per-element bounds tests.
/// `x` holds the c_in planes of one image (dense) or the c_in / groups of one group
/// (grouped_conv.rs).
pub(super) fn im2col<T: Real>(p: &Conv2dParams, x: &[T], p0: usize, cols: usize, col: &mut [T]) {
    simd::dispatch(
        #[inline(always)]
        || im2col_loops(p, x, p0, cols, col),
    )
}

#[inline(always)]
fn im2col_loops<T: Real>(p: &Conv2dParams, x: &[T], p0: usize, cols: usize, col: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut rows = col.chunks_exact_mut(cols.max(1));
    for plane in x.chunks_exact((p.h_in * p.w_in).max(1)) {
        for ky in 0..p.k_h {
            let kyd = ky * p.dilation_h;
            let valid_y = valid_outputs(kyd, p.stride_h, p.pad_h, p.h_in, ho);
            for kx in 0..p.k_w {
                let kxd = kx * p.dilation_w;
                let valid_x = valid_outputs(kxd, p.stride_w, p.pad_w, p.w_in, wo);
                let row = rows.next().expect("im2col row");
                for (oy, ox, off) in row_runs(p0, cols, wo) {
                    let out = &mut row[off..off + ox.len()];
                    if !valid_y.contains(&oy) {
                        out.fill(T::zero());
                        continue;
                    }
                    let iy = oy * p.stride_h + kyd - p.pad_h;
                    let line = &plane[iy * p.w_in..(iy + 1) * p.w_in];
                    let lo = valid_x.start.clamp(ox.start, ox.end);
                    let hi = valid_x.end.clamp(lo, ox.end);
                    let (head, rest) = out.split_at_mut(lo - ox.start);
                    let (mid, tail) = rest.split_at_mut(hi - lo);
                    head.fill(T::zero());
                    tail.fill(T::zero());
                    if lo < hi {
                        let src = &line[lo * p.stride_w + kxd - p.pad_w..];
                        if p.stride_w == 1 {
                            mid.copy_from_slice(&src[..hi - lo]);
                        } else if p.stride_w == 2 {
                            every_other(&src[..2 * (hi - lo) - 1], mid);
                        } else {
                            for (o, &v) in mid.iter_mut().zip(src.iter().step_by(p.stride_w)) {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// out[i] = src[2i]: stride 2 as pairs, so the compiler vectorizes it (stride-2 convs: the
/// ResNet stem, downsampling 3×3 and 1×1 convs).
#[inline(always)]
fn every_other<T: Real>(src: &[T], out: &mut [T]) {
    let pairs = src.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    let n = pairs.len();
    for (o, pair) in out.iter_mut().zip(pairs) {
        *o = pair[0];
    }
    if let Some(v) = last {
        out[n] = v;
    }
}

/// The adjoint of [`im2col`] for pixels [p0, p0 + cols): dx[ci][iy][ix] += every col entry of
/// the block that reads it. Blocks are visited in order and each in a fixed order, so results
/// are deterministic.
pub(super) fn col2im<T: Real>(p: &Conv2dParams, col: &[T], p0: usize, cols: usize, dx: &mut [T]) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut rows = col.chunks_exact(cols.max(1));
    for plane in dx.chunks_exact_mut((p.h_in * p.w_in).max(1)) {
        for ky in 0..p.k_h {
            let kyd = ky * p.dilation_h;
            let valid_y = valid_outputs(kyd, p.stride_h, p.pad_h, p.h_in, ho);
            for kx in 0..p.k_w {
                let kxd = kx * p.dilation_w;
                let valid_x = valid_outputs(kxd, p.stride_w, p.pad_w, p.w_in, wo);
                let row = rows.next().expect("col2im row");
                for (oy, ox, off) in row_runs(p0, cols, wo) {
                    if !valid_y.contains(&oy) {
                        continue;
                    }
                    let lo = valid_x.start.clamp(ox.start, ox.end);
                    let hi = valid_x.end.clamp(lo, ox.end);
                    if lo == hi {
                        continue;
                    }
                    let iy = oy * p.stride_h + kyd - p.pad_h;
                    let line = &mut plane[iy * p.w_in..(iy + 1) * p.w_in];
                    let src = &row[off + lo - ox.start..off + hi - ox.start];
                    let dst = &mut line[lo * p.stride_w + kxd - p.pad_w..];
                    if p.stride_w == 1 {
                        // A plain slice sum, which vectorizes.
                        for (d, &v) in dst[..src.len()].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst.iter_mut().step_by(p.stride_w).zip(src) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The blocked im2col kernels against direct seven-loop convolutions on odd shapes.

    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn random<T: Real>(n: usize, rng: &mut StdRng) -> Vec<T> {
        (0..n).map(|_| T::of(rng.random_range(-1.0..1.0))).collect()
    }

    /// Calls f(ni, co, oy, ox, ci, iy, ix, ky, kx) for every in-bounds tap of the convolution.
    fn for_each_tap(p: &Conv2dParams, mut f: impl FnMut([usize; 9])) {
        for ni in 0..p.n {
            for co in 0..p.c_out {
                for oy in 0..p.h_out() {
                    for ox in 0..p.w_out() {
                        for ci in 0..p.c_in {
                            for ky in 0..p.k_h {
                                for kx in 0..p.k_w {
                                    let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                                    let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < p.h_in
                                        && (ix as usize) < p.w_in
                                    {
                                        f([ni, co, oy, ox, ci, iy as usize, ix as usize, ky, kx]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks forward and input gradient in type T against f64 references; `tol` is relative
    /// to the sum of the magnitudes of the terms (the scale of the rounding error).
    fn check<T: Real>(p: &Conv2dParams, tol: f64, rng: &mut StdRng) {
        let x = random::<T>(p.input_len(), rng);
        let w = random::<T>(p.weight_len(), rng);
        let b = random::<T>(p.c_out, rng);
        let dy = random::<T>(p.output_len(), rng);
        let (ho, wo) = (p.h_out(), p.w_out());
        let xi =
            |n: usize, c: usize, y: usize, x_: usize| ((n * p.c_in + c) * p.h_in + y) * p.w_in + x_;
        let yi = |n: usize, c: usize, y: usize, x_: usize| ((n * p.c_out + c) * ho + y) * wo + x_;
        let wi = |co: usize, ci: usize, ky: usize, kx: usize| {
            ((co * p.c_in + ci) * p.k_h + ky) * p.k_w + kx
        };

        let mut y_ref: Vec<f64> = (0..p.output_len())
            .map(|i| b[(i / (ho * wo)) % p.c_out].f64())
            .collect();
        let mut y_mag: Vec<f64> = y_ref.iter().map(|v| v.abs()).collect();
        let mut dx_ref = vec![0.0; p.input_len()];
        let mut dx_mag = vec![0.0; p.input_len()];
        for_each_tap(p, |[n, co, oy, ox, ci, iy, ix, ky, kx]| {
            let wv = w[wi(co, ci, ky, kx)].f64();
            let t = wv * x[xi(n, ci, iy, ix)].f64();
            y_ref[yi(n, co, oy, ox)] += t;
            y_mag[yi(n, co, oy, ox)] += t.abs();
            let g = wv * dy[yi(n, co, oy, ox)].f64();
            dx_ref[xi(n, ci, iy, ix)] += g;
            dx_mag[xi(n, ci, iy, ix)] += g.abs();
        });

        let mut y = vec![T::nan(); p.output_len()];
        conv2d_forward(p, &x, &w, Some(&b), &mut y);
        for i in 0..y.len() {
            let err = (y[i].f64() - y_ref[i]).abs();
            assert!(
                err <= tol * (y_mag[i] + 1.0),
                "forward {p:?} [{i}]: {:?} vs {}",
                y[i],
                y_ref[i]
            );
        }
        // Without a bias (the products then overwrite instead of accumulating).
        let mut y = vec![T::nan(); p.output_len()];
        conv2d_forward(p, &x, &w, None, &mut y);
        for i in 0..y.len() {
            let want = y_ref[i] - b[(i / (ho * wo)) % p.c_out].f64();
            let err = (y[i].f64() - want).abs();
            assert!(
                err <= tol * (y_mag[i] + 1.0),
                "forward without bias {p:?} [{i}]: {:?} vs {want}",
                y[i]
            );
        }
        let mut dx = vec![T::nan(); p.input_len()];
        conv2d_backward_input(p, &dy, &w, &mut dx);
        for i in 0..dx.len() {
            let err = (dx[i].f64() - dx_ref[i]).abs();
            assert!(
                err <= tol * (dx_mag[i] + 1.0),
                "backward {p:?} [{i}]: {:?} vs {}",
                dx[i],
                dx_ref[i]
            );
        }
    }

    #[test]
    fn blocked_im2col_matches_direct_convolution() {
        let conv = Conv2dParams::dense;
        let mut rng = StdRng::seed_from_u64(7);
        let mut cases = vec![];
        for n in [1, 3] {
            for k in [1, 3, 5, 7] {
                for stride in [1, 2] {
                    for pad in 0..=2 {
                        let h = rng.random_range(k.max(3)..=13);
                        let w = rng.random_range(k.max(3)..=13);
                        let (c_in, c_out) = (rng.random_range(1..=5), rng.random_range(1..=6));
                        cases.push(conv(
                            n,
                            c_in,
                            (h, w),
                            c_out,
                            (k, k),
                            (stride, stride),
                            (pad, pad),
                        ));
                    }
                }
            }
        }
        // Non-square kernels and strides, then images large enough for several pixel blocks
        // with block edges inside output rows (alone, a 37×41 image's blocks run in parallel).
        cases.push(conv(2, 3, (9, 8), 4, (3, 1), (2, 1), (1, 1)));
        cases.push(conv(3, 40, (37, 41), 5, (3, 3), (1, 1), (1, 1)));
        cases.push(conv(1, 40, (37, 41), 5, (3, 3), (1, 1), (1, 1)));
        cases.push(conv(1, 200, (29, 23), 3, (3, 3), (2, 2), (1, 1)));
        cases.push(conv(2, 3, (61, 67), 4, (7, 7), (2, 2), (3, 3)));
        // Enough pixels for several of the input gradient's larger blocks.
        cases.push(conv(1, 8, (63, 61), 3, (3, 3), (1, 1), (1, 1)));
        // A 1×1 conv with several blocks of pixel columns.
        cases.push(conv(2, 4, (40, 37), 512, (1, 1), (1, 1), (0, 0)));
        // Winograd's (3×3, stride 1, ≥ 16 input channels): odd sizes, images smaller than a
        // tile, padding 0–2, several blocks (small in unit tests), one image or several.
        for (n, c_in, hw, c_out, pad) in [
            (2, 16, (1, 1), 3, 1),
            (1, 17, (5, 6), 18, 0),
            (3, 20, (9, 7), 5, 2),
            (1, 16, (2, 3), 4, 2),
            (1, 24, (31, 17), 7, 1),
            (3, 19, (20, 21), 6, 1),
            // ≥ 16 output channels: the input gradient goes through Winograd too.
            (2, 16, (7, 9), 20, 1),
            (1, 18, (6, 5), 17, 2),
            (1, 16, (8, 7), 16, 0),
        ] {
            cases.push(conv(n, c_in, hw, c_out, (3, 3), (1, 1), (pad, pad)));
        }
        // The thread count decides between image-, block- and product-level parallelism.
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for p in &cases {
                    check::<f32>(p, 1e-5, &mut rng);
                    check::<f64>(p, 1e-12, &mut rng);
                }
            });
        }
    }

    #[test]
    fn block_width_is_at_least_min_block_and_at_most_the_image() {
        for (k_len, pix) in [
            (27, 50176),
            (576, 50176),
            (4608, 784),
            (4608, 196),
            (1, 1),
            (9, 3),
        ] {
            let p = Conv2dParams::dense(1, k_len, (pix, 1), 1, (1, 1), (1, 1), (0, 0));
            for min_block in [MIN_BLOCK, MIN_BLOCK_BACKWARD] {
                let w = block_width::<f32>(&p, min_block);
                assert!(w >= min_block.min(pix) && w <= pix, "{k_len} × {pix}: {w}");
            }
        }
    }
}
