//! The training ops of `TrainBackend` (weight and bias gradients of conv2d and linear, dropout
//! by a mask, the SGD step) on every backend that trains: `_wgpu` (and `_wgpu_v1` for the two
//! weight-gradient kernel variants of conv2d) and `_cpu`, the trait's CPU implementation. Seeded
//! random inputs, odd shapes, stride 2, padding, 1×1, batch > 1, shapes that span several 64×64
//! tiles and reductions that are not a multiple of the tile's K step; every output buffer is
//! poisoned with NaN before its kernel runs (`common::cpu()`, `common::wgpu()`), so an element a
//! kernel fails to write fails the test.
//!
//! Each gradient is checked twice: against the CPU kernels run in f64 on the same inputs (every
//! element), and against central finite differences of the f64 CPU forward pass (up to 100
//! random coordinates; as tests/weight_gradcheck.rs does for the CPU kernels themselves): with
//! L(w) = Σ dy·f(w), d L / d w_i ≈ (L(w + h·e_i) - L(w - h·e_i)) / 2h, h = 1e-5, exact up to
//! ~1e-10 because conv2d and linear are linear in their weights and biases.
//!
//! Tolerance |got - ref| ≤ 1e-5 + 1e-4·|ref| for the gradients: the backend sums R products of
//! values in [-1, 1] in f32 (R = N·Ho·Wo ≤ 220 for a conv weight, N·Ho·Wo for a bias, N for a
//! linear layer), in another order than the reference; each addition rounds by up to 2⁻²⁴ of a
//! partial sum whose size grows like √R/3, so the error stays near √R·2⁻²⁴·√R/3 ≈ 4e-6 for
//! R = 220, under the bound. Dropout is exact (one f32 product per element, the CPU's). SGD:
//! 1e-6 absolute, a few f32 operations per element (a GPU may fuse a·b + c into one rounding).

mod common;

use gradcam::internal::backend::cpu::{conv, grouped_conv, linear, training, weight_grad};
use gradcam::internal::backend::TrainBackend;
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

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            g.is_finite() && err <= atol + rtol * w.abs(),
            "{what}: element {i} is {g}, expected {w} (error {err:e})"
        );
    }
}

/// `got` (the gradient of Σ dy·f at `v`, from the backend in f32) against central differences
/// of `loss` (in f64) on up to 100 random coordinates, within ATOL + RTOL·|ref|.
#[track_caller]
fn check_fd(what: &str, v: &[f64], got: &[f32], loss: impl Fn(&[f64]) -> f64, rng: &mut StdRng) {
    let got: Vec<f64> = got.iter().map(|&g| g as f64).collect();
    common::check_fd(what, v, &got, loss, (100, ATOL, RTOL), rng);
}

fn conv_cases() -> Vec<Conv2dParams> {
    // (n, c_in, h, w, c_out, kh, kw, stride, pad): odd shapes, stride 2, padding, 1×1 (plain
    // and strided), batch > 1; the last two span several 64×64 tiles of the v2 kernel (70 output
    // channels; K = 630) with reductions of 220 and 27 pixels.
    [
        (2, 3, 7, 9, 4, 3, 3, 2, 1),
        (3, 2, 5, 6, 3, 1, 1, 1, 0),
        (1, 3, 9, 7, 2, 5, 5, 1, 2),
        (2, 2, 8, 8, 3, 2, 2, 2, 0),
        (2, 4, 6, 5, 3, 3, 1, 1, 1),
        (2, 3, 5, 7, 2, 1, 1, 2, 0),
        (2, 5, 11, 10, 70, 3, 3, 1, 1),
        (3, 70, 6, 5, 9, 3, 3, 2, 1),
    ]
    .into_iter()
    .map(common::conv_case)
    .collect()
}

fn conv2d_weight_and_bias_grads<B: TrainBackend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(31);
    for p in conv_cases() {
        let x = random(p.input_len(), &mut rng);
        let w = random(p.weight_len(), &mut rng);
        let b = random(p.c_out, &mut rng);
        let dy = random(p.output_len(), &mut rng);
        let (x64, w64, b64, dy64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dy));
        let (xb, dyb) = (be.upload(&x).unwrap(), be.upload(&dy).unwrap());
        let dw = be
            .download(&be.conv2d_grad_weight(&p, &xb, &dyb).unwrap())
            .unwrap();
        let db = be
            .download(&be.conv2d_grad_bias(&p, &dyb).unwrap())
            .unwrap();

        let mut want = vec![0f64; p.weight_len()];
        weight_grad::conv2d_backward_weight(&p, &x64, &dy64, &mut want);
        let what = format!("{} conv2d weight grad {p:?}", be.name());
        assert_close(&what, &dw, &want, ATOL, RTOL);
        let mut want = vec![0f64; p.c_out];
        weight_grad::conv2d_backward_bias(&p, &dy64, &mut want);
        let what = format!("{} conv2d bias grad {p:?}", be.name());
        assert_close(&what, &db, &want, ATOL, RTOL);

        let loss = |w: &[f64], b: &[f64]| {
            let mut y = vec![0f64; p.output_len()];
            conv::conv2d_forward(&p, &x64, w, Some(b), &mut y);
            dot(&y, &dy64)
        };
        let what = format!(
            "{} conv2d weight grad {p:?} (finite differences)",
            be.name()
        );
        check_fd(&what, &w64, &dw, |w| loss(w, &b64), &mut rng);
        let what = format!("{} conv2d bias grad {p:?} (finite differences)", be.name());
        check_fd(&what, &b64, &db, |b| loss(&w64, b), &mut rng);
    }
}

on_backends!(conv2d_weight_and_bias_grads:
    conv2d_weight_and_bias_grads_cpu => common::cpu(),
    conv2d_weight_and_bias_grads_wgpu => common::wgpu(),
    conv2d_weight_and_bias_grads_wgpu_v1 => common::wgpu_v1(),
);

/// The weight gradient of grouped (depthwise included), dilated, asymmetrically padded convs.
fn grouped_conv2d_weight_grad<B: TrainBackend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(32);
    // (n, c_in, h, w, c_out, k, stride, (top, left, bottom, right), dilation, groups)
    let cases = [
        (2, 6, 9, 7, 6, 3, 1, (1, 1, 1, 1), 1, 6),
        (2, 5, 11, 10, 5, 5, 2, (1, 2, 2, 1), 1, 5),
        (3, 4, 8, 9, 6, 3, 1, (2, 2, 2, 2), 2, 2),
        (2, 6, 7, 8, 9, 3, 2, (1, 0, 1, 0), 1, 3),
    ];
    for (n, c_in, h_in, w_in, c_out, k, s, pads, d, groups) in cases {
        let p = Conv2dParams::dense(n, c_in, (h_in, w_in), c_out, (k, k), (s, s), (0, 0))
            .with_padding([pads.0, pads.1, pads.2, pads.3])
            .with_dilation((d, d))
            .with_groups(groups);
        let x = random(p.input_len(), &mut rng);
        let dy = random(p.output_len(), &mut rng);
        let dw = be
            .download(
                &be.conv2d_grad_weight(&p, &be.upload(&x).unwrap(), &be.upload(&dy).unwrap())
                    .unwrap(),
            )
            .unwrap();
        let mut want = vec![0f64; p.weight_len()];
        grouped_conv::conv2d_backward_weight(&p, &f64s(&x), &f64s(&dy), &mut want);
        let what = format!("{} grouped conv2d weight grad {p:?}", be.name());
        assert_close(&what, &dw, &want, ATOL, RTOL);
    }
}

on_backends!(grouped_conv2d_weight_grad:
    grouped_conv2d_weight_grad_cpu => common::cpu(),
    grouped_conv2d_weight_grad_wgpu => common::wgpu(),
);

fn linear_weight_and_bias_grads<B: TrainBackend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(32);
    // (n, in, out): batch 1, odd sizes, a single input, more outputs than a workgroup.
    for (n, in_f, out_f) in [(1, 5, 3), (4, 7, 2), (3, 1, 6), (5, 16, 9), (7, 33, 300)] {
        let p = LinearParams { n, in_f, out_f };
        let x = random(n * in_f, &mut rng);
        let w = random(out_f * in_f, &mut rng);
        let b = random(out_f, &mut rng);
        let dy = random(n * out_f, &mut rng);
        let (x64, w64, b64, dy64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dy));
        let (xb, dyb) = (be.upload(&x).unwrap(), be.upload(&dy).unwrap());
        let dw = be
            .download(&be.linear_grad_weight(&p, &xb, &dyb).unwrap())
            .unwrap();
        let db = be
            .download(&be.linear_grad_bias(&p, &dyb).unwrap())
            .unwrap();

        let mut want = vec![0f64; out_f * in_f];
        weight_grad::linear_backward_weight(&p, &x64, &dy64, &mut want);
        let what = format!("{} linear weight grad {p:?}", be.name());
        assert_close(&what, &dw, &want, ATOL, RTOL);
        let mut want = vec![0f64; out_f];
        weight_grad::linear_backward_bias(&p, &dy64, &mut want);
        let what = format!("{} linear bias grad {p:?}", be.name());
        assert_close(&what, &db, &want, ATOL, RTOL);

        let loss = |w: &[f64], b: &[f64]| {
            let mut y = vec![0f64; n * out_f];
            linear::linear_forward(&p, &x64, w, Some(b), &mut y);
            dot(&y, &dy64)
        };
        let what = format!(
            "{} linear weight grad {p:?} (finite differences)",
            be.name()
        );
        check_fd(&what, &w64, &dw, |w| loss(w, &b64), &mut rng);
        let what = format!("{} linear bias grad {p:?} (finite differences)", be.name());
        check_fd(&what, &b64, &db, |b| loss(&w64, b), &mut rng);
    }
}

on_backends!(linear_weight_and_bias_grads:
    linear_weight_and_bias_grads_cpu => common::cpu(),
    linear_weight_and_bias_grads_wgpu => common::wgpu(),
);

/// Dropout by a scale mask gives exactly the CPU kernel's training-mode dropout with the same
/// keep mask, dropped elements +0 whatever the input (infinities and NaN included), both as the
/// forward op and as its input gradient.
fn dropout_by_mask<B: TrainBackend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(33);
    let p = 0.3;
    let scale = (1.0 / (1.0 - p)) as f32;
    for len in [1, 7, 256, 1000] {
        let mut x = random(len, &mut rng);
        let keep: Vec<bool> = (0..len).map(|_| !rng.random_bool(p)).collect();
        // Non-finite inputs where the mask drops them: still exactly 0.
        if let Some(i) = keep.iter().position(|k| !k) {
            x[i] = f32::INFINITY;
        }
        if let Some(i) = keep.iter().rposition(|k| !k) {
            x[i] = f32::NAN;
        }
        let mask: Vec<f32> = keep.iter().map(|&k| if k { scale } else { 0.0 }).collect();
        let mut want = vec![f32::NAN; len];
        training::dropout_forward(&x, &keep, p, &mut want);
        let y = be
            .dropout(&be.upload(&x).unwrap(), &be.upload(&mask).unwrap(), len)
            .unwrap();
        let got = be.download(&y).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{} dropout, len {len}", be.name());
    }
}

on_backends!(dropout_by_mask:
    dropout_by_mask_cpu => common::cpu(),
    dropout_by_mask_wgpu => common::wgpu(),
);

/// Two SGD steps (so the momentum buffer is created, then used) against the CPU kernel in f64,
/// with and without momentum and weight decay; without momentum no buffer is kept.
fn sgd_two_steps<B: TrainBackend>(be: &B) {
    let mut rng = StdRng::seed_from_u64(34);
    for (momentum, weight_decay) in [(0.9, 5e-3), (0.9, 0.0), (0.0, 1e-2), (0.0, 0.0)] {
        let s = SgdParams {
            lr: 0.1,
            momentum,
            weight_decay,
        };
        let len = 1000;
        let w0 = random(len, &mut rng);
        let mut w = be.upload(&w0).unwrap();
        let mut velocity = None;
        let mut w64 = f64s(&w0);
        let mut v64 = vec![];
        for step in 0..2 {
            let g = random(len, &mut rng);
            be.sgd_step(&s, &mut w, &be.upload(&g).unwrap(), &mut velocity, len)
                .unwrap();
            training::sgd_step(&s, &mut w64, &f64s(&g), &mut v64);
            let what = format!("{} sgd {s:?} step {step}", be.name());
            assert_close(&what, &be.download(&w).unwrap(), &w64, 1e-6, 0.0);
            match &velocity {
                Some(v) => {
                    let what = format!("{what} momentum buffer");
                    assert_close(&what, &be.download(v).unwrap(), &v64, 1e-6, 0.0);
                }
                None => assert_eq!(momentum, 0.0, "{what}: momentum buffer missing"),
            }
        }
    }
}

on_backends!(sgd_two_steps:
    sgd_two_steps_cpu => common::cpu(),
    sgd_two_steps_wgpu => common::wgpu(),
);
