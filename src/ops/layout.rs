//! Layout ops — concat, slice (chunk/split), channel shuffle, permute — all as one strided
//! copy: dst[dst_offset + Σ i_k·dst_strides[k]] = src[src_offset + Σ i_k·src_strides[k]] for
//! every index i of `shape`. Shapes have up to six axes (a shuffle views [N, C, H, W] as
//! [N, g, C/g, H, W]); unused leading axes have size 1.

pub const COPY_RANK: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StridedCopyParams {
    pub shape: [usize; COPY_RANK],
    pub src_offset: usize,
    pub src_strides: [usize; COPY_RANK],
    pub dst_offset: usize,
    pub dst_strides: [usize; COPY_RANK],
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

impl StridedCopyParams {
    /// From shapes and strides of rank ≤ 6, left-padded with size-1 axes.
    pub fn new(
        shape: &[usize],
        src_offset: usize,
        src_strides: &[usize],
        dst_offset: usize,
        dst_strides: &[usize],
    ) -> Self {
        let pad = COPY_RANK - shape.len();
        let mut p = StridedCopyParams {
            shape: [1; COPY_RANK],
            src_offset,
            src_strides: [0; COPY_RANK],
            dst_offset,
            dst_strides: [0; COPY_RANK],
        };
        p.shape[pad..].copy_from_slice(shape);
        p.src_strides[pad..].copy_from_slice(src_strides);
        p.dst_strides[pad..].copy_from_slice(dst_strides);
        p
    }

    /// Elements copied.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The copy of `shape`'s block starting at `start` along `axis` of a tensor of shape
    /// `whole` into (`into_whole` = true) or out of it, the other side contiguous.
    pub fn block(whole: &[usize], axis: usize, start: usize, len: usize, into_whole: bool) -> Self {
        let strides = contiguous_strides(whole);
        let mut part = whole.to_vec();
        part[axis] = len;
        let offset = start * strides[axis];
        let dense = contiguous_strides(&part);
        if into_whole {
            Self::new(&part, 0, &dense, offset, &strides)
        } else {
            Self::new(&part, offset, &strides, 0, &dense)
        }
    }

    /// Reads a tensor of shape `shape` permuted by `perm` (output axis i is input axis
    /// perm[i]) into a contiguous output.
    pub fn permute(shape: &[usize], perm: &[usize]) -> Self {
        let st = contiguous_strides(shape);
        let out: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let src: Vec<usize> = perm.iter().map(|&a| st[a]).collect();
        Self::new(&out, 0, &src, 0, &contiguous_strides(&out))
    }

    /// The inverse copy: scatters what this one gathered (dst and src swapped).
    pub fn inverse(&self) -> Self {
        StridedCopyParams {
            shape: self.shape,
            src_offset: self.dst_offset,
            src_strides: self.dst_strides,
            dst_offset: self.src_offset,
            dst_strides: self.src_strides,
        }
    }
}

/// The permutation that undoes `perm`.
pub fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}
