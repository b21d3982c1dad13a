//! Launches of kernels/layout.cu: the strided copy behind concat, chunk/split, channel shuffle
//! and permute.

use super::args::{kernel_args, kernels};
use super::{backend_error, flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{StridedCopyParams, COPY_RANK};
use cudarc::driver::CudaSlice;

kernel_args! {
    /// A rank-6 shape or stride vector (`struct Dims6` of kernels/layout.cu).
    struct Dims6 {
        v: [i64; COPY_RANK],
    }
}

fn dims6(v: [usize; COPY_RANK]) -> Dims6 {
    Dims6 {
        v: v.map(|x| x as i64),
    }
}

kernel_args! {
    /// `struct StridedCopy` of kernels/layout.cu (shaders/layout.wgsl's `Copy`): the shape, the
    /// source's and the destination's strides and offsets, and len = the shape's elements.
    struct StridedCopy {
        shape: Dims6,
        src_st: Dims6,
        dst_st: Dims6,
        src_off: i64,
        dst_off: i64,
        len: i64,
    }
}

kernels! {
    COPY: StridedCopy = "strided_copy";
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
    let args = StridedCopy {
        shape: dims6(p.shape),
        src_st: dims6(p.src_strides),
        dst_st: dims6(p.dst_strides),
        src_off: p.src_offset as i64,
        dst_off: p.dst_offset as i64,
        len: p.len() as i64,
    };
    launch!(be, COPY, flat(p.len()); &mut *dst, src; args);
    Ok(())
}
