//! Launches of kernels/binary.cu: add and mul with broadcasting over rank-4 shapes, and the
//! input gradient of one operand.

use super::args::{kernel_args, kernels};
use super::{flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{broadcast_strides, BinaryOp, BinaryParams};
use cudarc::driver::CudaSlice;

kernel_args! {
    /// A rank-4 shape or stride vector (`struct Dims4` of kernels/binary.cu).
    struct Dims4 {
        v: [i32; 4],
    }
}

fn dims4(v: [usize; 4]) -> Dims4 {
    Dims4 {
        v: v.map(|x| x as i32),
    }
}

kernel_args! {
    /// `struct BinaryFwd` of kernels/binary.cu (shaders/binary.wgsl's): len output elements;
    /// out, the output's shape; sa, sb, the operands' strides at the output's indices (0 along
    /// broadcast axes); op, 0 add or 1 mul.
    struct BinaryFwd {
        len: i64,
        out: Dims4,
        sa: Dims4,
        sb: Dims4,
        op: i32,
        _pad: i32,
    }
}

kernel_args! {
    /// `struct BinaryBwd` of kernels/binary.cu (shaders/binary.wgsl's): len elements of the
    /// operand; reduced, output positions per operand element; out, the output's shape; shape,
    /// the operand's; so, the other operand's strides at the output's indices; mul, 1 for a
    /// product.
    struct BinaryBwd {
        len: i64,
        reduced: i64,
        out: Dims4,
        shape: Dims4,
        so: Dims4,
        mul: i32,
        _pad: i32,
    }
}

kernels! {
    FWD: BinaryFwd = "binary_fwd";
    BWD: BinaryBwd = "binary_bwd_input";
}

pub fn forward(
    be: &CudaBackend,
    p: &BinaryParams,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.len())?;
    let args = BinaryFwd {
        len: p.len() as i64,
        out: dims4(p.out),
        sa: dims4(broadcast_strides(p.a, p.out)),
        sb: dims4(broadcast_strides(p.b, p.out)),
        op: (p.op == BinaryOp::Mul) as i32,
        _pad: 0,
    };
    launch!(be, FWD, flat(p.len()); &mut y, a, b; args);
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
    let args = BinaryBwd {
        len: len as i64,
        reduced: reduced as i64,
        out: dims4(p.out),
        shape: dims4(shape),
        so: dims4(broadcast_strides(other_shape, p.out)),
        mul,
        _pad: 0,
    };
    launch!(be, BWD, flat(len); &mut dx, dy, other; args);
    Ok(dx)
}
