//! Glue for shaders/layout.wgsl: the strided copy behind concat, chunk/split, channel shuffle
//! and permute.

use super::context::backend_error;
use super::kernels::{kernel, Kernel, Shader::Layout};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::{StridedCopyParams, COPY_RANK};

const COPY: Kernel = kernel(Layout, "strided_copy");

/// The rank-6 axes as two vec4s (the last two words 0 for strides, 1 for the shape).
fn two_vec4(v: [usize; COPY_RANK], fill: u32) -> [u32; 8] {
    let mut w = [fill; 8];
    for (o, &x) in w.iter_mut().zip(&v) {
        *o = u(x);
    }
    w
}

pub fn strided_copy(
    be: &WgpuBackend,
    p: &StridedCopyParams,
    src: &GpuBuffer,
    dst: &mut GpuBuffer,
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
    let mut prm = Vec::with_capacity(28);
    prm.extend(two_vec4(p.shape, 1));
    prm.extend(two_vec4(p.src_strides, 0));
    prm.extend(two_vec4(p.dst_strides, 0));
    prm.extend([u(p.src_offset), u(p.dst_offset), u(p.len()), 0]);
    be.run(
        COPY,
        &prm,
        &[src.raw(), dst.raw()],
        groups_1d(p.len(), 256)?,
    )
}
