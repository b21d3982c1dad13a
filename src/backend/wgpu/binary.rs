//! Glue for shaders/binary.wgsl: add and mul with broadcasting, and the input gradient of one
//! operand (a gather over the axes it was broadcast along).

use super::kernels::{kernel, Kernel, Shader::Binary};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::{broadcast_strides, BinaryOp, BinaryParams};

const FWD: Kernel = kernel(Binary, "binary_fwd");
const BWD: Kernel = kernel(Binary, "binary_bwd");

fn words(v: [usize; 4]) -> [u32; 4] {
    v.map(u)
}

pub fn forward(
    be: &WgpuBackend,
    p: &BinaryParams,
    a: &GpuBuffer,
    b: &GpuBuffer,
) -> Result<GpuBuffer> {
    let name = p.op.name();
    be.need(a, p.a.iter().product(), &format!("{name} operand a"))?;
    be.need(b, p.b.iter().product(), &format!("{name} operand b"))?;
    let y = be.output(p.len())?;
    let mut prm = Vec::with_capacity(16);
    prm.extend(words(p.out));
    prm.extend(words(broadcast_strides(p.a, p.out)));
    prm.extend(words(broadcast_strides(p.b, p.out)));
    prm.extend([(p.op == BinaryOp::Mul) as u32, u(p.len()), 0, 0]);
    be.run(
        FWD,
        &prm,
        &[a.raw(), b.raw(), y.raw()],
        groups_1d(p.len(), 256)?,
    )?;
    Ok(y)
}

pub fn backward(
    be: &WgpuBackend,
    p: &BinaryParams,
    operand: usize,
    dy: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
) -> Result<GpuBuffer> {
    let name = p.op.name();
    if operand > 1 {
        return Err(super::context::backend_error(format!(
            "{name}.backward: operand {operand} of a binary op"
        )));
    }
    be.need(dy, p.len(), &format!("{name} output gradient"))?;
    let shape = p.operand(operand);
    let (other_shape, other) = if operand == 0 { (p.b, b) } else { (p.a, a) };
    let mul = p.op == BinaryOp::Mul;
    if mul {
        be.need(
            other,
            other_shape.iter().product(),
            &format!("{name} operand"),
        )?;
    }
    let len: usize = shape.iter().product();
    let reduced: usize = (0..4)
        .filter(|&k| shape[k] == 1 && p.out[k] != 1)
        .map(|k| p.out[k])
        .product();
    let dx = be.output(len)?;
    let mut prm = Vec::with_capacity(16);
    prm.extend(words(p.out));
    prm.extend(words(shape));
    prm.extend(words(broadcast_strides(other_shape, p.out)));
    prm.extend([mul as u32, u(len), u(reduced), 0]);
    // An add reads no other operand: dy stands in for the binding.
    let other = if mul { other.raw() } else { dy.raw() };
    be.run(
        BWD,
        &prm,
        &[dy.raw(), other, dx.raw()],
        groups_1d(len, 256)?,
    )?;
    Ok(dx)
}
