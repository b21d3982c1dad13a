//! PLACEHOLDER until the cpu-kernels branch merges.
use super::real::Real;
use crate::ops::*;
pub fn conv2d_forward<T: Real>(
    _p: &Conv2dParams,
    _x: &[T],
    _w: &[T],
    _b: Option<&[T]>,
    _y: &mut [T],
) {
    todo!()
}
pub fn conv2d_backward_input<T: Real>(_p: &Conv2dParams, _dy: &[T], _w: &[T], _dx: &mut [T]) {
    todo!()
}
pub fn conv2d_backward_weight<T: Real>(_p: &Conv2dParams, _x: &[T], _dy: &[T], _dw: &mut [T]) {
    todo!()
}
