//! Launches of kernels/layout.cu: the strided copy behind concat, chunk/split, channel shuffle
//! and permute.

use super::{backend_error, flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{StridedCopyParams, COPY_RANK};
use cudarc::driver::CudaSlice;

/// A rank-6 shape or stride vector passed by value (`struct Dims6` of kernels/layout.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dims6([i64; COPY_RANK]);
// SAFETY: #[repr(C)] array of i64, the layout of `struct Dims6 { long long v[6]; }`.
unsafe impl cudarc::driver::DeviceRepr for Dims6 {}

fn dims6(v: [usize; COPY_RANK]) -> Dims6 {
    Dims6(v.map(|x| x as i64))
}

pub fn strided_copy(
    be: &CudaBackend,
    p: &StridedCopyParams,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
) -> Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    let last = |offset: usize, strides: &[usize; COPY_RANK]| {
        offset
            + (0..COPY_RANK)
                .map(|k| (p.shape[k] - 1) * strides[k])
                .sum::<usize>()
    };
    if last(p.src_offset, &p.src_strides) >= src.len()
        || last(p.dst_offset, &p.dst_strides) >= dst.len()
    {
        return Err(backend_error(format!(
            "strided copy of shape {:?} past its source ({} elements) or destination ({})",
            p.shape,
            src.len(),
            dst.len()
        )));
    }
    let (shape, ss, ds) = (dims6(p.shape), dims6(p.src_strides), dims6(p.dst_strides));
    let (so, d_o, n) = (p.src_offset as i64, p.dst_offset as i64, p.len() as i64);
    launch!(be, "strided_copy", flat(p.len()); &mut *dst, src, &shape, &ss, &ds, &so, &d_o, &n);
    Ok(())
}
