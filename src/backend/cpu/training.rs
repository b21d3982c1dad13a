//! The training-only kernels: dropout in training mode, softmax cross-entropy with its
//! gradient, and the SGD update, each written to match PyTorch's definition exactly.

use super::real::Real;
pub use crate::ops::SgdParams;

/// Training-mode dropout with a given keep mask: y = x·mask/(1-p), as `nn.Dropout` (the scale
/// keeps each activation's expectation, so evaluation is the identity). `keep[i]` true keeps x\[i\].
pub fn dropout_forward<T: Real>(x: &[T], keep: &[bool], p: f64, y: &mut [T]) {
    assert!(x.len() == keep.len() && x.len() == y.len());
    let scale = T::of(1.0 / (1.0 - p));
    for ((o, &v), &k) in y.iter_mut().zip(x).zip(keep) {
        *o = if k { v * scale } else { T::zero() };
    }
}

/// dx = dy·mask/(1-p): dropout is linear in its input for a fixed mask.
pub fn dropout_backward_input<T: Real>(dy: &[T], keep: &[bool], p: f64, dx: &mut [T]) {
    dropout_forward(dy, keep, p, dx);
}

/// Dropout with its mask given as scale factors, as the training executor uploads it:
/// y = x·mask, where mask\[i\] is 0 (dropped: y\[i\] = 0 whatever x\[i\], as `dropout_forward`) or
/// the keep scale 1/(1-p) (the same product as `dropout_forward`'s). Also the input gradient,
/// dx = dy·mask.
pub fn dropout_scaled<T: Real>(x: &[T], mask: &[T], y: &mut [T]) {
    assert!(x.len() == mask.len() && x.len() == y.len());
    for ((o, &v), &m) in y.iter_mut().zip(x).zip(mask) {
        *o = if m == T::zero() { T::zero() } else { v * m };
    }
}

/// Mean softmax cross-entropy over the batch (`nn.CrossEntropyLoss()` defaults) and its
/// gradient with respect to the logits, (softmax - onehot)/N. logits, dlogits: [N, classes].
/// Returns the loss and how many rows have their label as the (first) maximum.
pub fn softmax_cross_entropy<T: Real>(
    logits: &[T],
    labels: &[usize],
    classes: usize,
    dlogits: &mut [T],
) -> (f64, usize) {
    let n = labels.len();
    assert!(logits.len() == n * classes && dlogits.len() == logits.len());
    let mut loss = 0.0;
    let mut correct = 0;
    for ((row, d), &label) in logits
        .chunks(classes)
        .zip(dlogits.chunks_mut(classes))
        .zip(labels)
    {
        assert!(label < classes, "label {label} out of range");
        // Subtracting the maximum keeps exp() finite; log-sum-exp in f64 for accuracy.
        let max = row
            .iter()
            .map(|v| v.f64())
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v.f64() - max).exp()).sum();
        let lse = max + sum.ln();
        loss += lse - row[label].f64();
        let argmax =
            row.iter().enumerate().fold(
                0,
                |best, (i, v)| if v.f64() > row[best].f64() { i } else { best },
            );
        correct += usize::from(argmax == label);
        for (i, (o, v)) in d.iter_mut().zip(row).enumerate() {
            let p = (v.f64() - lse).exp();
            *o = T::of((p - f64::from(u8::from(i == label))) / n as f64);
        }
    }
    (loss / n as f64, correct)
}

/// One `torch.optim.SGD` step on one parameter tensor, in PyTorch's order: g = grad + wd·w;
/// with momentum, buf = g on the first step and buf = momentum·buf + g after; w -= lr·buf.
/// `velocity` is empty before the first step (PyTorch's missing momentum buffer).
pub fn sgd_step<T: Real>(s: &SgdParams, w: &mut [T], grad: &[T], velocity: &mut Vec<T>) {
    assert_eq!(w.len(), grad.len());
    let (lr, mom, wd) = (T::of(s.lr), T::of(s.momentum), T::of(s.weight_decay));
    let first = velocity.is_empty();
    if s.momentum != 0.0 && first {
        velocity.resize(w.len(), T::zero());
    }
    for (i, (w, &g)) in w.iter_mut().zip(grad).enumerate() {
        let mut g = if s.weight_decay != 0.0 {
            g + wd * *w
        } else {
            g
        };
        if s.momentum != 0.0 {
            let b = &mut velocity[i];
            *b = if first { g } else { mom * *b + g };
            g = *b;
        }
        *w = *w - lr * g;
    }
}
