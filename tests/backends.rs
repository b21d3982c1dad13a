//! Every op of the Backend trait, run on every backend against the CPU kernels in f64 (the
//! oracle: the same code generic over f32/f64, checked against finite differences in
//! gradcheck.rs). One test body per op, instantiated by `on_backends!` as `_cpu`, `_wgpu` (and
//! `_wgpu_v1` for the two convolution variants). Seeded random inputs, odd shapes, batch > 1,
//! and outputs poisoned with NaN before each kernel runs.
//!
//! Tolerances are |got - ref| ≤ atol + rtol·|ref|, per op:
//! - conv2d, linear: atol 1e-5, rtol 1e-4. f32 sums of K ≤ 630 products of values in [-1, 1],
//!   in another order than the reference: the error grows like √K·2⁻²⁴·Σ|terms| ≈ 1e-5.
//! - relu, add, the affine map, max-pool values: atol 1e-6, rtol 1e-6. One f32
//!   operation (or none) per element: the only difference to f64 is the final rounding.
//! - max-pool backward: atol 1e-6, rtol 1e-6; each input sums the few dy of the windows that
//!   chose it, in the same order; on inputs with many ties, so a different tie rule fails.
//! - adaptive average pool: atol 1e-6, rtol 1e-5 (sums of ≤ 16 values and one division).
//! - class_seed: exact (0s and 1s).
//! - conv2d_fused (conv → BatchNorm → add → ReLU), channel_affine_fused (concat → BatchNorm →
//!   activation) and linear_fused (linear → activation): exact against the same backend's
//!   separate ops.
//! - grouped / depthwise / dilated / asymmetrically padded conv2d, v1 and v2 (tiled) forward:
//!   as conv2d (atol 1e-5, rtol 1e-4): sums of ≤ 54 products, in another order than the CPU's
//!   register tiles.
//! - activations: atol 2e-6, rtol 1e-5: one transcendental (exp, erf, tanh) per element; the
//!   WGSL erf is Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7), exp is within a few ulp on
//!   lavapipe. Inputs include every breakpoint exactly (−3, 0, 3, 6, hardtanh's bounds).
//! - broadcast add/mul: forward atol 1e-6, rtol 1e-6 (one operation); the operand gradients
//!   sum ≤ 105 products in another order than the CPU's blocks: atol 1e-5, rtol 1e-5.
//! - avg-pool (ceil mode, count_include_pad or not): atol 1e-6, rtol 1e-5 (sums of ≤ 9 values,
//!   one division); adaptive max-pool: as max-pool, ties on a coarse grid.
//! - strided copy (concat, permute, shuffle): exact.
//! - squeeze_excitation (pool → fc1 → act → fc2 → gate → multiply, fused): as conv2d (atol
//!   1e-5, rtol 1e-4): f32 means of up to 8827 pixels, then sums of up to 300 products.
//! - LayerNorm: atol 2e-5, rtol 1e-4: sequential f32 sums over dim ≤ 96 (the CPU sums
//!   pairwise), and the backward pass's two means of products.
//! - grad_cam, every CamCombine × renormalize on/off: atol 1e-4 on outputs in [0, 1], against
//!   the CPU step, which accumulates in f64; the WGSL kernel sums in f32 (per-channel sums over
//!   h·w ≤ 72 pixels, then over C ≤ 300 channels), so the error is the f32 sums' rounding
//!   relative to the map's range. Measured on lavapipe (max over all cases): Mean 4e-7,
//!   Grad-CAM++ 1.1e-6, XGrad 1.6e-5 (Σ A near 0 for a channel of mixed-sign activations
//!   amplifies the f32 sum's error), HiRes 4e-7, element-wise 1e-6, LayerCAM 5e-7, FEM 7e-7,
//!   Weights 3e-7. Constant maps (1×1 layers, channels constant over their pixels) are exactly 0.
//!   Grad-CAM++ with gradients scaled to |g| < 1, 10, 100, on activations after a ReLU and with
//!   negative values (α's denominator 2g² + Σ A·g³ has a pole at g = -2/Σ A when Σ A < 0):
//!   measured 1.1e-6 … 2.5e-6 on these seeds, same atol; a g that lands near the pole would
//!   exceed any f32 tolerance, which is why the selftest's CAM inputs are post-ReLU.
//! - score_cam_masks: atol 1e-6, rtol 1e-6 (measured 1.2e-7): a four-tap interpolation, one
//!   normalization and one product per element, same order as the CPU; the shader compiler
//!   may fuse multiply-adds.

mod common;

use gradcam::internal::backend::cpu::{
    activation, binary, cam, conv, elementwise, grouped_conv, layer_norm, layout, linear, pool,
};
use gradcam::internal::backend::{
    concat_then_affine, squeeze_excitation_separate, Backend, ConvEpilogue,
};
use gradcam::internal::ops::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

macro_rules! on_backends {
    ($body:ident: $($name:ident => $make:expr),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $body(&$make);
            }
        )+
    };
}

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_within(what, got, want, |_, w| atol + rtol * w.abs());
}

/// Every element finite and within `tol(i, want[i])` of `want[i]`.
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize, f64) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (err, tol) = ((g as f64 - w).abs(), tol(i, w));
        assert!(
            g.is_finite() && err <= tol,
            "{what}: element {i} is {g}, expected {w} (error {err:e}, allowed {tol:e})"
        );
    }
}

/// [`assert_close`] plus `mtol` of `mag`, the sum of the magnitudes of each output's terms:
/// the scale of a sum's rounding error, which an output that cancels to near zero does not
/// show. The CPU backend's Winograd F(4×4, 3×3) rounds at ~3e-7 of it in f32 (its transforms
/// scale by up to 8 before the cancellation), above 1e-5 + 1e-4·|ref| for a 20-channel conv's
/// outputs near 0.03 whose terms sum to ~45 in magnitude.
#[track_caller]
fn assert_close_sum(what: &str, got: &[f32], want: &[f64], mag: &[f64], mtol: f64) {
    assert_eq!(mag.len(), want.len(), "{what}: term magnitudes' length");
    assert_within(what, got, want, |i, w| {
        1e-5 + 1e-4 * w.abs() + mtol * mag[i]
    });
}

fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x.abs() as f64).collect()
}

/// The fused conv → BatchNorm (→ add) (→ ReLU) call gives exactly what the ops give one after
/// another (same f32 operations in the same order), on every path of the CPU kernel: batch
/// parallel, one image with its pixel blocks in parallel (64×64 output), pointwise.
fn conv2d_fused<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(29);
    let mut cases = conv_cases();
    for (c_in, k, pad) in [(3, 3, 1), (8, 1, 0)] {
        cases.push(Conv2dParams {
            n: 1,
            c_in,
            h_in: 64,
            w_in: 64,
            c_out: 5,
            k_h: k,
            k_w: k,
            stride_h: 1,
            stride_w: 1,
            pad_h: pad,
            pad_w: pad,
            pad_h_end: pad,
            pad_w_end: pad,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        });
    }
    for p in cases {
        let up = |v: &[f32]| be.upload(v).unwrap();
        let (x, w, b) = (
            up(&random(p.input_len(), &mut rng)),
            up(&random(p.weight_len(), &mut rng)),
            up(&random(p.c_out, &mut rng)),
        );
        let (scale, shift) = (
            up(&random(p.c_out, &mut rng)),
            up(&random(p.c_out, &mut rng)),
        );
        let a = ChannelAffineParams {
            n: p.n,
            c: p.c_out,
            hw: p.h_out() * p.w_out(),
        };
        let residual = up(&random(p.output_len(), &mut rng));
        // No activation, ReLU (in the GPU fused kernels), and two the GPUs run after them.
        let acts = [
            None,
            Some(Activation::Relu),
            Some(Activation::Silu),
            Some(Activation::Hardswish),
        ];
        // (BatchNorm, add): a conv → activation without BatchNorm is VGG's.
        let cases = [(true, false), (true, true), (false, false)];
        for (bn, add, act) in cases
            .into_iter()
            .flat_map(|(bn, add)| acts.map(|a| (bn, add, a)))
        {
            let act = act.map(|act| ActivationParams {
                act,
                alpha: 0.0,
                beta: 0.0,
                len: a.len(),
            });
            let y = be.conv2d(&p, &x, &w, Some(&b)).unwrap();
            let mut want = if bn {
                be.channel_affine(&a, &y, &scale, &shift).unwrap()
            } else {
                y
            };
            if add {
                want = be.add(&want, &residual, a.len()).unwrap();
            }
            match act {
                Some(act) if act.act == Activation::Relu => want = be.relu(&want, a.len()).unwrap(),
                Some(act) => want = be.activation(&act, &want).unwrap(),
                None => {}
            }
            let want: Vec<f64> = f64s(&be.download(&want).unwrap());
            let e = ConvEpilogue {
                bn: bn.then_some((&scale, &shift)),
                residual: add.then_some(&residual),
                act,
            };
            let got = be.conv2d_fused(&p, &x, &w, Some(&b), &e).unwrap();
            let name = act.map_or("none", |a| a.act.name());
            let what = format!(
                "{} conv2d_fused {p:?} bn {bn} add {add} act {name}",
                be.name()
            );
            assert_close(&what, &be.download(&got).unwrap(), &want, 0.0, 0.0);
        }
    }
}

on_backends!(conv2d_fused:
    conv2d_fused_cpu => common::cpu(),
    conv2d_fused_wgpu => common::wgpu(),
);

fn conv_cases() -> Vec<Conv2dParams> {
    // (n, c_in, h, w, c_out, kh, kw, stride, pad); the last two span several 64×64 tiles;
    // the first is one the CPU computes by Winograd (3×3, stride 1, ≥ 16 channels, 42 tiles).
    [
        (2, 20, 13, 11, 24, 3, 3, 1, 1),
        (2, 3, 7, 9, 4, 3, 3, 2, 1),
        (3, 2, 5, 6, 3, 1, 1, 1, 0),
        (2, 3, 9, 7, 5, 5, 5, 1, 2),
        (2, 4, 6, 5, 3, 3, 1, 1, 1),
        (2, 3, 5, 7, 2, 1, 1, 2, 0),
        (2, 5, 11, 10, 70, 3, 3, 1, 1),
        (3, 70, 6, 5, 9, 3, 3, 2, 1),
    ]
    .into_iter()
    .map(|(n, c_in, h, w, c_out, k_h, k_w, s, p)| Conv2dParams {
        n,
        c_in,
        h_in: h,
        w_in: w,
        c_out,
        k_h,
        k_w,
        stride_h: s,
        stride_w: s,
        pad_h: p.min(k_h / 2),
        pad_w: p.min(k_w / 2),
        pad_h_end: p.min(k_h / 2),
        pad_w_end: p.min(k_w / 2),
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    })
    .collect()
}

fn conv2d_forward<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(11);
    for p in conv_cases() {
        let x = random(p.input_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let b = random(p.c_out, &mut rng);
        for bias in [true, false] {
            let mut want = vec![0f64; p.output_len()];
            let b64 = f64s(&b);
            conv::conv2d_forward(
                &p,
                &f64s(&x),
                &f64s(&w),
                bias.then_some(&b64[..]),
                &mut want,
            );
            let (xb, wb, bb) = (
                be.upload(&x).unwrap(),
                be.upload(&w).unwrap(),
                be.upload(&b).unwrap(),
            );
            let y = be.conv2d(&p, &xb, &wb, bias.then_some(&bb)).unwrap();
            let got = be.download(&y).unwrap();
            let mut mag = vec![0f64; p.output_len()];
            let b_abs = abs64(&b);
            let (x_abs, w_abs) = (abs64(&x), abs64(&w));
            let b_abs = bias.then_some(&b_abs[..]);
            conv::conv2d_forward(&p, &x_abs, &w_abs, b_abs, &mut mag);
            let what = format!("{} conv2d {p:?} bias {bias}", be.name());
            assert_close_sum(&what, &got, &want, &mag, 1e-6);
        }
    }
}

on_backends!(conv2d_forward:
    conv2d_forward_cpu => common::cpu(),
    conv2d_forward_wgpu => common::wgpu(),
    conv2d_forward_wgpu_v1 => common::wgpu_v1(),
);

fn conv2d_backward<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(12);
    for p in conv_cases() {
        let dy = random(p.output_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let mut want = vec![0f64; p.input_len()];
        conv::conv2d_backward_input(&p, &f64s(&dy), &f64s(&w), &mut want);
        let dx = be
            .conv2d_grad_input(&p, &be.upload(&dy).unwrap(), &be.upload(&w).unwrap())
            .unwrap();
        let got = be.download(&dx).unwrap();
        let mut mag = vec![0f64; p.input_len()];
        conv::conv2d_backward_input(&p, &abs64(&dy), &abs64(&w), &mut mag);
        let what = format!("{} conv2d backward {p:?}", be.name());
        assert_close_sum(&what, &got, &want, &mag, 1e-6);
    }
}

on_backends!(conv2d_backward:
    conv2d_backward_cpu => common::cpu(),
    conv2d_backward_wgpu => common::wgpu(),
    conv2d_backward_wgpu_v1 => common::wgpu_v1(),
);

fn max_pool<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(13);
    // (n, c, h, w, k, stride, pad, ceil_mode): the last two have ceil-mode windows that hang
    // over the input's end (googlenet's, squeezenet's pools).
    let cases = [
        (2, 3, 7, 9, 3, 2, 1, false),
        (3, 2, 8, 8, 2, 2, 0, false),
        (2, 2, 6, 7, 3, 1, 1, false),
        (2, 3, 11, 5, 2, 1, 0, false),
        (2, 3, 8, 11, 3, 2, 0, true),
        (3, 2, 7, 6, 2, 2, 1, true),
    ];
    for (n, c, h, w, k, s, pad, ceil_mode) in cases {
        let p = MaxPool2dParams {
            n,
            c,
            h_in: h,
            w_in: w,
            k_h: k,
            k_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: pad,
            pad_w: pad,
            ceil_mode,
        };
        // Values on a coarse grid: many ties, which must go to the first maximum.
        let x: Vec<f32> = (0..p.input_len())
            .map(|_| rng.random_range(-2i32..=2) as f32 * 0.5)
            .collect();
        let dy = random(p.output_len(), &mut rng);
        let mut want_y = vec![0f64; p.output_len()];
        let mut idx = vec![0u32; p.output_len()];
        pool::max_pool2d_forward(&p, &f64s(&x), &mut want_y, &mut idx);
        let mut want_dx = vec![0f64; p.input_len()];
        pool::max_pool2d_backward_input(&p, &idx, &f64s(&dy), &mut want_dx);

        let (y, argmax) = be.max_pool2d(&p, &be.upload(&x).unwrap()).unwrap();
        let what = format!("{} max_pool {p:?}", be.name());
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 1e-6, 1e-6);
        let dx = be
            .max_pool2d_grad_input(&p, &argmax, &be.upload(&dy).unwrap())
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-6,
            1e-6,
        );
    }
}

on_backends!(max_pool:
    max_pool_cpu => common::cpu(),
    max_pool_wgpu => common::wgpu(),
);

fn adaptive_avg_pool<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(14);
    // (n, c, h_in, w_in, h_out, w_out): shrinking, growing (overlapping windows), global.
    let cases = [
        (2, 3, 7, 9, 3, 4),
        (2, 2, 5, 5, 7, 7),
        (3, 2, 6, 6, 1, 1),
        (2, 3, 13, 11, 7, 7),
        (2, 2, 3, 2, 7, 7),
    ];
    for (n, c, h_in, w_in, h_out, w_out) in cases {
        let p = AdaptivePool2dParams {
            n,
            c,
            h_in,
            w_in,
            h_out,
            w_out,
        };
        let x = random(p.input_len(), &mut rng);
        let dy = random(p.output_len(), &mut rng);
        let mut want_y = vec![0f64; p.output_len()];
        pool::adaptive_avg_pool2d_forward(&p, &f64s(&x), &mut want_y);
        let mut want_dx = vec![0f64; p.input_len()];
        pool::adaptive_avg_pool2d_backward_input(&p, &f64s(&dy), &mut want_dx);
        let what = format!("{} adaptive_avg_pool {p:?}", be.name());
        let y = be.adaptive_avg_pool2d(&p, &be.upload(&x).unwrap()).unwrap();
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 1e-6, 1e-5);
        let dx = be
            .adaptive_avg_pool2d_grad_input(&p, &be.upload(&dy).unwrap())
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-6,
            1e-5,
        );
    }
}

on_backends!(adaptive_avg_pool:
    adaptive_avg_pool_cpu => common::cpu(),
    adaptive_avg_pool_wgpu => common::wgpu(),
);

fn relu<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(15);
    for len in [1, 255, 2 * 3 * 7 * 5] {
        let x = random(len, &mut rng);
        let dy = random(len, &mut rng);
        let mut want = vec![0f64; len];
        elementwise::relu_forward(&f64s(&x), &mut want);
        let y = be.relu(&be.upload(&x).unwrap(), len).unwrap();
        let got = be.download(&y).unwrap();
        assert_close(
            &format!("{} relu {len}", be.name()),
            &got,
            &want,
            1e-6,
            1e-6,
        );
        let mut want_dx = vec![0f64; len];
        elementwise::relu_backward_input(&want, &f64s(&dy), &mut want_dx);
        let dx = be
            .relu_grad_input(&y, &be.upload(&dy).unwrap(), len)
            .unwrap();
        let got = be.download(&dx).unwrap();
        assert_close(
            &format!("{} relu backward {len}", be.name()),
            &got,
            &want_dx,
            1e-6,
            1e-6,
        );
    }
}

on_backends!(relu:
    relu_cpu => common::cpu(),
    relu_wgpu => common::wgpu(),
);

/// More elements than 65,535 workgroups of 256 hold: the dispatch must fold into 2-D and
/// still write every element exactly once.
fn relu_past_the_dispatch_limit<B: Backend>(be: &B) {
    let len = 256 * 65_535 + 1000;
    let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 3.0).collect();
    let got = be
        .download(&be.relu(&be.upload(&x).unwrap(), len).unwrap())
        .unwrap();
    assert_eq!(got.len(), len);
    for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
        assert!(g == v.max(0.0), "{}: element {i} is {g}", be.name());
    }
}

on_backends!(relu_past_the_dispatch_limit:
    relu_past_the_dispatch_limit_cpu => common::cpu(),
    relu_past_the_dispatch_limit_wgpu => common::wgpu(),
);

fn channel_affine<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(16);
    for (n, c, hw) in [(2, 3, 35), (3, 5, 1), (2, 7, 13)] {
        let p = ChannelAffineParams { n, c, hw };
        let x = random(p.len(), &mut rng);
        let scale = random(c, &mut rng);
        let shift = random(c, &mut rng);
        let mut want = vec![0f64; p.len()];
        elementwise::channel_affine_forward(&p, &f64s(&x), &f64s(&scale), &f64s(&shift), &mut want);
        let sb = be.upload(&scale).unwrap();
        let y = be
            .channel_affine(
                &p,
                &be.upload(&x).unwrap(),
                &sb,
                &be.upload(&shift).unwrap(),
            )
            .unwrap();
        assert_close(
            &format!("{} affine {p:?}", be.name()),
            &be.download(&y).unwrap(),
            &want,
            1e-6,
            1e-6,
        );
        let mut want_dx = vec![0f64; p.len()];
        elementwise::channel_affine_backward_input(&p, &f64s(&x), &f64s(&scale), &mut want_dx);
        let dx = be
            .channel_affine_grad_input(&p, &be.upload(&x).unwrap(), &sb)
            .unwrap();
        assert_close(
            &format!("{} affine backward {p:?}", be.name()),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-6,
            1e-6,
        );
    }
}

on_backends!(channel_affine:
    channel_affine_cpu => common::cpu(),
    channel_affine_wgpu => common::wgpu(),
);

/// The fused (concat →) BatchNorm (→ activation) call gives exactly what the ops give one
/// after another: one piece and several of odd widths, tiny planes (grouped into one job) and
/// larger ones, every activation of the table and none.
fn channel_affine_fused<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(31);
    for (n, widths, hw) in [
        (2, vec![5], 35),
        (3, vec![3, 1, 6], 49),
        (2, vec![7, 2], 1),
        (2, vec![4, 9], 97 * 91),
    ] {
        let c = widths.iter().sum();
        let p = ChannelAffineParams { n, c, hw };
        let pieces: Vec<B::Buf> = widths
            .iter()
            .map(|&w| be.upload(&random(n * w * hw, &mut rng)).unwrap())
            .collect();
        let pieces: Vec<(&B::Buf, usize)> = pieces.iter().zip(widths.iter().copied()).collect();
        let scale = be.upload(&random(c, &mut rng)).unwrap();
        let shift = be.upload(&random(c, &mut rng)).unwrap();
        let acts = Activation::ALL.iter().map(|&act| {
            Some(ActivationParams {
                act,
                alpha: 0.125,
                beta: 0.875,
                len: p.len(),
            })
        });
        for act in acts.chain([None]) {
            let fused = be
                .channel_affine_fused(&p, &pieces, &scale, &shift, act.as_ref())
                .unwrap();
            let apart = concat_then_affine(be, &p, &pieces, &scale, &shift, act.as_ref()).unwrap();
            let (fused, apart) = (be.download(&fused).unwrap(), be.download(&apart).unwrap());
            let name = act.map_or("none", |a| a.act.name());
            assert_eq!(fused.len(), p.len());
            let same = fused
                .iter()
                .zip(&apart)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{} channel_affine_fused {p:?} widths {widths:?} act {name}",
                be.name()
            );
        }
    }
}

on_backends!(channel_affine_fused:
    channel_affine_fused_cpu => common::cpu(),
    channel_affine_fused_wgpu => common::wgpu(),
);

/// Squeeze-excitation cases: (n, c, h, w, squeeze, act, gate). Few channels (several threads
/// per channel in the GPU's means), more channels than a workgroup has threads, more hidden
/// units than threads, a 1×1 map, a large map, one image; ReLU (the fused convs' rule), and
/// table rows with parameters.
fn squeeze_excite_cases() -> Vec<SqueezeExciteParams> {
    use Activation::*;
    let act = |act, len| ActivationParams {
        act,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    [
        (3, 5, 7, 9, 3, Relu, Sigmoid),
        (2, 300, 3, 5, 7, Silu, Hardsigmoid),
        (2, 130, 1, 1, 260, Hardswish, Sigmoid),
        (2, 24, 97, 91, 6, Relu, Hardsigmoid),
        (1, 72, 5, 5, 24, Gelu, Sigmoid),
    ]
    .into_iter()
    .map(|(n, c, h, w, squeeze, a, g)| SqueezeExciteParams {
        n,
        c,
        h,
        w,
        squeeze,
        act: act(a, n * squeeze),
        gate: act(g, n * c),
    })
    .collect()
}

/// The fused squeeze-excitation block against the CPU kernels in f64 (tolerance as conv2d:
/// f32 sums of up to 8827 pixels in the means and 300 products in fc1/fc2, in another order),
/// and against the same backend's separate ops (the walker's unfused path; same tolerance).
fn squeeze_excitation<B: Backend>(be: &B) {
    use gradcam::internal::backend::cpu::squeeze_excitation::squeeze_excitation_forward;
    let mut rng = StdRng::seed_from_u64(41);
    for p in squeeze_excite_cases() {
        let (c, s) = (p.c, p.squeeze);
        let x = random(p.len(), &mut rng);
        let (w1, b1, w2, b2) = (
            random(s * c, &mut rng),
            random(s, &mut rng),
            random(c * s, &mut rng),
            random(c, &mut rng),
        );
        let mut want = vec![0f64; p.len()];
        let (w1f, b1f, w2f, b2f) = (f64s(&w1), f64s(&b1), f64s(&w2), f64s(&b2));
        squeeze_excitation_forward(&p, &f64s(&x), (&w1f, &b1f), (&w2f, &b2f), &mut want);
        let up = |v: &[f32]| be.upload(v).unwrap();
        let (xb, w1b, b1b, w2b, b2b) = (up(&x), up(&w1), up(&b1), up(&w2), up(&b2));
        let what = format!("{} squeeze_excitation {p:?}", be.name());
        let fused = be
            .squeeze_excitation(&p, &xb, (&w1b, &b1b), (&w2b, &b2b))
            .unwrap();
        assert_close(&what, &be.download(&fused).unwrap(), &want, 1e-5, 1e-4);
        let apart = squeeze_excitation_separate(be, &p, &xb, (&w1b, &b1b), (&w2b, &b2b)).unwrap();
        assert_close(
            &format!("{what} (separate ops)"),
            &be.download(&apart).unwrap(),
            &want,
            1e-5,
            1e-4,
        );
    }
}

on_backends!(squeeze_excitation:
    squeeze_excitation_cpu => common::cpu(),
    squeeze_excitation_wgpu => common::wgpu(),
);

/// Every ReLU path keeps a NaN, as PyTorch does (a NaN turned into 0 would hide an overflow
/// from the non-finite checks on logits and CAMs): the ReLU kernel, the table's row, the fused
/// conv epilogue (with and without BatchNorm), and the squeeze-excitation block.
fn relu_keeps_nan<B: Backend>(be: &B) {
    let relu = |len| ActivationParams {
        act: Activation::Relu,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    let x = [1.0, f32::NAN, -2.0, 0.0, 3.0];
    let xb = be.upload(&x).unwrap();
    let plain = be.download(&be.relu(&xb, 5).unwrap()).unwrap();
    let row = be.download(&be.activation(&relu(5), &xb).unwrap()).unwrap();
    for (what, y) in [("relu", plain), ("activation relu", row)] {
        let want = [1.0, f32::NAN, 0.0, 0.0, 3.0];
        let same = y
            .iter()
            .zip(want)
            .all(|(a, b)| a == &b || a.is_nan() && b.is_nan());
        assert!(same, "{} {what}: {y:?}", be.name());
    }
    // A 1×1 conv over 2 images of 3×3 pixels, pixel 4 of image 1 NaN in every channel: its
    // outputs are NaN after the epilogue, and only they.
    let p = Conv2dParams::dense(2, 3, (3, 3), 4, (1, 1), (1, 1), (0, 0));
    let mut rng = StdRng::seed_from_u64(43);
    let mut x = random(p.input_len(), &mut rng);
    (0..3).for_each(|c| x[(3 + c) * 9 + 4] = f32::NAN);
    let up = |v: &[f32]| be.upload(v).unwrap();
    let (xb, w, bias) = (up(&x), up(&random(12, &mut rng)), up(&random(4, &mut rng)));
    let (scale, shift) = (up(&random(4, &mut rng)), up(&random(4, &mut rng)));
    for bn in [None, Some((&scale, &shift))] {
        let e = ConvEpilogue {
            bn,
            residual: None,
            act: Some(relu(p.output_len())),
        };
        let y = be
            .download(&be.conv2d_fused(&p, &xb, &w, Some(&bias), &e).unwrap())
            .unwrap();
        for (i, v) in y.iter().enumerate() {
            let poisoned = i / 36 == 1 && i % 9 == 4;
            assert_eq!(
                v.is_nan(),
                poisoned,
                "{} conv2d_fused bn {} [{i}] = {v}",
                be.name(),
                bn.is_some()
            );
        }
    }
    // Squeeze-excitation: a NaN pixel makes its image's means, hence all its outputs, NaN.
    let p = SqueezeExciteParams {
        n: 2,
        c: 3,
        h: 3,
        w: 3,
        squeeze: 2,
        act: relu(4),
        gate: ActivationParams {
            act: Activation::Sigmoid,
            ..relu(6)
        },
    };
    let (w1, b1, w2, b2) = (
        up(&random(6, &mut rng)),
        up(&random(2, &mut rng)),
        up(&random(6, &mut rng)),
        up(&random(3, &mut rng)),
    );
    let y = be
        .squeeze_excitation(&p, &xb, (&w1, &b1), (&w2, &b2))
        .unwrap();
    let y = be.download(&y).unwrap();
    assert!(
        y[..27].iter().all(|v| v.is_finite()),
        "{} squeeze_excitation image 0: {y:?}",
        be.name()
    );
    assert!(
        y[27..].iter().all(|v| v.is_nan()),
        "{} squeeze_excitation image 1: {y:?}",
        be.name()
    );
}

on_backends!(relu_keeps_nan:
    relu_keeps_nan_cpu => common::cpu(),
    relu_keeps_nan_wgpu => common::wgpu(),
);

fn add<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(17);
    for len in [3, 257, 1001] {
        let a = random(len, &mut rng);
        let b = random(len, &mut rng);
        let mut want = vec![0f64; len];
        elementwise::add(&f64s(&a), &f64s(&b), &mut want);
        let (ab, bb) = (be.upload(&a).unwrap(), be.upload(&b).unwrap());
        let y = be.add(&ab, &bb, len).unwrap();
        assert_close(
            &format!("{} add {len}", be.name()),
            &be.download(&y).unwrap(),
            &want,
            1e-6,
            1e-6,
        );
    }
}

on_backends!(add:
    add_cpu => common::cpu(),
    add_wgpu => common::wgpu(),
);

fn linear_layer<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(18);
    // The last two are channels-last Linears (ConvNeXt: N·H·W rows), the
    // one-invocation-per-output kernel on wgpu; the CPU splits the 2·23·13 rows into blocks.
    let cases = [
        (3, 37, 11),
        (2, 300, 5),
        (5, 1, 3),
        (2 * 7 * 5, 24, 40),
        (2 * 23 * 13, 19, 33),
    ];
    for (n, in_f, out_f) in cases {
        let p = LinearParams { n, in_f, out_f };
        let x = random(n * in_f, &mut rng);
        let w = random(out_f * in_f, &mut rng);
        let b = random(out_f, &mut rng);
        let wb = be.upload(&w).unwrap();
        for bias in [true, false] {
            let b64 = f64s(&b);
            let mut want = vec![0f64; n * out_f];
            linear::linear_forward(
                &p,
                &f64s(&x),
                &f64s(&w),
                bias.then_some(&b64[..]),
                &mut want,
            );
            let bb = be.upload(&b).unwrap();
            let y = be
                .linear(&p, &be.upload(&x).unwrap(), &wb, bias.then_some(&bb))
                .unwrap();
            assert_close(
                &format!("{} linear {p:?} bias {bias}", be.name()),
                &be.download(&y).unwrap(),
                &want,
                1e-5,
                1e-4,
            );
        }
        let dy = random(n * out_f, &mut rng);
        let mut want_dx = vec![0f64; n * in_f];
        linear::linear_backward_input(&p, &f64s(&dy), &f64s(&w), &mut want_dx);
        let dx = be
            .linear_grad_input(&p, &be.upload(&dy).unwrap(), &wb)
            .unwrap();
        assert_close(
            &format!("{} linear backward {p:?}", be.name()),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-5,
            1e-4,
        );
    }
}

on_backends!(linear_layer:
    linear_cpu => common::cpu(),
    linear_wgpu => common::wgpu(),
);

/// The fused linear → activation call gives exactly what the ops give one after another, for
/// every activation of the table, on a short product and on one the CPU splits into row
/// blocks.
fn linear_fused<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(37);
    for (n, in_f, out_f) in [(5, 21, 13), (2 * 23 * 13, 19, 33)] {
        let p = LinearParams { n, in_f, out_f };
        let x = be.upload(&random(n * in_f, &mut rng)).unwrap();
        let w = be.upload(&random(out_f * in_f, &mut rng)).unwrap();
        let b = be.upload(&random(out_f, &mut rng)).unwrap();
        for &act in Activation::ALL {
            let a = ActivationParams {
                act,
                alpha: 0.125,
                beta: 0.875,
                len: n * out_f,
            };
            let fused = be.linear_fused(&p, &x, &w, Some(&b), &a).unwrap();
            let apart = be.linear(&p, &x, &w, Some(&b)).unwrap();
            let apart = be.activation(&a, &apart).unwrap();
            let (fused, apart) = (be.download(&fused).unwrap(), be.download(&apart).unwrap());
            let same = fused.len() == apart.len()
                && fused
                    .iter()
                    .zip(&apart)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} linear_fused {p:?} act {}", be.name(), act.name());
        }
    }
}

on_backends!(linear_fused:
    linear_fused_cpu => common::cpu(),
    linear_fused_wgpu => common::wgpu(),
);

/// Inputs of the fused CAM step: activations like a layer's (a quarter exact zeros, some
/// negative: FEM's thresholds, XGrad's sums), gradients with exact zeros (Grad-CAM++'s g = 0
/// branch), or [N, C] weights for `Weights`. `constant`: every channel constant over its pixels
/// (A[c, ·] = a_c, g[c, ·] = g_c), so every pixel's map is the same sum in the same order: a
/// constant CAM, normalized with the 1e-7 epsilon alone.
fn cam_inputs(p: &GradCamParams, constant: bool, rng: &mut StdRng) -> (Vec<f32>, Vec<f32>) {
    let hw = p.h * p.w;
    let mut value = |lo: f32, zeros: f64| {
        if rng.random_bool(zeros) {
            0.0
        } else {
            rng.random_range(lo..1.0)
        }
    };
    let mut act = Vec::with_capacity(p.n * p.c * hw);
    let mut grad = Vec::with_capacity(p.second_len());
    for _ in 0..p.n * p.c {
        // Constant channels are large, so that the constant map is too (values ≥ 2, whose
        // half-ulp exceeds the 1e-7 of the normalization).
        let (a, g) = (8.0 * value(-0.5, 0.25), value(-1.0, 0.125));
        for _ in 0..hw {
            act.push(if constant { a } else { value(-0.5, 0.25) });
            if p.combine != CamCombine::Weights {
                grad.push(if constant { g } else { value(-1.0, 0.125) });
            }
        }
        if p.combine == CamCombine::Weights {
            grad.push(g);
        }
    }
    (act, grad)
}

fn grad_cam<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(19);
    // (n, c, h, w, out_h, out_w, constant): upsampling by odd factors, C above one workgroup's
    // threads (300), same size, a 1×1 map (a constant CAM: normalizes to zeros), downsampling,
    // and channels constant over their pixels (a constant CAM).
    let cases = [
        (3, 5, 4, 3, 13, 11, false),
        (2, 300, 7, 7, 32, 29, false),
        (2, 4, 5, 6, 5, 6, false),
        (2, 3, 1, 1, 5, 4, false),
        (2, 6, 9, 8, 4, 3, false),
        (2, 7, 5, 4, 9, 10, true),
    ];
    for combine in CamCombine::ALL {
        let mut worst = 0f64;
        for renormalize in [true, false] {
            for (n, c, h, w, out_h, out_w, constant) in cases {
                let p = GradCamParams {
                    n,
                    c,
                    h,
                    w,
                    out_h,
                    out_w,
                    combine,
                    renormalize,
                };
                let (act, grad) = cam_inputs(&p, constant, &mut rng);
                let mut want = vec![0f32; n * out_h * out_w];
                cam::grad_cam(&p, &act, &grad, &mut want);
                let got = be
                    .download(
                        &be.grad_cam(&p, &be.upload(&act).unwrap(), &be.upload(&grad).unwrap())
                            .unwrap(),
                    )
                    .unwrap();
                let what = format!("{} grad_cam {p:?} constant {constant}", be.name());
                assert_close(&what, &got, &f64s(&want), CAM_ATOL, 0.0);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(&g, &w)| (g - w).abs() as f64)
                    .fold(0.0, f64::max);
                worst = worst.max(err);
                if constant || h * w == 1 {
                    assert!(want.iter().all(|&v| v == 0.0), "{what}: not constant");
                }
            }
        }
        println!("{} grad_cam {combine:?}: max error {worst:e}", be.name());
    }
}

/// See the header: the f32 kernels against the f64 oracle, on [0, 1] outputs.
const CAM_ATOL: f64 = 1e-4;

/// Grad-CAM++ with gradients scaled up (|g| < 1, 10, 100), on activations after a ReLU and on
/// activations with negative values: α's denominator 2g² + Σ A·g³ has a pole at g = -2/Σ A
/// when Σ A < 0, which larger gradients reach for more channels. Measured (see the header).
fn grad_cam_plus_plus_large_gradients<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(23);
    for negative in [false, true] {
        for scale in [1.0f32, 10.0, 100.0] {
            let mut worst = 0f64;
            for (n, c, h, w, out_h, out_w) in [(3, 5, 4, 3, 13, 11), (2, 300, 7, 7, 32, 29)] {
                let p = GradCamParams::new(&[n, c, h, w], out_h, out_w, CamCombine::PlusPlus);
                let (mut act, mut grad) = cam_inputs(&p, false, &mut rng);
                if !negative {
                    act.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                grad.iter_mut().for_each(|v| *v *= scale);
                let mut want = vec![0f32; n * out_h * out_w];
                cam::grad_cam(&p, &act, &grad, &mut want);
                let got = be
                    .download(
                        &be.grad_cam(&p, &be.upload(&act).unwrap(), &be.upload(&grad).unwrap())
                            .unwrap(),
                    )
                    .unwrap();
                let what = format!("{} grad_cam {p:?} |g| < {scale}", be.name());
                assert_close(&what, &got, &f64s(&want), CAM_ATOL, 0.0);
                worst = got
                    .iter()
                    .zip(&want)
                    .map(|(&g, &w)| (g - w).abs() as f64)
                    .fold(worst, f64::max);
            }
            println!(
                "{} Grad-CAM++ |g| < {scale}, negative activations {negative}: max error {worst:e}",
                be.name()
            );
        }
    }
}

on_backends!(grad_cam_plus_plus_large_gradients:
    grad_cam_plus_plus_large_gradients_cpu => common::cpu(),
    grad_cam_plus_plus_large_gradients_wgpu => common::wgpu(),
);

/// ScoreCAM's masked inputs against the CPU reference. (image, c0, count, c, h, w, in_c,
/// out_h, out_w): odd upsampling of the last image of a batch, a 1×1 map and one output pixel
/// (constant masks: zeros), the same size with C = 300, downsampling, ResNet's 7×7 → 224×224.
/// Activations with zeros and negative values, one channel 0 (a zero mask) and 1×1 maps
/// (constant masks of any value: (m - min) / (0 + 1e-8) = 0).
fn score_cam_masks<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(29);
    for (image, c0, count, c, h, w, in_c, out_h, out_w) in [
        (1, 2, 5, 9, 7, 7, 3, 33, 29),
        (0, 0, 4, 4, 1, 1, 3, 5, 4),
        (2, 290, 10, 300, 5, 6, 3, 5, 6),
        (0, 3, 3, 8, 4, 3, 1, 1, 1),
        (0, 0, 3, 3, 9, 8, 3, 4, 3),
        (1, 0, 2, 2, 7, 7, 3, 224, 224),
    ] {
        let p = ScoreMaskParams {
            image,
            c0,
            count,
            c,
            h,
            w,
            in_c,
            out_h,
            out_w,
        };
        let hw = h * w;
        let mut act: Vec<f32> = (0..p.activation_len())
            .map(|_| {
                if rng.random_bool(0.25) {
                    0.0
                } else {
                    rng.random_range(-0.5f32..1.0)
                }
            })
            .collect();
        let constant = (image * c + c0) * hw;
        act[constant..constant + hw].fill(0.0);
        let x = random(p.x_len(), &mut rng);
        let mut want = vec![0f32; p.output_len()];
        cam::score_cam_masks(&p, &x, &act, &mut want);
        assert!(want[..p.x_len()].iter().all(|&v| v == 0.0));
        let got = be
            .score_cam_masks(&p, &be.upload(&x).unwrap(), &be.upload(&act).unwrap())
            .unwrap();
        let got = be.download(&got).unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g - w).abs() as f64)
            .fold(0.0, f64::max);
        println!("{} score_cam_masks {p:?}: max error {err:e}", be.name());
        assert_close(
            &format!("{} score_cam_masks {p:?}", be.name()),
            &got,
            &f64s(&want),
            1e-6,
            1e-6,
        );
    }
    // Channels past the last one are an error, not a read past the buffer.
    let p = ScoreMaskParams {
        image: 0,
        c0: 3,
        count: 2,
        c: 4,
        h: 2,
        w: 2,
        in_c: 3,
        out_h: 4,
        out_w: 4,
    };
    let err = be
        .score_cam_masks(
            &p,
            &be.upload(&[0.0; 48]).unwrap(),
            &be.upload(&[0.0; 16]).unwrap(),
        )
        .err()
        .expect("channels 3..5 of 4");
    assert!(err.to_string().contains("channels 3..5 of 4"), "{err}");
}

on_backends!(score_cam_masks:
    score_cam_masks_cpu => common::cpu(),
    score_cam_masks_wgpu => common::wgpu(),
);

on_backends!(grad_cam:
    grad_cam_cpu => common::cpu(),
    grad_cam_wgpu => common::wgpu(),
);

/// Exact: a seed is 0s and 1s. The expected class of each rank comes from the engine's host
/// ranking (`engine::ranked`), on logits with many ties (and -0.0 next to 0.0) so that a
/// different tie rule fails.
fn class_seed<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(23);
    for (n, k) in [(3, 7), (2, 300), (5, 1)] {
        let logits: Vec<f32> = (0..n * k)
            .map(|_| [-1.0, -0.5, -0.0, 0.0, 0.5, 1.0][rng.random_range(0..6)])
            .collect();
        let picks = [
            ClassPick::Fixed(k - 1),
            ClassPick::Rank(0),
            ClassPick::Rank(k / 2),
            ClassPick::Rank(k - 1),
        ];
        for pick in picks {
            let p = ClassSeedParams { n, k, pick };
            let mut want = vec![0f64; n * k];
            for (i, row) in logits.chunks(k).enumerate() {
                let class = match pick {
                    ClassPick::Fixed(c) => c,
                    ClassPick::Rank(r) => gradcam::internal::engine::ranked(row)[r],
                };
                want[i * k + class] = 1.0;
            }
            let got = be.class_seed(&p, &be.upload(&logits).unwrap()).unwrap();
            let what = format!("{} class_seed {p:?}", be.name());
            assert_close(&what, &be.download(&got).unwrap(), &want, 0.0, 0.0);
        }
    }
}

on_backends!(class_seed:
    class_seed_cpu => common::cpu(),
    class_seed_wgpu => common::wgpu(),
);

/// Pipelines, uniform buffers and bind groups are made for the first batch of a shape only:
/// the buffer pool then holds what a batch needs and hands out the same buffers again, so the
/// second identical batch creates no bind group (and gives the same result).
#[test]
fn wgpu_second_batch_reuses_every_bind_group() {
    use gradcam::internal::engine::Engine;
    use gradcam::internal::model::Model;
    use gradcam::internal::tensor::Tensor;
    let model = Model::load(&common::fixture("seed_cnn/model.safetensors")).unwrap();
    let mut be = common::wgpu();
    be.poison = false; // a poisoning fill is a dispatch of its own
    let engine = Engine::new(be, model).unwrap();
    let mut rng = StdRng::seed_from_u64(31);
    let x = Tensor::new(vec![3, 3, 32, 32], random(3 * 3 * 32 * 32, &mut rng));
    let first = engine.explain(&x, None, None).unwrap();
    let created = engine.backend.bind_groups_created();
    let second = engine.explain(&x, None, None).unwrap();
    assert_eq!(engine.backend.bind_groups_created(), created);
    assert_eq!(first.cams.data, second.cams.data);
    assert_eq!(first.logits.data, second.logits.data);
}

/// (n, c_in, (h, w), c_out, (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw), groups)
type GroupedCase = (
    usize,
    usize,
    (usize, usize),
    usize,
    (usize, usize),
    (usize, usize),
    (usize, usize, usize, usize),
    (usize, usize),
    usize,
);

fn grouped_conv_cases() -> Vec<Conv2dParams> {
    let cases: [GroupedCase; 10] = [
        // depthwise 3×3, stride 1 (MobileNet)
        (2, 6, (9, 7), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
        // depthwise 5×5 stride 2 with TF "same" asymmetric padding (EfficientNet-style)
        (2, 5, (11, 10), 5, (5, 5), (2, 2), (1, 2, 2, 1), (1, 1), 5),
        // grouped, dilated
        (3, 4, (8, 9), 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2),
        // 3 groups, rectangular kernel, anisotropic stride (ResNeXt / RegNet-like)
        (2, 6, (7, 8), 9, (3, 1), (1, 2), (1, 0, 1, 0), (1, 1), 3),
        // depthwise dilated 3, channel multiplier 2 (c_out = 2·c_in)
        (2, 5, (10, 9), 10, (3, 3), (1, 1), (3, 3, 3, 3), (3, 3), 5),
        // dense but asymmetric padding (nn.ZeroPad2d before a conv)
        (2, 3, (7, 6), 4, (3, 3), (2, 2), (0, 0, 1, 1), (1, 1), 1),
        // v2's tiling: 3×3 tiles of 16×16 with partial edge tiles
        (2, 8, (37, 35), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        // ConvNeXt's 7×7 on a 7×7 map: 5 planes per workgroup, the last group partial
        (3, 7, (7, 7), 7, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 7),
        // stride 2, 5×5, odd sizes over several tiles
        (2, 6, (35, 33), 6, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6),
        // RegNet-like groups of 4 channels over several tiles (v2 stages each channel)
        (2, 8, (19, 18), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ];
    cases
        .iter()
        .map(
            |&(
                n,
                c_in,
                (h_in, w_in),
                c_out,
                (k_h, k_w),
                (stride_h, stride_w),
                pads,
                dil,
                groups,
            )| {
                Conv2dParams {
                    n,
                    c_in,
                    h_in,
                    w_in,
                    c_out,
                    k_h,
                    k_w,
                    stride_h,
                    stride_w,
                    pad_h: pads.0,
                    pad_w: pads.1,
                    pad_h_end: pads.2,
                    pad_w_end: pads.3,
                    dilation_h: dil.0,
                    dilation_w: dil.1,
                    groups,
                }
            },
        )
        .collect()
}

fn grouped_conv<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(41);
    for p in grouped_conv_cases() {
        assert!(!p.is_dense() && p.fits(), "{p:?}");
        let x = random(p.input_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let b = random(p.c_out, &mut rng);
        let dy = random(p.output_len(), &mut rng);
        let mut want_y = vec![0f64; p.output_len()];
        grouped_conv::conv2d_forward(&p, &f64s(&x), &f64s(&w), Some(&f64s(&b)), &mut want_y);
        let mut want_dx = vec![0f64; p.input_len()];
        grouped_conv::conv2d_backward_input(&p, &f64s(&dy), &f64s(&w), &mut want_dx);

        let (xb, wb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap());
        let y = be
            .conv2d(&p, &xb, &wb, Some(&be.upload(&b).unwrap()))
            .unwrap();
        let what = format!("{} grouped conv2d {p:?}", be.name());
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 1e-5, 1e-4);
        let dx = be
            .conv2d_grad_input(&p, &be.upload(&dy).unwrap(), &wb)
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-5,
            1e-4,
        );
    }
}

on_backends!(grouped_conv:
    grouped_conv_cpu => common::cpu(),
    grouped_conv_wgpu => common::wgpu(),
    grouped_conv_wgpu_v1 => common::wgpu_v1(),
);

fn activations<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(42);
    // Breakpoints exactly, then values over [-8, 8]; an odd length.
    let mut x: Vec<f32> = vec![
        -3.0, 0.0, 3.0, 6.0, -1.5, 2.0, -0.0, 1e-3, -1e-3, 20.0, -20.0,
    ];
    x.extend((0..3 * 7 * 5 * 2).map(|_| rng.random_range(-8.0f32..8.0)));
    let dy = random(x.len(), &mut rng);
    let xb = be.upload(&x).unwrap();
    let dyb = be.upload(&dy).unwrap();
    for &act in Activation::ALL {
        // hardtanh on (-1.5, 2), leaky_relu slope 0.01, elu alpha 1.3.
        let (alpha, beta) = match act {
            Activation::Hardtanh => (-1.5, 2.0),
            Activation::LeakyRelu => (0.01, 0.0),
            Activation::Elu => (1.3, 0.0),
            _ => (0.0, 0.0),
        };
        let p = ActivationParams {
            act,
            alpha,
            beta,
            len: x.len(),
        };
        let mut want_y = vec![0f64; x.len()];
        activation::activation_forward(&p, &f64s(&x), &mut want_y);
        let y = be.activation(&p, &xb).unwrap();
        let what = format!("{} {}", be.name(), act.name());
        let got_y = be.download(&y).unwrap();
        assert_close(&what, &got_y, &want_y, 2e-6, 1e-5);
        // The backward pass reads what the engine saves: the input, or this backend's output.
        let saved = match act.saved() {
            Saved::Input => x.clone(),
            Saved::Output => got_y,
        };
        let mut want_dx = vec![0f64; x.len()];
        activation::activation_backward_input(&p, &f64s(&saved), &f64s(&dy), &mut want_dx);
        let dx = be
            .activation_grad_input(&p, &be.upload(&saved).unwrap(), &dyb)
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            2e-6,
            1e-5,
        );
    }
}

on_backends!(activations:
    activations_cpu => common::cpu(),
    activations_wgpu => common::wgpu(),
);

fn broadcast_binary<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(43);
    let cases: [(&[usize], &[usize]); 6] = [
        // squeeze-excitation gate
        (&[2, 5, 7, 3], &[2, 5, 1, 1]),
        // ConvNeXt's layer scale on NCHW, and on NHWC
        (&[5, 1, 1], &[2, 5, 7, 3]),
        (&[2, 3, 4, 5], &[5]),
        // both broadcast
        (&[2, 1, 4, 1], &[1, 3, 1, 5]),
        (&[3, 4, 5], &[3, 4, 5]),
        (&[1], &[2, 3, 5]),
    ];
    for (sa, sb) in cases {
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let (p, _) = BinaryParams::broadcast(op, sa, sb).unwrap();
            let a = random(sa.iter().product(), &mut rng);
            let b = random(sb.iter().product(), &mut rng);
            let dy = random(p.len(), &mut rng);
            let (af, bf, dyf) = (f64s(&a), f64s(&b), f64s(&dy));
            let mut want = vec![0f64; p.len()];
            binary::binary_forward(&p, &af, &bf, &mut want);
            let (ab, bb, dyb) = (
                be.upload(&a).unwrap(),
                be.upload(&b).unwrap(),
                be.upload(&dy).unwrap(),
            );
            let what = format!("{} {} {sa:?} {sb:?}", be.name(), op.name());
            let y = be.binary(&p, &ab, &bb).unwrap();
            assert_close(&what, &be.download(&y).unwrap(), &want, 1e-6, 1e-6);
            for operand in 0..2 {
                // The engine never asks an add for the gradient of an output-shaped operand.
                if op == BinaryOp::Add && p.operand(operand) == p.out {
                    continue;
                }
                let mut want_dx = vec![0f64; p.operand(operand).iter().product()];
                binary::binary_backward_input(&p, operand, &dyf, &af, &bf, &mut want_dx);
                let dx = be.binary_grad_input(&p, operand, &dyb, &ab, &bb).unwrap();
                assert_close(
                    &format!("{what} backward of operand {operand}"),
                    &be.download(&dx).unwrap(),
                    &want_dx,
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}

on_backends!(broadcast_binary:
    broadcast_binary_cpu => common::cpu(),
    broadcast_binary_wgpu => common::wgpu(),
);

fn avg_pool<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(44);
    // (n, c, h, w, k, stride, pad, ceil_mode, count_include_pad)
    let cases = [
        (2, 3, 7, 9, 3, 2, 1, false, true),
        (2, 3, 7, 9, 3, 2, 1, true, true),
        (3, 2, 8, 7, 3, 1, 1, false, false),
        (2, 2, 9, 8, 2, 2, 0, true, true),
        (2, 3, 6, 5, 3, 2, 1, true, false),
        (2, 2, 5, 6, 2, 1, 0, false, true),
    ];
    for (n, c, h, w, k, s, pad, ceil_mode, count_include_pad) in cases {
        let p = AvgPool2dParams {
            window: PoolWindow {
                n,
                c,
                h_in: h,
                w_in: w,
                k_h: k,
                k_w: k,
                stride_h: s,
                stride_w: s,
                pad_h: pad,
                pad_w: pad,
                ceil_mode,
            },
            count_include_pad,
        };
        let x = random(p.window.input_len(), &mut rng);
        let dy = random(p.window.output_len(), &mut rng);
        let mut want_y = vec![0f64; p.window.output_len()];
        pool::avg_pool2d_forward(&p, &f64s(&x), &mut want_y);
        let mut want_dx = vec![0f64; p.window.input_len()];
        pool::avg_pool2d_backward_input(&p, &f64s(&dy), &mut want_dx);
        let what = format!("{} avg_pool2d {p:?}", be.name());
        let y = be.avg_pool2d(&p, &be.upload(&x).unwrap()).unwrap();
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 1e-6, 1e-5);
        let dx = be
            .avg_pool2d_grad_input(&p, &be.upload(&dy).unwrap())
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-6,
            1e-5,
        );
    }
}

on_backends!(avg_pool:
    avg_pool_cpu => common::cpu(),
    avg_pool_wgpu => common::wgpu(),
);

fn adaptive_max_pool<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(45);
    // (n, c, h_in, w_in, h_out, w_out): shrinking, growing (overlapping windows), global.
    let cases = [(2, 3, 7, 5, 3, 2), (2, 2, 4, 5, 6, 7), (3, 2, 5, 9, 1, 1)];
    for (n, c, h_in, w_in, h_out, w_out) in cases {
        let p = AdaptivePool2dParams {
            n,
            c,
            h_in,
            w_in,
            h_out,
            w_out,
        };
        // A coarse grid: ties, which go to the first maximum.
        let x: Vec<f32> = (0..p.input_len())
            .map(|_| rng.random_range(-2i32..=2) as f32 * 0.5)
            .collect();
        let dy = random(p.output_len(), &mut rng);
        let mut want_y = vec![0f64; p.output_len()];
        let mut idx = vec![0u32; p.output_len()];
        pool::adaptive_max_pool2d_forward(&p, &f64s(&x), &mut want_y, &mut idx);
        let mut want_dx = vec![0f64; p.input_len()];
        pool::adaptive_max_pool2d_backward_input(&p, &idx, &f64s(&dy), &mut want_dx);
        let what = format!("{} adaptive_max_pool2d {p:?}", be.name());
        let (y, argmax) = be.adaptive_max_pool2d(&p, &be.upload(&x).unwrap()).unwrap();
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 0.0, 0.0);
        let dx = be
            .adaptive_max_pool2d_grad_input(&p, &argmax, &be.upload(&dy).unwrap())
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            1e-6,
            1e-6,
        );
    }
}

on_backends!(adaptive_max_pool:
    adaptive_max_pool_cpu => common::cpu(),
    adaptive_max_pool_wgpu => common::wgpu(),
);

fn strided_copy<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(46);
    let shape = [2usize, 6, 5, 3];
    let len: usize = shape.iter().product();
    // (what, copy, source elements, destination elements)
    let cases = [
        // channels 2..5 of a concat's output written from a [2, 3, 5, 3] part
        (
            "concat part",
            StridedCopyParams::block(&shape, 1, 2, 3, true),
            2 * 3 * 5 * 3,
            len,
        ),
        // a chunk read out of it
        (
            "chunk",
            StridedCopyParams::block(&shape, 1, 1, 4, false),
            len,
            2 * 4 * 5 * 3,
        ),
        (
            "permute to NHWC",
            StridedCopyParams::permute(&shape, &[0, 2, 3, 1]),
            len,
            len,
        ),
        // channel shuffle with 2 groups: [N, 2, 3, H, W] → [N, 3, 2, H, W]
        (
            "channel shuffle",
            StridedCopyParams::permute(&[2, 2, 3, 5, 3], &[0, 2, 1, 3, 4]),
            len,
            len,
        ),
    ];
    for (what, p, src_len, dst_len) in cases {
        let src = random(src_len, &mut rng);
        let mut want = vec![0f32; dst_len];
        layout::strided_copy(&p, &src, &mut want);
        let mut dst = be.zeros(dst_len).unwrap();
        be.strided_copy(&p, &be.upload(&src).unwrap(), &mut dst)
            .unwrap();
        let what = format!("{} strided copy: {what}", be.name());
        assert_close(&what, &be.download(&dst).unwrap(), &f64s(&want), 0.0, 0.0);
    }
}

on_backends!(strided_copy:
    strided_copy_cpu => common::cpu(),
    strided_copy_wgpu => common::wgpu(),
);

fn layer_norm_op<B: Backend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(47);
    // NHWC (nn.LayerNorm, inner = 1) and NCHW (LayerNorm2d, inner = H·W); a mean far from 0.
    let cases = [(2 * 5 * 3, 96, 1, 0.0), (2, 20, 35, 0.0), (3, 7, 9, 5.0)];
    for (outer, dim, inner, offset) in cases {
        let p = LayerNormParams {
            outer,
            dim,
            inner,
            eps: 1e-6,
        };
        let x: Vec<f32> = random(p.len(), &mut rng)
            .iter()
            .map(|v| v + offset)
            .collect();
        let (w, b) = (random(dim, &mut rng), random(dim, &mut rng));
        let dy = random(p.len(), &mut rng);
        let mut want_y = vec![0f64; p.len()];
        layer_norm::layer_norm_forward(&p, &f64s(&x), &f64s(&w), &f64s(&b), &mut want_y);
        let mut want_dx = vec![0f64; p.len()];
        layer_norm::layer_norm_backward_input(&p, &f64s(&x), &f64s(&w), &f64s(&dy), &mut want_dx);
        let (xb, wb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap());
        let what = format!("{} layer_norm {p:?}", be.name());
        let y = be
            .layer_norm(&p, &xb, &wb, &be.upload(&b).unwrap())
            .unwrap();
        assert_close(&what, &be.download(&y).unwrap(), &want_y, 2e-5, 1e-4);
        let dx = be
            .layer_norm_grad_input(&p, &xb, &wb, &be.upload(&dy).unwrap())
            .unwrap();
        assert_close(
            &format!("{what} backward"),
            &be.download(&dx).unwrap(),
            &want_dx,
            2e-5,
            1e-4,
        );
    }
}

on_backends!(layer_norm_op:
    layer_norm_cpu => common::cpu(),
    layer_norm_wgpu => common::wgpu(),
);

/// A tensor larger than one storage binding, given to an op that binds it whole, is one error
/// that names the tensor and the limit (lavapipe's limit is 128 MiB; adapters with more than
/// 512 MiB skip the check).
#[test]
fn wgpu_tensor_past_the_binding_limit_is_named() {
    let be = common::wgpu();
    let max = be.max_binding_bytes();
    if max > 512 << 20 {
        println!("binding limit {max} bytes: nothing to check here");
        return;
    }
    let len = (max / 4) as usize + 64;
    let x = be.upload(&vec![0.5; len]).unwrap();
    let p = ActivationParams {
        act: Activation::Silu,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    let msg = be.activation(&p, &x).unwrap_err().to_string();
    assert!(
        msg.contains("silu input") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}
