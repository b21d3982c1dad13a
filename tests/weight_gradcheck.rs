//! Weight and bias gradients of conv2d and linear, and the softmax cross-entropy gradient,
//! checked against central finite differences in f64, in the style of tests/gradcheck.rs.
//! With L(w) = Σ dy·f(w), the analytic gradient must equal (L(w + h·e_i) - L(w - h·e_i)) / 2h.
//! conv2d and linear are linear in their weights and biases, so in f64 with h = 1e-5 the
//! quotient is exact up to rounding (~1e-10): tolerance 1e-7 + 1e-6·|ref|. The cross-entropy
//! is smooth; its central difference has a truncation error of O(h²) ≈ 1e-10, same tolerance.

use gradcam::internal::backend::cpu::{conv, linear, training, weight_grad};
use gradcam::internal::ops::*;

mod common;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `analytic` (the gradient of Σ dy·f at `v`) against central differences of `loss` on up to
/// 300 random coordinates, within 1e-7 + 1e-6·|ref| (see the header).
fn check(what: &str, v: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64, rng: &mut StdRng) {
    common::check_fd(what, v, analytic, loss, (300, 1e-7, 1e-6), rng);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn conv2d_weight_and_bias_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(11);
    // (n, c_in, h, w, c_out, kh, kw, stride, pad): odd shapes, stride 2, padding, 1×1, batch > 1.
    let cases = [
        (2, 3, 7, 9, 4, 3, 3, 2, 1),
        (3, 2, 5, 6, 3, 1, 1, 1, 0),
        (1, 3, 9, 7, 2, 5, 5, 1, 2),
        (2, 2, 8, 8, 3, 2, 2, 2, 0),
        (2, 4, 6, 5, 3, 3, 1, 1, 1),
        (2, 3, 5, 7, 2, 1, 1, 2, 0),
    ];
    for case in cases {
        let prm = common::conv_case(case);
        let x = random(prm.input_len(), &mut rng);
        let wt = random(prm.weight_len(), &mut rng);
        let b = random(prm.c_out, &mut rng);
        let dy = random(prm.output_len(), &mut rng);
        let loss = |wt: &[f64], b: &[f64]| {
            let mut y = vec![f64::NAN; prm.output_len()];
            conv::conv2d_forward(&prm, &x, wt, Some(b), &mut y);
            dot(&y, &dy)
        };
        let mut dw = vec![f64::NAN; prm.weight_len()];
        weight_grad::conv2d_backward_weight(&prm, &x, &dy, &mut dw);
        check(
            &format!("conv2d weight {prm:?}"),
            &wt,
            &dw,
            |w| loss(w, &b),
            &mut rng,
        );
        let mut db = vec![f64::NAN; prm.c_out];
        weight_grad::conv2d_backward_bias(&prm, &dy, &mut db);
        check(
            &format!("conv2d bias {prm:?}"),
            &b,
            &db,
            |b| loss(&wt, b),
            &mut rng,
        );
    }
}

#[test]
fn linear_weight_and_bias_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(12);
    for (n, in_f, out_f) in [(1, 5, 3), (4, 7, 2), (3, 1, 6), (5, 16, 9)] {
        let prm = LinearParams { n, in_f, out_f };
        let x = random(n * in_f, &mut rng);
        let wt = random(out_f * in_f, &mut rng);
        let b = random(out_f, &mut rng);
        let dy = random(n * out_f, &mut rng);
        let loss = |wt: &[f64], b: &[f64]| {
            let mut y = vec![f64::NAN; n * out_f];
            linear::linear_forward(&prm, &x, wt, Some(b), &mut y);
            dot(&y, &dy)
        };
        let mut dw = vec![f64::NAN; out_f * in_f];
        weight_grad::linear_backward_weight(&prm, &x, &dy, &mut dw);
        check(
            &format!("linear weight {prm:?}"),
            &wt,
            &dw,
            |w| loss(w, &b),
            &mut rng,
        );
        let mut db = vec![f64::NAN; out_f];
        weight_grad::linear_backward_bias(&prm, &dy, &mut db);
        check(
            &format!("linear bias {prm:?}"),
            &b,
            &db,
            |b| loss(&wt, b),
            &mut rng,
        );
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(13);
    for (n, classes) in [(1, 2), (4, 3), (3, 10)] {
        let logits: Vec<f64> = random(n * classes, &mut rng)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..classes)).collect();
        let mut d = vec![f64::NAN; n * classes];
        training::softmax_cross_entropy(&logits, &labels, classes, &mut d);
        let loss = |l: &[f64]| {
            let mut scratch = vec![0.0; n * classes];
            training::softmax_cross_entropy(l, &labels, classes, &mut scratch).0
        };
        check(
            &format!("cross entropy n={n} classes={classes}"),
            &logits,
            &d,
            loss,
            &mut rng,
        );
    }
}

#[test]
fn cross_entropy_value_is_log_sum_exp_minus_label_logit() {
    // Two rows: uniform logits give ln(classes); a confident right answer gives ~0.
    let logits = [0.0f64, 0.0, 0.0, 0.0, 50.0, 0.0];
    let mut d = [0.0; 6];
    let (loss, correct) = training::softmax_cross_entropy(&logits, &[1, 1], 3, &mut d);
    assert!((loss - 3f64.ln() / 2.0).abs() < 1e-12, "loss {loss}");
    assert_eq!(
        correct, 1,
        "ties go to the first maximum, so row 0 predicts class 0"
    );
}

#[test]
fn dropout_scales_kept_units_and_its_gradient_uses_the_same_mask() {
    let x = [1.0f64, 2.0, 3.0, 4.0];
    let keep = [true, false, true, false];
    let mut y = [f64::NAN; 4];
    training::dropout_forward(&x, &keep, 0.5, &mut y);
    assert_eq!(y, [2.0, 0.0, 6.0, 0.0]);
    let mut dx = [f64::NAN; 4];
    training::dropout_backward_input(&[1.0, 1.0, 1.0, 1.0], &keep, 0.5, &mut dx);
    assert_eq!(dx, [2.0, 0.0, 2.0, 0.0]);
}

#[test]
fn sgd_follows_torch_optim_sgd() {
    // torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01), two steps by hand:
    // step 1: g = 0.5 + 0.01·2 = 0.52, buf = 0.52, w = 2 - 0.052 = 1.948
    // step 2: g = 0.5 + 0.01·1.948 = 0.51948, buf = 0.9·0.52 + 0.51948 = 0.98748,
    //         w = 1.948 - 0.098748 = 1.849252
    let s = training::SgdParams {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let mut w = vec![2.0f64];
    let mut v = vec![];
    training::sgd_step(&s, &mut w, &[0.5], &mut v);
    assert!((w[0] - 1.948).abs() < 1e-12);
    training::sgd_step(&s, &mut w, &[0.5], &mut v);
    assert!((w[0] - 1.849252).abs() < 1e-12, "{}", w[0]);
}
