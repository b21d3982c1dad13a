//! Every op's input gradient checked against central finite differences in f64, on odd shapes,
//! strides, padding and batch > 1. With L(x) = Σ dy·f(x), the analytic gradient backward(dy)
//! must equal (L(x + h·e_i) - L(x - h·e_i)) / 2h. In f64 with h = 1e-5 the difference quotient
//! is exact to ~1e-10 for these piecewise-linear ops, so the tolerance is 1e-7 + 1e-6·|ref|.
//! Inputs are spread apart (no ties, nothing near a ReLU kink) so the ops stay differentiable.

use gradcam::internal::backend::cpu::{conv, elementwise, linear, pool};
use gradcam::internal::ops::*;

mod common;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

const H: f64 = 1e-5;

/// Distinct values at least 1e-2 apart, none within 5e-3 of zero.
fn spread(n: usize, rng: &mut StdRng) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|i| (i as f64 - n as f64 / 2.0 + 0.5) * 0.01 + rng.random_range(-0.002..0.002))
        .collect();
    v.shuffle(rng);
    v
}

fn random(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn check(
    what: &str,
    x: &[f64],
    out_len: usize,
    forward: impl Fn(&[f64]) -> Vec<f64>,
    backward: impl Fn(&[f64]) -> Vec<f64>,
    rng: &mut StdRng,
) {
    let dy = random(out_len, rng);
    let loss = |x: &[f64]| -> f64 { forward(x).iter().zip(&dy).map(|(a, b)| a * b).sum() };
    let analytic = backward(&dy);
    assert_eq!(analytic.len(), x.len(), "{what}: gradient length");
    let mut indices: Vec<usize> = (0..x.len()).collect();
    indices.shuffle(rng);
    indices.truncate(300);
    for i in indices {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += H;
        xm[i] -= H;
        let numeric = (loss(&xp) - loss(&xm)) / (2.0 * H);
        let err = (analytic[i] - numeric).abs();
        assert!(
            err <= 1e-7 + 1e-6 * numeric.abs(),
            "{what}: d/dx[{i}] analytic {} vs numeric {numeric} (error {err})",
            analytic[i]
        );
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(1);
    // (n, c_in, h, w, c_out, kh, kw, stride, pad)
    let cases = [
        (2, 3, 7, 9, 4, 3, 3, 2, 1),
        (3, 2, 5, 6, 3, 1, 1, 1, 0),
        (1, 3, 9, 7, 2, 5, 5, 1, 2),
        (2, 2, 8, 8, 3, 2, 2, 2, 0),
        (3, 1, 11, 10, 2, 7, 7, 2, 3),
        (2, 4, 6, 5, 3, 3, 1, 1, 1),
        (2, 3, 5, 7, 2, 1, 1, 2, 0),
    ];
    for case in cases {
        let prm = common::conv_case(case);
        let x = random(prm.input_len(), &mut rng);
        let wt = random(prm.weight_len(), &mut rng);
        let b = random(prm.c_out, &mut rng);
        check(
            &format!("conv2d {prm:?}"),
            &x,
            prm.output_len(),
            |x| {
                let mut y = vec![f64::NAN; prm.output_len()];
                conv::conv2d_forward(&prm, x, &wt, Some(&b), &mut y);
                y
            },
            |dy| {
                let mut dx = vec![f64::NAN; prm.input_len()];
                conv::conv2d_backward_input(&prm, dy, &wt, &mut dx);
                dx
            },
            &mut rng,
        );
    }
}

#[test]
fn max_pool2d_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(2);
    // (n, c, h, w, k, stride, pad)
    for (n, c, h, w, k, s, p) in [
        (2, 3, 9, 8, 3, 2, 1),
        (3, 2, 7, 7, 3, 3, 0),
        (2, 2, 6, 9, 2, 2, 0),
        (1, 3, 5, 5, 3, 1, 1),
    ] {
        let prm = MaxPool2dParams {
            n,
            c,
            h_in: h,
            w_in: w,
            k_h: k,
            k_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
            ceil_mode: false,
        };
        let x = spread(prm.input_len(), &mut rng);
        let run = |x: &[f64]| {
            let mut y = vec![f64::NAN; prm.output_len()];
            let mut idx = vec![u32::MAX; prm.output_len()];
            pool::max_pool2d_forward(&prm, x, &mut y, &mut idx);
            (y, idx)
        };
        let (_, idx) = run(&x);
        check(
            &format!("max_pool2d {prm:?}"),
            &x,
            prm.output_len(),
            |x| run(x).0,
            |dy| {
                let mut dx = vec![f64::NAN; prm.input_len()];
                pool::max_pool2d_backward_input(&prm, &idx, dy, &mut dx);
                dx
            },
            &mut rng,
        );
    }
}

#[test]
fn max_pool2d_ties_go_to_the_first_maximum_in_row_major_order() {
    let prm = MaxPool2dParams {
        n: 1,
        c: 1,
        h_in: 4,
        w_in: 4,
        k_h: 3,
        k_w: 3,
        stride_h: 2,
        stride_w: 2,
        pad_h: 1,
        pad_w: 1,
        ceil_mode: false,
    };
    let x = vec![1.0f32; 16];
    let mut y = vec![f32::NAN; 4];
    let mut idx = vec![u32::MAX; 4];
    pool::max_pool2d_forward(&prm, &x, &mut y, &mut idx);
    // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): the first valid element of each.
    assert_eq!(idx, vec![0, 1, 4, 5]);
    let mut dx = vec![f32::NAN; 16];
    pool::max_pool2d_backward_input(&prm, &idx, &[1.0, 2.0, 3.0, 4.0], &mut dx);
    let mut expected = vec![0.0f32; 16];
    expected[0] = 1.0;
    expected[1] = 2.0;
    expected[4] = 3.0;
    expected[5] = 4.0;
    assert_eq!(dx, expected);
}

#[test]
fn adaptive_avg_pool2d_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(3);
    for (n, c, h, w, oh, ow) in [
        (2, 3, 5, 3, 7, 7),
        (3, 2, 9, 8, 2, 3),
        (2, 2, 6, 6, 1, 1),
        (1, 3, 2, 1, 7, 7),
    ] {
        let prm = AdaptivePool2dParams {
            n,
            c,
            h_in: h,
            w_in: w,
            h_out: oh,
            w_out: ow,
        };
        let x = random(prm.input_len(), &mut rng);
        check(
            &format!("adaptive_avg_pool2d {prm:?}"),
            &x,
            prm.output_len(),
            |x| {
                let mut y = vec![f64::NAN; prm.output_len()];
                pool::adaptive_avg_pool2d_forward(&prm, x, &mut y);
                y
            },
            |dy| {
                let mut dx = vec![f64::NAN; prm.input_len()];
                pool::adaptive_avg_pool2d_backward_input(&prm, dy, &mut dx);
                dx
            },
            &mut rng,
        );
    }
}

#[test]
fn relu_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = spread(3 * 5 * 7, &mut rng);
    let fwd = |x: &[f64]| {
        let mut y = vec![f64::NAN; x.len()];
        elementwise::relu_forward(x, &mut y);
        y
    };
    let y = fwd(&x);
    check(
        "relu",
        &x,
        x.len(),
        fwd,
        |dy| {
            let mut dx = vec![f64::NAN; x.len()];
            elementwise::relu_backward_input(&y, dy, &mut dx);
            dx
        },
        &mut rng,
    );
}

#[test]
fn batch_norm_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let prm = ChannelAffineParams { n: 3, c: 5, hw: 7 };
    let x = random(prm.len(), &mut rng);
    let scale = random(5, &mut rng);
    let shift = random(5, &mut rng);
    check(
        "batch_norm",
        &x,
        prm.len(),
        |x| {
            let mut y = vec![f64::NAN; prm.len()];
            elementwise::channel_affine_forward(&prm, x, &scale, &shift, &mut y);
            y
        },
        |dy| {
            let mut dx = vec![f64::NAN; prm.len()];
            elementwise::channel_affine_backward_input(&prm, dy, &scale, &mut dx);
            dx
        },
        &mut rng,
    );
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(6);
    for (n, in_f, out_f) in [(3, 7, 5), (1, 13, 2), (4, 1, 3)] {
        let prm = LinearParams { n, in_f, out_f };
        let x = random(n * in_f, &mut rng);
        let w = random(out_f * in_f, &mut rng);
        let b = random(out_f, &mut rng);
        check(
            &format!("linear {prm:?}"),
            &x,
            n * out_f,
            |x| {
                let mut y = vec![f64::NAN; n * out_f];
                linear::linear_forward(&prm, x, &w, Some(&b), &mut y);
                y
            },
            |dy| {
                let mut dx = vec![f64::NAN; n * in_f];
                linear::linear_backward_input(&prm, dy, &w, &mut dx);
                dx
            },
            &mut rng,
        );
    }
}

#[test]
fn add_backward_is_the_identity_to_each_input() {
    let mut rng = StdRng::seed_from_u64(7);
    let a = random(2 * 3 * 5, &mut rng);
    let b = random(2 * 3 * 5, &mut rng);
    check(
        "add (first input)",
        &a,
        a.len(),
        |x| {
            let mut y = vec![f64::NAN; x.len()];
            elementwise::add(x, &b, &mut y);
            y
        },
        |dy| dy.to_vec(),
        &mut rng,
    );
}
