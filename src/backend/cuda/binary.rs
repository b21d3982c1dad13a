//! Launches of kernels/binary.cu: add and mul with broadcasting over rank-4 shapes, and the
//! input gradient of one operand.

use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{broadcast_strides, BinaryOp, BinaryParams};
use cudarc::driver::CudaSlice;

/// A rank-4 shape or stride vector passed by value (`struct Dims4` of kernels/binary.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dims4([i32; 4]);
// SAFETY: #[repr(C)] array of i32, the layout of `struct Dims4 { int v[4]; }`.
unsafe impl cudarc::driver::DeviceRepr for Dims4 {}

fn dims4(v: [usize; 4]) -> Dims4 {
    Dims4(v.map(|x| x as i32))
}

pub fn forward(
    be: &CudaBackend,
    p: &BinaryParams,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len())?;
    let (out, sa, sb) = (
        dims4(p.out),
        dims4(broadcast_strides(p.a, p.out)),
        dims4(broadcast_strides(p.b, p.out)),
    );
    let (op, n) = ((p.op == BinaryOp::Mul) as i32, p.len() as i64);
    launch!(be, "binary_fwd", flat(p.len()); &mut y, a, b, &out, &sa, &sb, &op, &n);
    Ok(y)
}

pub fn backward(
    be: &CudaBackend,
    p: &BinaryParams,
    operand: usize,
    dy: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let shape = p.operand(operand.min(1));
    let (other_shape, other) = if operand == 0 { (p.b, b) } else { (p.a, a) };
    let len: usize = shape.iter().product();
    let reduced: usize = (0..4)
        .filter(|&k| shape[k] == 1 && p.out[k] != 1)
        .map(|k| p.out[k])
        .product();
    let mut dx = be.out(len)?;
    let mul = (p.op == BinaryOp::Mul) as i32;
    // An add reads no other operand: dy stands in for it.
    let other = if mul == 1 { other } else { dy };
    let (out, sh, so) = (
        dims4(p.out),
        dims4(shape),
        dims4(broadcast_strides(other_shape, p.out)),
    );
    let (reduced, n) = (reduced as i64, len as i64);
    launch!(be, "binary_bwd_input", flat(len); &mut dx, dy, other, &out, &sh, &so, &mul, &reduced, &n);
    Ok(dx)
}
