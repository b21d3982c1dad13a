//! The strided copy behind concat, chunk/split, channel shuffle and permute
//! (see `crate::ops::StridedCopyParams`).
//!
//! The copy is first simplified: axes of size 1 are dropped and neighbouring axes that are
//! contiguous with each other on both sides merged, so a concat or chunk along channels
//! becomes one contiguous run per image and a channel shuffle one run per H·W plane. Then:
//! - innermost runs contiguous on both sides are `copy_from_slice`s;
//! - a transpose (the innermost axis contiguous on one side only, another axis contiguous
//!   on the other: NCHW ↔ NHWC) is copied in 32 × 32 tiles, so both sides stay in cache;
//! - anything else element by element.
//!
//! Large copies run in parallel over the outermost axis when its destination blocks are
//! disjoint (they always are for the layout ops).

use crate::ops::{StridedCopyParams, COPY_RANK};
use rayon::prelude::*;

/// Copies smaller than this many elements run on one thread.
const PARALLEL_MIN: usize = 1 << 15;
/// Side of a transpose tile.
const TILE: usize = 32;

/// One axis of the simplified copy: (size, source stride, destination stride).
type Axis = (usize, usize, usize);

/// dst[dst_offset + Σ i_k·dst_strides\[k\]] = src[src_offset + Σ i_k·src_strides\[k\]] for every
/// index i of `p.shape`.
pub fn strided_copy<T: Copy + Send + Sync>(p: &StridedCopyParams, src: &[T], dst: &mut [T]) {
    if p.is_empty() {
        return;
    }
    let last = |offset: usize, strides: &[usize; COPY_RANK]| {
        offset
            + (0..COPY_RANK)
                .map(|k| (p.shape[k] - 1) * strides[k])
                .sum::<usize>()
    };
    assert!(
        last(p.src_offset, &p.src_strides) < src.len(),
        "strided copy reads past its source ({} elements)",
        src.len()
    );
    assert!(
        last(p.dst_offset, &p.dst_strides) < dst.len(),
        "strided copy writes past its destination ({} elements)",
        dst.len()
    );
    let axes = simplify(p);
    let Some((&(n0, s0, d0), rest)) = axes.split_first() else {
        dst[p.dst_offset] = src[p.src_offset];
        return;
    };
    // The destination span of one index of the outermost axis.
    let span = 1 + rest.iter().map(|&(n, _, d)| (n - 1) * d).sum::<usize>();
    if p.len() >= PARALLEL_MIN && n0 > 1 && d0 >= span {
        let dst = &mut dst[p.dst_offset..p.dst_offset + (n0 - 1) * d0 + span];
        dst.par_chunks_mut(d0).enumerate().for_each(|(i, block)| {
            copy_axes(rest, src, p.src_offset + i * s0, block, 0);
        });
    } else {
        copy_axes(&axes, src, p.src_offset, dst, p.dst_offset);
    }
}

/// The copy's axes without size-1 axes, with neighbours merged where both sides are
/// contiguous across them; outermost first.
fn simplify(p: &StridedCopyParams) -> Vec<Axis> {
    let mut axes: Vec<Axis> = Vec::with_capacity(COPY_RANK);
    for k in 0..COPY_RANK {
        let (n, s, d) = (p.shape[k], p.src_strides[k], p.dst_strides[k]);
        if n == 1 {
            continue;
        }
        axes.push((n, s, d));
        // Merge the previous axis into this one while they are contiguous on both sides.
        while axes.len() >= 2 {
            let (n1, s1, d1) = axes[axes.len() - 1];
            let (n0, s0, d0) = axes[axes.len() - 2];
            if s0 == n1 * s1 && d0 == n1 * d1 {
                axes.pop();
                *axes.last_mut().expect("axis") = (n0 * n1, s1, d1);
            } else {
                break;
            }
        }
    }
    axes
}

/// The copy of `axes` from src[so..] to dst[dO..], on this thread.
fn copy_axes<T: Copy>(axes: &[Axis], src: &[T], so: usize, dst: &mut [T], d_o: usize) {
    let Some(&(n, s, d)) = axes.last() else {
        dst[d_o] = src[so];
        return;
    };
    let outer = &axes[..axes.len() - 1];
    if s == 1 && d == 1 {
        return for_each_offset(outer, so, d_o, &mut |so, d_o| {
            dst[d_o..d_o + n].copy_from_slice(&src[so..so + n]);
        });
    }
    // A transpose: another axis contiguous on the side where the innermost one is not.
    let partner = outer
        .iter()
        .rposition(|&(_, s2, d2)| (d == 1 && s2 == 1) || (s == 1 && d2 == 1));
    if let Some(a) = partner {
        let (m, sa, da) = outer[a];
        let others: Vec<Axis> = outer
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != a)
            .map(|(_, &ax)| ax)
            .collect();
        return for_each_offset(&others, so, d_o, &mut |so, d_o| {
            for i0 in (0..m).step_by(TILE) {
                for j0 in (0..n).step_by(TILE) {
                    for i in i0..(i0 + TILE).min(m) {
                        let (si, di) = (so + i * sa, d_o + i * da);
                        for j in j0..(j0 + TILE).min(n) {
                            dst[di + j * d] = src[si + j * s];
                        }
                    }
                }
            }
        });
    }
    for_each_offset(outer, so, d_o, &mut |so, d_o| {
        for j in 0..n {
            dst[d_o + j * d] = src[so + j * s];
        }
    });
}

/// Calls f(source offset, destination offset) for every index of `axes`, in row-major order.
fn for_each_offset(axes: &[Axis], so: usize, d_o: usize, f: &mut impl FnMut(usize, usize)) {
    match axes.split_first() {
        None => f(so, d_o),
        Some((&(n, s, d), rest)) => {
            for i in 0..n {
                for_each_offset(rest, so + i * s, d_o + i * d, f);
            }
        }
    }
}
