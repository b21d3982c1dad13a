//! PLACEHOLDER until the cpu-kernels branch merges.
use crate::ops::*;
pub fn strided_copy<T: Copy + Send + Sync>(p: &StridedCopyParams, src: &[T], dst: &mut [T]) {
    for i in 0..p.len() {
        let mut r = i;
        let (mut s, mut d) = (p.src_offset, p.dst_offset);
        for k in (0..COPY_RANK).rev() {
            let c = r % p.shape[k];
            r /= p.shape[k];
            s += c * p.src_strides[k];
            d += c * p.dst_strides[k];
        }
        dst[d] = src[s];
    }
}
