//! The epilogue a fused convolution applies to its output blocks (eval BatchNorm, residual,
//! activation), shared by the im2col and Winograd paths.

use super::activation::activation_in_place;
use super::real::Real;
use super::simd;
use crate::ops::{Activation, ActivationParams};
use std::ops::Range;

/// What a fused convolution applies to each output block while it is still in cache, each
/// step when given: the per-channel affine map of an eval-mode BatchNorm, v·scale\[c\] +
/// shift\[c\], then the residual added, then the activation; the same f32 operations, in the
/// same order, as the separate ops (see `Backend::conv2d_fused`).
#[derive(Clone, Copy)]
pub struct Epilogue<'a, T> {
    /// (scale, shift), each \[Cout\].
    pub bn: Option<(&'a [T], &'a [T])>,
    /// [N, Cout, Ho, Wo]
    pub residual: Option<&'a [T]>,
    /// Any row of the activation table (`len` unused here).
    pub act: Option<ActivationParams>,
}

impl<T: Real> Epilogue<'_, T> {
    /// The epilogue of image `img`, whose output has `len` elements: its part of the residual.
    pub(super) fn for_image(self, img: usize, len: usize) -> Self {
        Epilogue {
            residual: self.residual.map(|r| &r[img * len..(img + 1) * len]),
            ..self
        }
    }

    /// Applies the epilogue to columns `cols` of every channel row of `out` [Cout, row_len],
    /// whose column 0 is output pixel `p0` of an image of `pix` pixels per channel.
    pub(super) fn apply(
        &self,
        out: &mut [T],
        row_len: usize,
        cols: Range<usize>,
        pix: usize,
        p0: usize,
    ) {
        for (c, row) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
            self.apply_row(c, &mut row[cols.clone()], c * pix + p0 + cols.start);
        }
    }

    /// Applies the epilogue to `row`, a run of channel `c`'s outputs that starts at element
    /// `start` of the image's output (where its residual is read).
    pub(super) fn apply_row(&self, c: usize, row: &mut [T], start: usize) {
        // ReLU goes into the affine loop; another activation runs over the row afterwards,
        // while it is still in cache, as its own vectorized loop.
        let relu_inline = self.act.is_some_and(|a| a.act == Activation::Relu);
        simd::dispatch(
            #[inline(always)]
            || self.affine_row(c, row, start, relu_inline),
        );
        if let Some(a) = self.act.filter(|_| !relu_inline) {
            activation_in_place(&a, row);
        }
    }

    /// The BatchNorm affine map, the residual and, if `relu_inline`, ReLU: one loop, compiled
    /// for the machine's vector width (the same operations, so the same bits, at every level).
    #[inline(always)]
    fn affine_row(&self, c: usize, row: &mut [T], start: usize, relu_inline: bool) {
        // PyTorch's ReLU: a NaN stays NaN (the table's row, and every backend's ReLU).
        let relu = |a: T| {
            if relu_inline && a <= T::zero() {
                T::zero()
            } else {
                a
            }
        };
        let residual = self.residual.map(|r| &r[start..start + row.len()]);
        match (self.bn, residual) {
            (Some((s, t)), Some(r)) => {
                let (s, t) = (s[c], t[c]);
                for (v, &add) in row.iter_mut().zip(r) {
                    *v = relu(*v * s + t + add);
                }
            }
            (Some((s, t)), None) => {
                let (s, t) = (s[c], t[c]);
                row.iter_mut().for_each(|v| *v = relu(*v * s + t));
            }
            (None, Some(r)) => {
                for (v, &add) in row.iter_mut().zip(r) {
                    *v = relu(*v + add);
                }
            }
            (None, None) => row.iter_mut().for_each(|v| *v = relu(*v)),
        }
    }
}
