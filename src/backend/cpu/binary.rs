//! PLACEHOLDER until the cpu-kernels branch merges.
use super::real::Real;
use crate::ops::*;
fn idx(i: usize, out: [usize; 4], st: [usize; 4]) -> usize {
    let mut r = i;
    let mut o = 0;
    for k in (0..4).rev() {
        o += (r % out[k]) * st[k];
        r /= out[k];
    }
    o
}
pub fn binary_forward<T: Real>(p: &BinaryParams, a: &[T], b: &[T], y: &mut [T]) {
    let (sa, sb) = (broadcast_strides(p.a, p.out), broadcast_strides(p.b, p.out));
    for (i, v) in y.iter_mut().enumerate() {
        let (x, z) = (a[idx(i, p.out, sa)], b[idx(i, p.out, sb)]);
        *v = match p.op {
            BinaryOp::Add => x + z,
            BinaryOp::Mul => x * z,
        };
    }
}
pub fn binary_backward_input<T: Real>(
    p: &BinaryParams,
    operand: usize,
    dy: &[T],
    a: &[T],
    b: &[T],
    dx: &mut [T],
) {
    let (sa, sb) = (broadcast_strides(p.a, p.out), broadcast_strides(p.b, p.out));
    dx.iter_mut().for_each(|v| *v = T::zero());
    for i in 0..p.len() {
        let (ia, ib) = (idx(i, p.out, sa), idx(i, p.out, sb));
        let g = match (p.op, operand) {
            (BinaryOp::Add, _) => dy[i],
            (BinaryOp::Mul, 0) => dy[i] * b[ib],
            _ => dy[i] * a[ia],
        };
        dx[if operand == 0 { ia } else { ib }] += g;
    }
}
