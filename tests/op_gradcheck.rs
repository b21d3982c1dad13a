//! The CPU kernels of the new op families (grouped/depthwise/dilated/asymmetric conv, average
//! and adaptive max pooling, max pooling in ceil mode, the activation table, broadcast binary
//! ops, strided copies, LayerNorm):
//!
//! - every backward against central finite differences of its forward in f64, on odd shapes
//!   with batch ≥ 2: with L(x) = Σ dy·f(x), the analytic gradient backward(dy) must equal
//!   (L(x + h·e_i) − L(x − h·e_i)) / 2h (h = 1e-5, `common::check_fd`, 300 random
//!   coordinates). Tolerance 1e-7 + 1e-6·|ref| throughout: for the ops that are linear in the
//!   checked input (conv, pooling away from ties, binary ops, copies) the quotient is exact up
//!   to f64 rounding (~1e-10 at these magnitudes); for the smooth ones (activations away from
//!   their breakpoints, LayerNorm) its truncation error h²/6·|f'''| is ~1e-10 too, the third
//!   derivatives being O(1)–O(10) on the inputs used. Max-pool ties and activation
//!   breakpoints, where the derivative is a convention, are checked exactly instead;
//! - every forward against a naive f64 loop written here, in f64 and in f32, each tolerance
//!   stated where it is used;
//! - outputs are poisoned with NaN before every kernel call, so an element a kernel fails to
//!   write fails the comparison;
//! - the conv, pooling, binary-reduction and LayerNorm kernels give bit-identical results
//!   with 1 and 3 rayon threads.

use gradcam::internal::backend::cpu::{
    activation, binary, conv, grouped_conv, layer_norm, layout, pool,
};
use gradcam::internal::ops::*;

mod common;
use common::{assert_bits_eq, in_threads};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// (samples, atol, rtol) of every finite-difference check (see the header).
const FD: (usize, f64, f64) = (300, 1e-7, 1e-6);

fn random(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Distinct values at least 1e-2 apart (no ties), shuffled.
fn spread(n: usize, rng: &mut StdRng) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|i| (i as f64 - n as f64 / 2.0 + 0.5) * 0.01 + rng.random_range(-0.002..0.002))
        .collect();
    v.shuffle(rng);
    v
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `analytic` = d(Σ dy·forward(v))/dv against central differences.
#[track_caller]
fn fd(
    what: &str,
    v: &[f64],
    analytic: &[f64],
    dy: &[f64],
    forward: impl Fn(&[f64]) -> Vec<f64>,
    rng: &mut StdRng,
) {
    common::check_fd(what, v, analytic, |v| dot(&forward(v), dy), FD, rng);
}

/// |got − want| ≤ tol·scale for every element (scale: the magnitude the rounding error is
/// relative to); NaN (an unwritten, poisoned element) fails.
#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        assert!(
            err <= tol * scale[i],
            "{what} [{i}]: {} vs {} (error {err:e}, allowed {:e})",
            got[i],
            want[i],
            tol * scale[i]
        );
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// A conv from its groups and per-group widths; `pads` = (left, right, top, bottom), the
/// order of `nn.ZeroPad2d`.
#[allow(clippy::too_many_arguments)]
fn conv_p(
    n: usize,
    groups: usize,
    (cig, cog): (usize, usize),
    (h_in, w_in): (usize, usize),
    (k_h, k_w): (usize, usize),
    (stride_h, stride_w): (usize, usize),
    (left, right, top, bottom): (usize, usize, usize, usize),
    (dilation_h, dilation_w): (usize, usize),
) -> Conv2dParams {
    let (c_in, c_out) = (groups * cig, groups * cog);
    Conv2dParams::dense(
        n,
        c_in,
        (h_in, w_in),
        c_out,
        (k_h, k_w),
        (stride_h, stride_w),
        (0, 0),
    )
    .with_padding([top, left, bottom, right])
    .with_dilation((dilation_h, dilation_w))
    .with_groups(groups)
}

/// The cases every conv check runs: groups 2 and 3 with several channels per group,
/// depthwise (3×3, 5×5, 7×7, stride 1–3), a channel multiplier, dilation 2, stride 2,
/// asymmetric pads (0,1,0,1) and (1,2,0,1), 1×7 / 7×1 kernels, groups = 1 with dilation or
/// asymmetric pads, wide groups (the im2col route), and rows wide enough for every register
/// tile width.
fn conv_cases() -> Vec<(&'static str, Conv2dParams)> {
    vec![
        (
            "groups 2",
            conv_p(2, 2, (3, 2), (9, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "groups 3 stride 2",
            conv_p(3, 3, (2, 3), (8, 11), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "depthwise 3x3",
            conv_p(2, 5, (1, 1), (13, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "depthwise 5x5 s2",
            conv_p(2, 4, (1, 1), (11, 12), (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),
        ),
        (
            "depthwise 7x7",
            conv_p(2, 3, (1, 1), (9, 9), (7, 7), (1, 1), (3, 3, 3, 3), (1, 1)),
        ),
        (
            "depthwise s3",
            conv_p(2, 2, (1, 1), (10, 11), (3, 3), (3, 3), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "multiplier 2",
            conv_p(2, 3, (1, 2), (7, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "dilation 2",
            conv_p(2, 2, (2, 2), (10, 9), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
        ),
        (
            "dilation 2 stride 2",
            conv_p(2, 3, (1, 1), (11, 12), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2)),
        ),
        (
            "groups 1 dilation (2,1)",
            conv_p(2, 1, (3, 4), (9, 8), (3, 3), (1, 1), (1, 1, 2, 2), (2, 1)),
        ),
        (
            "pads (0,1,0,1) s2",
            conv_p(2, 4, (1, 1), (8, 8), (3, 3), (2, 2), (0, 1, 0, 1), (1, 1)),
        ),
        (
            "pads (1,2,0,1)",
            conv_p(2, 2, (3, 2), (7, 9), (3, 3), (1, 1), (1, 2, 0, 1), (1, 1)),
        ),
        (
            "groups 1 pads (0,1,0,1)",
            conv_p(3, 1, (3, 5), (9, 8), (3, 3), (2, 2), (0, 1, 0, 1), (1, 1)),
        ),
        (
            "1x7",
            conv_p(2, 2, (2, 3), (6, 11), (1, 7), (1, 1), (3, 3, 0, 0), (1, 1)),
        ),
        (
            "7x1 depthwise",
            conv_p(2, 3, (1, 1), (11, 6), (7, 1), (1, 1), (0, 0, 3, 3), (1, 1)),
        ),
        (
            "wide groups",
            conv_p(2, 2, (34, 3), (6, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "wide groups 1 dilated",
            conv_p(2, 1, (40, 3), (7, 8), (3, 3), (1, 2), (2, 1, 2, 0), (2, 2)),
        ),
        (
            "wide rows",
            conv_p(2, 2, (1, 1), (4, 75), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "wide rows s2",
            conv_p(2, 2, (1, 1), (4, 75), (3, 3), (1, 2), (1, 1, 1, 1), (1, 1)),
        ),
        (
            "8 outputs per group",
            conv_p(2, 2, (3, 8), (5, 41), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ),
    ]
}

/// The definition in f64: y[n][o][oy][ox] = b[o] + Σ w·x over the group's input channels and
/// the in-bounds taps; also Σ|terms| per output, the scale of the rounding error.
fn conv_reference(p: &Conv2dParams, x: &[f64], w: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
    let mut y = vec![0.0; p.output_len()];
    let mut mag = vec![0.0; p.output_len()];
    for n in 0..p.n {
        for o in 0..p.c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let at = ((n * p.c_out + o) * ho + oy) * wo + ox;
                    let (mut s, mut m) = (b[o], b[o].abs());
                    for ci in 0..cig {
                        let c = o / cog * cig + ci;
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
                                let xv = x[((n * p.c_in + c) * p.h_in + iy as usize) * p.w_in
                                    + ix as usize];
                                let t = w[((o * cig + ci) * p.k_h + ky) * p.k_w + kx] * xv;
                                s += t;
                                m += t.abs();
                            }
                        }
                    }
                    y[at] = s;
                    mag[at] = m;
                }
            }
        }
    }
    (y, mag)
}

fn conv_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &Conv2dParams,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
) -> Vec<T> {
    let mut y = vec![T::nan(); p.output_len()];
    grouped_conv::conv2d_forward(p, x, w, b, &mut y);
    y
}

#[test]
fn grouped_conv_forward_matches_the_definition() {
    let mut rng = StdRng::seed_from_u64(21);
    for (name, p) in conv_cases() {
        assert!(p.fits() && !p.is_dense(), "{name}: {p:?}");
        let x = random(p.input_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let b = random(p.c_out, &mut rng);
        let (y_ref, mag) = conv_reference(&p, &x, &w, &b);
        // f64: the same sum in another order; rounding ~1e-16 of Σ|terms|.
        let y = conv_forward(&p, &x, &w, Some(&b));
        close(&format!("{name} f64"), &y, &y_ref, &mag, 1e-13);
        let zero = vec![0.0; p.c_out];
        let (y_nb, mag_nb) = conv_reference(&p, &x, &w, &zero);
        let y = conv_forward(&p, &x, &w, None);
        close(
            &format!("{name} f64 without bias"),
            &y,
            &y_nb,
            &mag_nb,
            1e-13,
        );
        // f32: inputs rounded to f32 first, so only the kernel's own rounding remains; a sum
        // of k terms rounds to ~√k·6e-8 of Σ|terms| (k ≤ 306 here), 1e-5 leaves margin for
        // the worst case.
        let (x32, w32, b32) = (f32s(&x), f32s(&w), f32s(&b));
        let (y_ref, mag) = conv_reference(&p, &widen(&x32), &widen(&w32), &widen(&b32));
        let y = conv_forward(&p, &x32, &w32, Some(&b32));
        close(&format!("{name} f32"), &widen(&y), &y_ref, &mag, 1e-5);
    }
}

#[test]
fn grouped_conv_with_groups_1_agrees_with_the_dense_kernel() {
    let mut rng = StdRng::seed_from_u64(22);
    // A dense conv is handed to conv.rs: the very same result.
    let dense = Conv2dParams::dense(2, 5, (9, 11), 4, (3, 3), (2, 2), (1, 1));
    let x = f32s(&random(dense.input_len(), &mut rng));
    let w = f32s(&random(dense.weight_len(), &mut rng));
    let b = f32s(&random(dense.c_out, &mut rng));
    let mut y_dense = vec![f32::NAN; dense.output_len()];
    conv::conv2d_forward(&dense, &x, &w, Some(&b), &mut y_dense);
    assert_bits_eq("dense", &conv_forward(&dense, &x, &w, Some(&b)), &y_dense);
    // One more zero column and row after an odd-sized input at stride 2 adds no output and
    // is never read, so the asymmetric conv (taking the direct route, and with 40 input
    // channels the im2col route) computes the dense conv's outputs, in another order:
    // f32 rounding, 1e-5 of Σ|terms|.
    for c_in in [5, 40] {
        let dense = Conv2dParams::dense(2, c_in, (9, 11), 4, (3, 3), (2, 2), (1, 1));
        let asym = dense.with_padding([1, 1, 2, 2]);
        assert_eq!((asym.h_out(), asym.w_out()), (dense.h_out(), dense.w_out()));
        let x = f32s(&random(dense.input_len(), &mut rng));
        let w = f32s(&random(dense.weight_len(), &mut rng));
        let b = f32s(&random(dense.c_out, &mut rng));
        let mut y_dense = vec![f32::NAN; dense.output_len()];
        conv::conv2d_forward(&dense, &x, &w, Some(&b), &mut y_dense);
        let (_, mag) = conv_reference(&dense, &widen(&x), &widen(&w), &widen(&b));
        let y = conv_forward(&asym, &x, &w, Some(&b));
        close(
            &format!("asymmetric vs dense, c_in {c_in}"),
            &widen(&y),
            &widen(&y_dense),
            &mag,
            1e-5,
        );
    }
}

#[test]
fn grouped_conv_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(23);
    for (name, p) in conv_cases() {
        let x = random(p.input_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let b = random(p.c_out, &mut rng);
        let dy = random(p.output_len(), &mut rng);
        let mut dx = vec![f64::NAN; p.input_len()];
        grouped_conv::conv2d_backward_input(&p, &dy, &w, &mut dx);
        let fwd_x = |x: &[f64]| conv_forward(&p, x, &w, Some(&b));
        fd(&format!("{name} input"), &x, &dx, &dy, fwd_x, &mut rng);
        let mut dw = vec![f64::NAN; p.weight_len()];
        grouped_conv::conv2d_backward_weight(&p, &x, &dy, &mut dw);
        let fwd_w = |w: &[f64]| conv_forward(&p, &x, w, Some(&b));
        fd(&format!("{name} weight"), &w, &dw, &dy, fwd_w, &mut rng);
    }
}

#[test]
fn grouped_conv_is_bit_identical_on_1_and_3_threads() {
    let mut rng = StdRng::seed_from_u64(24);
    let mut cases = conv_cases();
    // Enough planes and pixels for many parallel jobs.
    cases.push((
        "big depthwise",
        conv_p(
            3,
            24,
            (1, 1),
            (40, 37),
            (3, 3),
            (2, 2),
            (0, 1, 0, 1),
            (1, 1),
        ),
    ));
    cases.push((
        "big grouped",
        conv_p(2, 8, (4, 4), (30, 29), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ));
    for (name, p) in cases {
        let x = f32s(&random(p.input_len(), &mut rng));
        let w = f32s(&random(p.weight_len(), &mut rng));
        let b = f32s(&random(p.c_out, &mut rng));
        let dy = f32s(&random(p.output_len(), &mut rng));
        let run = || {
            let y = conv_forward(&p, &x, &w, Some(&b));
            let mut dx = vec![f32::NAN; p.input_len()];
            grouped_conv::conv2d_backward_input(&p, &dy, &w, &mut dx);
            let mut dw = vec![f32::NAN; p.weight_len()];
            grouped_conv::conv2d_backward_weight(&p, &x, &dy, &mut dw);
            (y, dx, dw)
        };
        let (y1, dx1, dw1) = in_threads(1, run);
        let (y3, dx3, dw3) = in_threads(3, run);
        assert_bits_eq(&format!("{name} forward"), &y1, &y3);
        assert_bits_eq(&format!("{name} input gradient"), &dx1, &dx3);
        assert_bits_eq(&format!("{name} weight gradient"), &dw1, &dw3);
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling

fn avg_p(
    (n, c, h_in, w_in): (usize, usize, usize, usize),
    (k_h, k_w): (usize, usize),
    stride: usize,
    pad: usize,
    ceil_mode: bool,
    count_include_pad: bool,
) -> AvgPool2dParams {
    AvgPool2dParams {
        window: PoolWindow {
            n,
            c,
            h_in,
            w_in,
            k_h,
            k_w,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
            ceil_mode,
        },
        count_include_pad,
    }
}

/// count_include_pad both ways, padding, ceil-mode windows that hang over the input's end
/// (with and without padding), a non-square kernel.
fn avg_cases() -> Vec<AvgPool2dParams> {
    let mut v = vec![];
    for cip in [true, false] {
        v.push(avg_p((2, 3, 7, 9), (3, 3), 2, 1, false, cip));
        v.push(avg_p((2, 2, 5, 5), (3, 3), 2, 1, true, cip));
        v.push(avg_p((3, 2, 6, 7), (2, 2), 2, 0, true, cip));
        v.push(avg_p((2, 2, 8, 6), (3, 3), 3, 1, true, cip));
        v.push(avg_p((2, 3, 9, 8), (3, 2), 1, 1, false, cip));
        v.push(avg_p((2, 2, 10, 40), (2, 2), 2, 0, true, cip));
    }
    v
}

/// PyTorch's avg_pool2d loop: hstart = oh·s − pad, hend = min(hstart + k, H + pad),
/// pool_size = (hend − hstart)(wend − wstart), then clipped to the input; the divisor is
/// pool_size with count_include_pad, else the clipped window's size.
fn avg_reference(a: &AvgPool2dParams, x: &[f64]) -> Vec<f64> {
    let p = &a.window;
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut y = vec![];
    for plane in x.chunks(p.h_in * p.w_in) {
        for oy in 0..ho {
            for ox in 0..wo {
                let hs = (oy * p.stride_h) as isize - p.pad_h as isize;
                let ws = (ox * p.stride_w) as isize - p.pad_w as isize;
                let he = (hs + p.k_h as isize).min((p.h_in + p.pad_h) as isize);
                let we = (ws + p.k_w as isize).min((p.w_in + p.pad_w) as isize);
                let pool_size = (he - hs) * (we - ws);
                let (hs, ws) = (hs.max(0), ws.max(0));
                let (he, we) = (he.min(p.h_in as isize), we.min(p.w_in as isize));
                let mut s = 0.0;
                for iy in hs..he {
                    for ix in ws..we {
                        s += plane[iy as usize * p.w_in + ix as usize];
                    }
                }
                let div = if a.count_include_pad {
                    pool_size
                } else {
                    (he - hs) * (we - ws)
                };
                y.push(s / div as f64);
            }
        }
    }
    y
}

fn avg_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &AvgPool2dParams,
    x: &[T],
) -> Vec<T> {
    let mut y = vec![T::nan(); p.window.output_len()];
    pool::avg_pool2d_forward(p, x, &mut y);
    y
}

#[test]
fn avg_pool2d_forward_matches_pytorch_loop() {
    let mut rng = StdRng::seed_from_u64(31);
    // A hand-checked case: 5×5 ones, k3 s2 p1, ceil mode → 3×3 outputs. The corner window
    // holds 2×2 ones; with padding counted its divisor is 9 (4/9), without it 4 (1). The
    // last window starts at 3 and ends at min(6, 5 + 1) = 6: with padding counted its
    // divisor is 3 per axis (the overhang past the padding does not count).
    let p = avg_p((1, 1, 5, 5), (3, 3), 2, 1, true, true);
    let y = avg_forward(&p, &[1.0f64; 25]);
    assert_eq!((p.window.h_out(), p.window.w_out()), (3, 3));
    assert_eq!(y[0], 4.0 / 9.0);
    assert_eq!(y[4], 1.0);
    assert_eq!(y[8], 4.0 / 9.0);
    let q = AvgPool2dParams {
        count_include_pad: false,
        ..p
    };
    assert!(avg_forward(&q, &[1.0f64; 25]).iter().all(|&v| v == 1.0));
    for p in avg_cases() {
        let x = random(p.window.input_len(), &mut rng);
        let y_ref = avg_reference(&p, &x);
        let ones = vec![1.0; y_ref.len()];
        // f64: the same window sum and division: exact up to the summation order (1e-15).
        close(
            &format!("{p:?} f64"),
            &avg_forward(&p, &x),
            &y_ref,
            &ones,
            1e-15,
        );
        // f32: a sum of ≤ 9 terms of magnitude ≤ 1 and a division: ≤ 1e-6 absolute.
        let x32 = f32s(&x);
        let y_ref = avg_reference(&p, &widen(&x32));
        close(
            &format!("{p:?} f32"),
            &widen(&avg_forward(&p, &x32)),
            &y_ref,
            &ones,
            1e-6,
        );
    }
}

#[test]
fn avg_pool2d_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(32);
    for p in avg_cases() {
        let x = random(p.window.input_len(), &mut rng);
        let dy = random(p.window.output_len(), &mut rng);
        let mut dx = vec![f64::NAN; p.window.input_len()];
        pool::avg_pool2d_backward_input(&p, &dy, &mut dx);
        fd(
            &format!("{p:?}"),
            &x,
            &dx,
            &dy,
            |x| avg_forward(&p, x),
            &mut rng,
        );
    }
}

fn max_p(
    (n, c, h_in, w_in): (usize, usize, usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    ceil_mode: bool,
) -> MaxPool2dParams {
    MaxPool2dParams {
        n,
        c,
        h_in,
        w_in,
        k_h: k,
        k_w: k,
        stride_h: stride,
        stride_w: stride,
        pad_h: pad,
        pad_w: pad,
        ceil_mode,
    }
}

fn max_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &MaxPool2dParams,
    x: &[T],
) -> (Vec<T>, Vec<u32>) {
    let mut y = vec![T::nan(); p.output_len()];
    let mut idx = vec![u32::MAX; p.output_len()];
    pool::max_pool2d_forward(p, x, &mut y, &mut idx);
    (y, idx)
}

/// First maximum of each window (clipped to the input) in row-major window order.
fn window_argmax(
    x: &[f64],
    (h_in, w_in): (usize, usize),
    windows: impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)>,
) -> Vec<u32> {
    windows
        .map(|(ry, rx)| {
            let mut best = (f64::NEG_INFINITY, u32::MAX);
            for iy in ry {
                for ix in rx.clone() {
                    let i = iy * w_in + ix;
                    if best.1 == u32::MAX || x[i] > best.0 {
                        best = (x[i], i as u32);
                    }
                }
            }
            assert!(best.1 != u32::MAX && (best.1 as usize) < h_in * w_in);
            best.1
        })
        .collect()
}

/// The windows of a max pool, clipped to the input, in output order.
fn max_windows(
    p: &MaxPool2dParams,
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
    let clip = |o: usize, k: usize, s: usize, pad: usize, len: usize| {
        let start = (o * s) as isize - pad as isize;
        start.max(0) as usize..((start + k as isize) as usize).min(len)
    };
    (0..p.h_out()).flat_map(move |oy| {
        (0..p.w_out()).map(move |ox| {
            (
                clip(oy, p.k_h, p.stride_h, p.pad_h, p.h_in),
                clip(ox, p.k_w, p.stride_w, p.pad_w, p.w_in),
            )
        })
    })
}

/// dx of an argmax pooling: dy[o] added to x[argmax[o]], in output order.
fn scatter(plane_in: usize, planes: usize, argmax: &[u32], dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; plane_in * planes];
    let per = argmax.len() / planes;
    for (o, (&i, &g)) in argmax.iter().zip(dy).enumerate() {
        dx[o / per * plane_in + i as usize] += g;
    }
    dx
}

#[test]
fn max_pool2d_ceil_mode_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(33);
    for p in [
        max_p((2, 3, 5, 5), 2, 2, 0, true),
        max_p((2, 2, 7, 8), 3, 2, 1, true),
        max_p((3, 2, 9, 6), 3, 2, 0, true),
        max_p((2, 2, 12, 7), 3, 3, 1, true),
    ] {
        let x = spread(p.input_len(), &mut rng);
        let (y, idx) = max_forward(&p, &x);
        // The forward against the definition: first maximum of each clipped window.
        let plane = p.h_in * p.w_in;
        let want: Vec<u32> = x
            .chunks(plane)
            .flat_map(|xp| window_argmax(xp, (p.h_in, p.w_in), max_windows(&p)))
            .collect();
        assert_eq!(idx, want, "{p:?} argmax");
        let per = p.h_out() * p.w_out();
        for (o, (&v, &i)) in y.iter().zip(&idx).enumerate() {
            assert_eq!(v, x[o / per * plane + i as usize], "{p:?} max [{o}]");
        }
        let dy = random(p.output_len(), &mut rng);
        let mut dx = vec![f64::NAN; p.input_len()];
        pool::max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
        fd(
            &format!("{p:?}"),
            &x,
            &dx,
            &dy,
            |x| max_forward(&p, x).0,
            &mut rng,
        );
    }
}

#[test]
fn max_pool2d_ceil_mode_ties_go_to_the_first_maximum() {
    // 5×5 ones, k2 s2, ceil mode: 3×3 windows, the last row and column clipped to one
    // element; each window's gradient goes to its first (top-left) element.
    let p = max_p((2, 1, 5, 5), 2, 2, 0, true);
    let (_, idx) = max_forward(&p, &[1.0f32; 50]);
    let corners: Vec<u32> = [0, 2, 4, 10, 12, 14, 20, 22, 24].to_vec();
    assert_eq!(idx, [corners.clone(), corners].concat());
    // 6×6 ones with a single 2 at (2, 2), k3 s2, ceil mode: windows [0,3), [2,5), [4,6)
    // per axis. The four windows holding (2, 2) pick it; the others their top-left element.
    let p = max_p((1, 1, 6, 6), 3, 2, 0, true);
    let mut x = vec![1.0f32; 36];
    x[14] = 2.0;
    let (y, idx) = max_forward(&p, &x);
    assert_eq!(idx, [14, 14, 4, 14, 14, 16, 24, 26, 28]);
    assert_eq!(y, [2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]);
    let dy: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let mut dx = vec![f32::NAN; 36];
    pool::max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
    let mut want = vec![0.0f32; 36];
    want[14] = 1.0 + 2.0 + 4.0 + 5.0;
    (want[4], want[16], want[24], want[26], want[28]) = (3.0, 6.0, 7.0, 8.0, 9.0);
    assert_eq!(dx, want);
}

fn adaptive_p(
    (n, c, h_in, w_in): (usize, usize, usize, usize),
    (h_out, w_out): (usize, usize),
) -> AdaptivePool2dParams {
    AdaptivePool2dParams {
        n,
        c,
        h_in,
        w_in,
        h_out,
        w_out,
    }
}

fn adaptive_windows(
    p: &AdaptivePool2dParams,
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
    // floor(i·in/out) .. ceil((i+1)·in/out), written out here rather than taken from ops.
    let win = |i: usize, len_in: usize, len_out: usize| {
        i * len_in / len_out..((i + 1) * len_in).div_ceil(len_out)
    };
    (0..p.h_out).flat_map(move |oy| {
        (0..p.w_out).map(move |ox| (win(oy, p.h_in, p.h_out), win(ox, p.w_in, p.w_out)))
    })
}

fn adaptive_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &AdaptivePool2dParams,
    x: &[T],
) -> (Vec<T>, Vec<u32>) {
    let mut y = vec![T::nan(); p.output_len()];
    let mut idx = vec![u32::MAX; p.output_len()];
    pool::adaptive_max_pool2d_forward(p, x, &mut y, &mut idx);
    (y, idx)
}

/// Overlapping windows (5 → 3), replicating ones (3 → 5), both at once, and a global pool.
fn adaptive_cases() -> Vec<AdaptivePool2dParams> {
    vec![
        adaptive_p((2, 3, 5, 5), (3, 3)),
        adaptive_p((2, 2, 3, 3), (5, 5)),
        adaptive_p((3, 2, 5, 3), (3, 5)),
        adaptive_p((2, 2, 7, 6), (1, 1)),
        adaptive_p((2, 2, 9, 8), (4, 3)),
    ]
}

#[test]
fn adaptive_max_pool2d_matches_the_definition_and_finite_differences() {
    let mut rng = StdRng::seed_from_u64(34);
    for p in adaptive_cases() {
        let x = spread(p.input_len(), &mut rng);
        let (y, idx) = adaptive_forward(&p, &x);
        let plane = p.h_in * p.w_in;
        let want: Vec<u32> = x
            .chunks(plane)
            .flat_map(|xp| window_argmax(xp, (p.h_in, p.w_in), adaptive_windows(&p)))
            .collect();
        assert_eq!(idx, want, "{p:?} argmax");
        let per = p.h_out * p.w_out;
        for (o, (&v, &i)) in y.iter().zip(&idx).enumerate() {
            assert_eq!(v, x[o / per * plane + i as usize], "{p:?} max [{o}]");
        }
        let dy = random(p.output_len(), &mut rng);
        let mut dx = vec![f64::NAN; p.input_len()];
        pool::adaptive_max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
        fd(
            &format!("{p:?}"),
            &x,
            &dx,
            &dy,
            |x| adaptive_forward(&p, x).0,
            &mut rng,
        );
    }
}

#[test]
fn adaptive_max_pool2d_ties_go_to_the_first_maximum() {
    let mut rng = StdRng::seed_from_u64(35);
    for p in adaptive_cases() {
        // Three distinct values: most windows hold ties.
        let x: Vec<f64> = (0..p.input_len())
            .map(|_| rng.random_range(0..3) as f64)
            .collect();
        let (_, idx) = adaptive_forward(&p, &x);
        let plane = p.h_in * p.w_in;
        let want: Vec<u32> = x
            .chunks(plane)
            .flat_map(|xp| window_argmax(xp, (p.h_in, p.w_in), adaptive_windows(&p)))
            .collect();
        assert_eq!(idx, want, "{p:?} argmax");
        // Small integers: the scattered sums are exact.
        let dy: Vec<f64> = (0..p.output_len()).map(|i| (i % 7) as f64).collect();
        let mut dx = vec![f64::NAN; p.input_len()];
        pool::adaptive_max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
        assert_eq!(dx, scatter(plane, p.n * p.c, &want, &dy), "{p:?} gradient");
    }
}

#[test]
fn pooling_is_bit_identical_on_1_and_3_threads() {
    let mut rng = StdRng::seed_from_u64(36);
    let mut avg = avg_cases();
    avg.push(avg_p((4, 16, 30, 31), (3, 3), 2, 1, true, false));
    for p in avg {
        let x = f32s(&random(p.window.input_len(), &mut rng));
        let dy = f32s(&random(p.window.output_len(), &mut rng));
        let run = || {
            let mut dx = vec![f32::NAN; p.window.input_len()];
            pool::avg_pool2d_backward_input(&p, &dy, &mut dx);
            (avg_forward(&p, &x), dx)
        };
        let ((y1, dx1), (y3, dx3)) = (in_threads(1, run), in_threads(3, run));
        assert_bits_eq(&format!("{p:?} forward"), &y1, &y3);
        assert_bits_eq(&format!("{p:?} backward"), &dx1, &dx3);
    }
    for p in [
        max_p((4, 16, 31, 30), 3, 2, 1, true),
        max_p((2, 3, 9, 8), 2, 2, 0, true),
    ] {
        let x = f32s(&random(p.input_len(), &mut rng));
        let dy = f32s(&random(p.output_len(), &mut rng));
        let run = || {
            let (y, idx) = max_forward(&p, &x);
            let mut dx = vec![f32::NAN; p.input_len()];
            pool::max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
            (y, idx, dx)
        };
        let ((y1, i1, dx1), (y3, i3, dx3)) = (in_threads(1, run), in_threads(3, run));
        assert_bits_eq(&format!("{p:?} forward"), &y1, &y3);
        assert_eq!(i1, i3, "{p:?} argmax");
        assert_bits_eq(&format!("{p:?} backward"), &dx1, &dx3);
    }
    let mut adaptive = adaptive_cases();
    adaptive.push(adaptive_p((4, 16, 13, 14), (7, 7)));
    for p in adaptive {
        let x = f32s(&random(p.input_len(), &mut rng));
        let dy = f32s(&random(p.output_len(), &mut rng));
        let run = || {
            let (y, idx) = adaptive_forward(&p, &x);
            let mut dx = vec![f32::NAN; p.input_len()];
            pool::adaptive_max_pool2d_backward_input(&p, &idx, &dy, &mut dx);
            (y, idx, dx)
        };
        let ((y1, i1, dx1), (y3, i3, dx3)) = (in_threads(1, run), in_threads(3, run));
        assert_bits_eq(&format!("{p:?} forward"), &y1, &y3);
        assert_eq!(i1, i3, "{p:?} argmax");
        assert_bits_eq(&format!("{p:?} backward"), &dx1, &dx3);
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// (alpha, beta) for each row: non-default parameters where a row has them.
fn act_params(act: Activation) -> (f32, f32) {
    match act {
        Activation::Hardtanh => (-0.5, 2.0),
        Activation::LeakyRelu => (0.1, 0.0),
        Activation::Elu => (1.25, 0.0),
        _ => (0.0, 0.0),
    }
}

/// The points where a row's derivative is a convention, with PyTorch's value there (the
/// table's header lists them).
fn breakpoints(act: Activation) -> Vec<(f64, f64)> {
    let (alpha, beta) = act_params(act);
    let (alpha, beta) = (alpha as f64, beta as f64);
    match act {
        Activation::Relu => vec![(0.0, 0.0)],
        Activation::Relu6 => vec![(0.0, 0.0), (6.0, 0.0)],
        Activation::Hardtanh => vec![(alpha, 0.0), (beta, 0.0)],
        Activation::LeakyRelu => vec![(0.0, alpha)],
        Activation::Elu => vec![(0.0, alpha)],
        Activation::Hardswish => vec![(-3.0, 0.0), (3.0, 1.0)],
        Activation::Hardsigmoid => vec![(-3.0, 0.0), (3.0, 0.0)],
        _ => vec![],
    }
}

fn act_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &ActivationParams,
    x: &[T],
) -> Vec<T> {
    let mut y = vec![T::nan(); x.len()];
    activation::activation_forward(p, x, &mut y);
    y
}

fn act_backward(p: &ActivationParams, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let saved = match p.act.saved() {
        Saved::Input => x.to_vec(),
        Saved::Output => act_forward(p, x),
    };
    let mut dx = vec![f64::NAN; x.len()];
    activation::activation_backward_input(p, &saved, dy, &mut dx);
    dx
}

#[test]
fn every_activation_matches_its_formula_and_finite_differences() {
    let mut rng = StdRng::seed_from_u64(41);
    for &act in Activation::ALL {
        let (alpha, beta) = act_params(act);
        let bps = breakpoints(act);
        // Inputs on [-7, 7], at least 0.05 from every breakpoint (FD steps are 1e-5).
        let x: Vec<f64> = std::iter::repeat_with(|| rng.random_range(-7.0..7.0))
            .filter(|v: &f64| bps.iter().all(|&(b, _)| (v - b).abs() > 0.05))
            .take(2 * 3 * 5 * 7)
            .collect();
        let p = ActivationParams {
            act,
            alpha,
            beta,
            len: x.len(),
        };
        let (a64, b64) = (alpha as f64, beta as f64);
        // f64: the table's own formula, so bit-identical.
        let y = act_forward(&p, &x);
        for (i, (&v, &u)) in y.iter().zip(&x).enumerate() {
            assert_eq!(
                v.to_bits(),
                act.forward(u, a64, b64).to_bits(),
                "{act:?} [{i}]"
            );
        }
        // f32 against the f64 formula on the same (f32) inputs: one or two roundings of
        // exp/erf/tanh and their combination, ≤ 1e-6 relative; plus 1e-6 absolute for the
        // cancellation in gelu's 1 + erf(x/√2) far below zero and elu's near e⁻⁷.
        let x32 = f32s(&x);
        let y32 = act_forward(&p, &x32);
        for (i, (&v, &u)) in y32.iter().zip(&x32).enumerate() {
            let want = act.forward(u as f64, a64, b64);
            let err = (v as f64 - want).abs();
            assert!(
                err <= 1e-6 * want.abs() + 1e-6,
                "{act:?} f32 [{i}] at {u}: {v} vs {want}"
            );
        }
        let dy = random(x.len(), &mut rng);
        let dx = act_backward(&p, &x, &dy);
        fd(
            &format!("{act:?}"),
            &x,
            &dx,
            &dy,
            |x| act_forward(&p, x),
            &mut rng,
        );
        // At the breakpoints: exactly dy times PyTorch's convention.
        if !bps.is_empty() {
            let xb: Vec<f64> = bps.iter().map(|&(b, _)| b).collect();
            let dyb: Vec<f64> = (0..xb.len()).map(|i| 1.5 + i as f64).collect();
            let p = ActivationParams { len: xb.len(), ..p };
            let dx = act_backward(&p, &xb, &dyb);
            for (i, &(b, d)) in bps.iter().enumerate() {
                assert_eq!(dx[i], dyb[i] * d, "{act:?}' at {b}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Binary ops

/// (a's shape, b's shape): same shape, [N,C,1,1], [1,C,1,1], [C,1,1], scalar [1], b
/// broadcast along H only, the operands swapped, both broadcast, and NHWC's [C].
fn binary_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    let full = vec![2, 3, 4, 5];
    vec![
        (full.clone(), full.clone()),
        (full.clone(), vec![2, 3, 1, 1]),
        (full.clone(), vec![1, 3, 1, 1]),
        (full.clone(), vec![3, 1, 1]),
        (full.clone(), vec![1]),
        (full.clone(), vec![2, 3, 1, 5]),
        (vec![2, 3, 1, 1], full.clone()),
        (vec![1, 3, 1, 5], full.clone()),
        (vec![2, 1, 4, 5], vec![1, 3, 1, 1]),
        (vec![2, 4, 5, 3], vec![3]),
        (vec![3, 5], vec![2, 3, 1, 5]),
    ]
}

/// Broadcast index of output element i in an operand of rank-4 shape `s`.
fn bcast_index(s: [usize; 4], out: [usize; 4], mut i: usize) -> usize {
    let mut idx = [0; 4];
    for k in (0..4).rev() {
        idx[k] = i % out[k];
        i /= out[k];
    }
    (0..4).fold(0, |acc, k| acc * s[k] + if s[k] == 1 { 0 } else { idx[k] })
}

fn binary_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &BinaryParams,
    a: &[T],
    b: &[T],
) -> Vec<T> {
    let mut y = vec![T::nan(); p.len()];
    binary::binary_forward(p, a, b, &mut y);
    y
}

#[test]
fn binary_ops_match_the_definition_and_finite_differences() {
    let mut rng = StdRng::seed_from_u64(51);
    for op in [BinaryOp::Add, BinaryOp::Mul] {
        for (sa, sb) in binary_cases() {
            let (p, _) = BinaryParams::broadcast(op, &sa, &sb).expect("broadcast");
            let what = format!("{} {sa:?} {sb:?}", op.name());
            let a = random(sa.iter().product(), &mut rng);
            let b = random(sb.iter().product(), &mut rng);
            // One rounding per element, in f64 and in f32 alike: bit-identical.
            let f = |u: f64, v: f64| match op {
                BinaryOp::Add => u + v,
                BinaryOp::Mul => u * v,
            };
            let want: Vec<f64> = (0..p.len())
                .map(|i| f(a[bcast_index(p.a, p.out, i)], b[bcast_index(p.b, p.out, i)]))
                .collect();
            assert_eq!(binary_forward(&p, &a, &b), want, "{what}");
            let (a32, b32) = (f32s(&a), f32s(&b));
            let want32: Vec<f32> = (0..p.len())
                .map(|i| {
                    let (u, v) = (
                        a32[bcast_index(p.a, p.out, i)],
                        b32[bcast_index(p.b, p.out, i)],
                    );
                    match op {
                        BinaryOp::Add => u + v,
                        BinaryOp::Mul => u * v,
                    }
                })
                .collect();
            assert_bits_eq(&what, &binary_forward(&p, &a32, &b32), &want32);
            let dy = random(p.len(), &mut rng);
            let mut da = vec![f64::NAN; a.len()];
            binary::binary_backward_input(&p, 0, &dy, &a, &b, &mut da);
            fd(
                &format!("{what} d/da"),
                &a,
                &da,
                &dy,
                |a| binary_forward(&p, a, &b),
                &mut rng,
            );
            let mut db = vec![f64::NAN; b.len()];
            binary::binary_backward_input(&p, 1, &dy, &a, &b, &mut db);
            fd(
                &format!("{what} d/db"),
                &b,
                &db,
                &dy,
                |b| binary_forward(&p, &a, b),
                &mut rng,
            );
        }
    }
}

#[test]
fn binary_gradients_are_bit_identical_on_1_and_3_threads() {
    let mut rng = StdRng::seed_from_u64(52);
    let full = vec![4, 16, 32, 33];
    for sb in [
        vec![1, 16, 1, 1],
        vec![4, 16, 1, 1],
        vec![1],
        vec![4, 16, 1, 33],
        vec![33],
    ] {
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let (p, _) = BinaryParams::broadcast(op, &full, &sb).expect("broadcast");
            let a = f32s(&random(p.len(), &mut rng));
            let b = f32s(&random(sb.iter().product(), &mut rng));
            let dy = f32s(&random(p.len(), &mut rng));
            let run = || {
                let mut db = vec![f32::NAN; b.len()];
                binary::binary_backward_input(&p, 1, &dy, &a, &b, &mut db);
                (binary_forward(&p, &a, &b), db)
            };
            let ((y1, d1), (y3, d3)) = (in_threads(1, run), in_threads(3, run));
            assert_bits_eq(&format!("{} {sb:?} forward", op.name()), &y1, &y3);
            assert_bits_eq(&format!("{} {sb:?} d/db", op.name()), &d1, &d3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strided copies

fn copy(p: &StridedCopyParams, src: &[f32], dst_len: usize) -> Vec<f32> {
    let mut dst = vec![f32::NAN; dst_len];
    layout::strided_copy(p, src, &mut dst);
    dst
}

/// Distinct values, so any misplaced element shows.
fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

/// Element (n, c, h, w) of a contiguous [N, C, H, W] tensor.
fn at4(s: [usize; 4], (n, c, h, w): (usize, usize, usize, usize)) -> usize {
    ((n * s[1] + c) * s[2] + h) * s[3] + w
}

#[test]
fn strided_copies_concat_chunk_shuffle_and_permute() {
    for (n, h, w) in [(2, 3, 5), (3, 17, 29)] {
        // Concat of three inputs along channels, and the chunks that take them back out.
        let cs = [2, 3, 1];
        let total: usize = cs.iter().sum();
        let whole = [n, total, h, w];
        let parts: Vec<Vec<f32>> = cs
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                iota(n * c * h * w)
                    .iter()
                    .map(|v| v + 1e4 * k as f32)
                    .collect()
            })
            .collect();
        let mut cat = vec![f32::NAN; n * total * h * w];
        let mut start = 0;
        for (part, &c) in parts.iter().zip(&cs) {
            let p = StridedCopyParams::block(&whole, 1, start, c, true);
            layout::strided_copy(&p, part, &mut cat);
            // Its inverse takes the part back out.
            assert_eq!(
                copy(&p.inverse(), &cat, part.len()),
                *part,
                "concat inverse"
            );
            start += c;
        }
        for (ni, ci, hi, wi) in indices4(n, total, h, w) {
            let (k, c0) = if ci < 2 {
                (0, 0)
            } else if ci < 5 {
                (1, 2)
            } else {
                (2, 5)
            };
            let want = parts[k][at4([n, cs[k], h, w], (ni, ci - c0, hi, wi))];
            assert_eq!(
                cat[at4(whole, (ni, ci, hi, wi))],
                want,
                "concat ({ni},{ci},{hi},{wi})"
            );
        }
        // Chunk into 2 and into 3 along channels; the inverse copies restore the whole.
        let src = iota(n * total * h * w);
        for chunks in [2, 3] {
            let len = total / chunks;
            let mut restored = vec![f32::NAN; src.len()];
            for k in 0..chunks {
                let p = StridedCopyParams::block(&whole, 1, k * len, len, false);
                let part = copy(&p, &src, n * len * h * w);
                for (ni, ci, hi, wi) in indices4(n, len, h, w) {
                    let want = src[at4(whole, (ni, k * len + ci, hi, wi))];
                    assert_eq!(
                        part[at4([n, len, h, w], (ni, ci, hi, wi))],
                        want,
                        "chunk {k}/{chunks}"
                    );
                }
                layout::strided_copy(&p.inverse(), &part, &mut restored);
            }
            assert_eq!(restored, src, "chunks of {chunks} restored");
        }
        // Channel shuffle: [N, C, H, W] viewed as [N, g, C/g, H, W], axes 1 and 2 swapped.
        let (g, c) = (3, 6);
        let src = iota(n * c * h * w);
        let p = StridedCopyParams::permute(&[n, g, c / g, h, w], &[0, 2, 1, 3, 4]);
        let shuffled = copy(&p, &src, src.len());
        for (ni, ci, hi, wi) in indices4(n, c, h, w) {
            // Output channel ci = j·g + i reads input channel i·(C/g) + j.
            let (j, i) = (ci / g, ci % g);
            let want = src[at4([n, c, h, w], (ni, i * (c / g) + j, hi, wi))];
            assert_eq!(
                shuffled[at4([n, c, h, w], (ni, ci, hi, wi))],
                want,
                "shuffle"
            );
        }
        assert_eq!(
            copy(&p.inverse(), &shuffled, src.len()),
            src,
            "shuffle inverse"
        );
        // NCHW → NHWC and back.
        let p = StridedCopyParams::permute(&[n, c, h, w], &[0, 2, 3, 1]);
        let nhwc = copy(&p, &src, src.len());
        for (ni, ci, hi, wi) in indices4(n, c, h, w) {
            let want = src[at4([n, c, h, w], (ni, ci, hi, wi))];
            assert_eq!(nhwc[at4([n, h, w, c], (ni, hi, wi, ci))], want, "NHWC");
        }
        assert_eq!(copy(&p.inverse(), &nhwc, src.len()), src, "NHWC inverse");
        let back = StridedCopyParams::permute(&[n, h, w, c], &inverse_permutation(&[0, 2, 3, 1]));
        assert_eq!(copy(&back, &nhwc, src.len()), src, "NHWC → NCHW");
    }
}

#[test]
fn strided_copy_large_permutes_and_blocks() {
    // Large enough for the parallel path: a permute with no contiguous run on the source
    // side (64 channels of 28×28) and a block copy.
    let (n, c, h, w) = (2, 64, 28, 28);
    let src = iota(n * c * h * w);
    let run = || {
        let p = StridedCopyParams::permute(&[n, c, h, w], &[0, 2, 3, 1]);
        let nhwc = copy(&p, &src, src.len());
        let q = StridedCopyParams::block(&[n, c, h, w], 1, 16, 40, false);
        (nhwc, copy(&q, &src, n * 40 * h * w))
    };
    let ((nhwc, block), (nhwc3, block3)) = (in_threads(1, run), in_threads(3, run));
    assert_eq!((&nhwc, &block), (&nhwc3, &block3));
    for (ni, ci, hi, wi) in indices4(n, c, h, w) {
        let v = src[at4([n, c, h, w], (ni, ci, hi, wi))];
        assert_eq!(nhwc[at4([n, h, w, c], (ni, hi, wi, ci))], v);
        if (16..56).contains(&ci) {
            assert_eq!(block[at4([n, 40, h, w], (ni, ci - 16, hi, wi))], v);
        }
    }
}

#[test]
fn strided_copy_gradient_is_the_inverse_copy() {
    // A copy is linear, its gradient the scatter back (the inverse copy into zeros).
    let mut rng = StdRng::seed_from_u64(61);
    let (n, c, h, w) = (2, 6, 3, 5);
    for p in [
        StridedCopyParams::block(&[n, c, h, w], 1, 1, 3, false),
        StridedCopyParams::permute(&[n, 2, 3, h, w], &[0, 2, 1, 3, 4]),
        StridedCopyParams::permute(&[n, c, h, w], &[0, 2, 3, 1]),
    ] {
        let x = random(n * c * h * w, &mut rng);
        let dy = random(p.len(), &mut rng);
        let mut dx = vec![0.0; x.len()];
        layout::strided_copy(&p.inverse(), &dy, &mut dx);
        let fwd = |x: &[f64]| {
            let mut y = vec![f64::NAN; p.len()];
            layout::strided_copy(&p, x, &mut y);
            y
        };
        fd(&format!("{p:?}"), &x, &dx, &dy, fwd, &mut rng);
    }
}

/// Every (n, c, h, w) index.
fn indices4(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).flat_map(move |a| {
        (0..c).flat_map(move |b| (0..h).flat_map(move |d| (0..w).map(move |e| (a, b, d, e))))
    })
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

fn ln_reference(p: &LayerNormParams, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for o in 0..p.outer {
        for i in 0..p.inner {
            let at = |d: usize| (o * p.dim + d) * p.inner + i;
            let mean = (0..p.dim).map(|d| x[at(d)]).sum::<f64>() / p.dim as f64;
            let var = (0..p.dim).map(|d| (x[at(d)] - mean).powi(2)).sum::<f64>() / p.dim as f64;
            let rstd = 1.0 / (var + p.eps as f64).sqrt();
            for d in 0..p.dim {
                y[at(d)] = (x[at(d)] - mean) * rstd * w[d] + b[d];
            }
        }
    }
    y
}

fn ln_forward<T: gradcam::internal::backend::cpu::real::Real>(
    p: &LayerNormParams,
    x: &[T],
    w: &[T],
    b: &[T],
) -> Vec<T> {
    let mut y = vec![T::nan(); x.len()];
    layer_norm::layer_norm_forward(p, x, w, b, &mut y);
    y
}

fn ln_p(outer: usize, dim: usize, inner: usize) -> LayerNormParams {
    LayerNormParams {
        outer,
        dim,
        inner,
        eps: 1e-6,
    }
}

#[test]
fn layer_norm_matches_the_definition() {
    let mut rng = StdRng::seed_from_u64(71);
    // (params, offset of x): inner = 1 (NHWC) and inner > 1 (NCHW), dims up to ConvNeXt's
    // 768, and inputs whose mean is 100× their spread.
    for (p, offset) in [
        (ln_p(6, 7, 1), 0.5),
        (ln_p(5, 96, 1), 3.0),
        (ln_p(3, 768, 1), 100.0),
        (ln_p(2, 5, 9), 0.0),
        (ln_p(2, 96, 3001), 2.0),
        (ln_p(2, 768, 50), 100.0),
    ] {
        let x: Vec<f64> = random(p.len(), &mut rng)
            .iter()
            .map(|v| v + offset)
            .collect();
        let w = random(p.dim, &mut rng);
        let b = random(p.dim, &mut rng);
        let scale: Vec<f64> = vec![1.0; x.len()];
        // f64: the same formula, another summation order: 1e-12 absolute (outputs are O(1)).
        let want = ln_reference(&p, &x, &w, &b);
        close(
            &format!("{p:?} f64"),
            &ln_forward(&p, &x, &w, &b),
            &want,
            &scale,
            1e-12,
        );
        // f32 against f64 on the same f32 inputs: 1e-6 absolute on outputs of magnitude
        // ≤ |x̂|·|w| + |b| ≤ √3 + 1, i.e. a few ulps, even where the mean is 170× the spread
        // (the statistics are taken on shifted data; an f32 mean alone would be off by ~1e-5
        // there). Measured: ≤ 5e-7.
        let (x32, w32, b32) = (f32s(&x), f32s(&w), f32s(&b));
        let want = ln_reference(&p, &widen(&x32), &widen(&w32), &widen(&b32));
        let got = widen(&ln_forward(&p, &x32, &w32, &b32));
        close(&format!("{p:?} f32"), &got, &want, &scale, 1e-6);
        let run = || ln_forward(&p, &x32, &w32, &b32);
        assert_bits_eq(
            &format!("{p:?} threads"),
            &in_threads(1, run),
            &in_threads(3, run),
        );
    }
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(72);
    for p in [
        ln_p(6, 7, 1),
        ln_p(3, 33, 1),
        ln_p(2, 5, 9),
        ln_p(3, 12, 37),
    ] {
        let x: Vec<f64> = random(p.len(), &mut rng).iter().map(|v| v + 0.3).collect();
        let w = random(p.dim, &mut rng);
        let b = random(p.dim, &mut rng);
        let dy = random(p.len(), &mut rng);
        let mut dx = vec![f64::NAN; p.len()];
        layer_norm::layer_norm_backward_input(&p, &x, &w, &dy, &mut dx);
        fd(
            &format!("{p:?}"),
            &x,
            &dx,
            &dy,
            |x| ln_forward(&p, x, &w, &b),
            &mut rng,
        );
        let (x32, w32, dy32) = (f32s(&x), f32s(&w), f32s(&dy));
        let run = || {
            let mut dx = vec![f32::NAN; p.len()];
            layer_norm::layer_norm_backward_input(&p, &x32, &w32, &dy32, &mut dx);
            dx
        };
        assert_bits_eq(
            &format!("{p:?} threads"),
            &in_threads(1, run),
            &in_threads(3, run),
        );
    }
}
