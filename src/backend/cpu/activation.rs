//! PLACEHOLDER until the cpu-kernels branch merges.
use super::real::Real;
use crate::ops::*;
pub fn activation_forward<T: Real>(p: &ActivationParams, x: &[T], y: &mut [T]) {
    let (a, b) = (T::of(p.alpha as f64), T::of(p.beta as f64));
    for (o, &v) in y.iter_mut().zip(x) {
        *o = p.act.forward(v, a, b);
    }
}
pub fn activation_backward_input<T: Real>(p: &ActivationParams, s: &[T], dy: &[T], dx: &mut [T]) {
    let (a, b) = (T::of(p.alpha as f64), T::of(p.beta as f64));
    for ((o, &v), &g) in dx.iter_mut().zip(s).zip(dy) {
        *o = g * p.act.derivative(v, a, b);
    }
}
