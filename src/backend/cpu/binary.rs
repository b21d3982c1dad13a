//! Binary elementwise ops (add, mul) with NumPy broadcasting over rank-4 shapes, and their
//! input gradients: each operand's gradient is dy (times the other operand for mul) summed
//! over the axes that operand was broadcast along.
//!
//! Fast paths: same-shaped operands (one flat pass), and an operand that is one scalar per
//! [N, C] plane ([N, C, 1, 1], [1, C, 1, 1], [C, 1, 1], \[1\]) against a full [N, C, H, W]
//! (a squeeze-excitation gate, a per-channel scale); everything else runs row by row along
//! the last axis, where each operand either advances or stays put, so rows still vectorize
//! (ConvNeXt's NHWC layer scale \[C\] against [N, H, W, C] is such a row).

use super::pages::prefer_huge_pages;
use super::real::Real;
use crate::ops::{broadcast_strides, BinaryOp, BinaryParams};
use rayon::prelude::*;

/// Elements per parallel job.
const CHUNK: usize = 1 << 14;

/// y = a + b or a · b, broadcast. a: [p.a], b: [p.b], y: [p.out] (all rank 4, row-major).
pub fn binary_forward<T: Real>(p: &BinaryParams, a: &[T], b: &[T], y: &mut [T]) {
    check(p);
    assert_eq!(a.len(), p.a.iter().product::<usize>());
    assert_eq!(b.len(), p.b.iter().product::<usize>());
    assert_eq!(y.len(), p.len());
    prefer_huge_pages(y);
    match p.op {
        BinaryOp::Add => forward_with(p, a, b, y, |u, v| u + v),
        BinaryOp::Mul => forward_with(p, a, b, y, |u, v| u * v),
    }
}

/// Gradient of operand `operand` (0 = a, 1 = b), shaped like that operand: dy (times the
/// other operand for Mul), summed over the axes it was broadcast along, in a fixed order
/// (deterministic). dy: [p.out], a: [p.a], b: [p.b], dx: [p.a] or [p.b].
pub fn binary_backward_input<T: Real>(
    p: &BinaryParams,
    operand: usize,
    dy: &[T],
    a: &[T],
    b: &[T],
    dx: &mut [T],
) {
    check(p);
    assert!(operand < 2, "binary op operand {operand}");
    assert_eq!(a.len(), p.a.iter().product::<usize>());
    assert_eq!(b.len(), p.b.iter().product::<usize>());
    assert_eq!(dy.len(), p.len());
    let shape = p.operand(operand);
    assert_eq!(dx.len(), shape.iter().product::<usize>());
    prefer_huge_pages(dx);
    let (other_shape, other) = if operand == 0 { (p.b, b) } else { (p.a, a) };
    // dy · other at the output's indices, as the forward op of a Mul computes it.
    let times_other = BinaryParams {
        op: BinaryOp::Mul,
        a: p.out,
        b: other_shape,
        out: p.out,
    };
    if shape == p.out {
        match p.op {
            BinaryOp::Add => dx
                .par_chunks_mut(CHUNK)
                .zip(dy.par_chunks(CHUNK))
                .for_each(|(d, g)| d.copy_from_slice(g)),
            BinaryOp::Mul => forward_with(&times_other, dy, other, dx, |u, v| u * v),
        }
        return;
    }
    match p.op {
        BinaryOp::Add => reduce(shape, p.out, dy, None, dx),
        // The other operand has the output's shape: its products are formed on the fly.
        BinaryOp::Mul if other_shape == p.out => reduce(shape, p.out, dy, Some(other), dx),
        BinaryOp::Mul => {
            let mut g = vec![T::zero(); p.len()];
            forward_with(&times_other, dy, other, &mut g, |u, v| u * v);
            reduce(shape, p.out, &g, None, dx);
        }
    }
}

fn check(p: &BinaryParams) {
    for i in 0..4 {
        assert!(
            (p.a[i] == p.out[i] || p.a[i] == 1) && (p.b[i] == p.out[i] || p.b[i] == 1),
            "binary op shapes {:?} and {:?} do not broadcast to {:?}",
            p.a,
            p.b,
            p.out
        );
    }
}

fn forward_with<T: Real>(
    p: &BinaryParams,
    a: &[T],
    b: &[T],
    y: &mut [T],
    f: impl Fn(T, T) -> T + Sync + Copy,
) {
    let out = p.out;
    if p.is_same_shape() {
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(yc, (ac, bc))| {
                for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                    *o = f(u, v);
                }
            });
        return;
    }
    let plane = out[2] * out[3];
    let per_plane = |s: [usize; 4]| s[2] == 1 && s[3] == 1 && plane > 1;
    // The scalar of plane i (= n·C + c) of an operand shaped [n or 1, C or 1, 1, 1].
    let scalar = |s: [usize; 4], i: usize| {
        let (n, c) = (i / out[1], i % out[1]);
        (if s[0] > 1 { n } else { 0 }) * s[1] + if s[1] > 1 { c } else { 0 }
    };
    let planes_per_job = (CHUNK / plane.max(1)).max(1);
    if p.a == out && per_plane(p.b) {
        y.par_chunks_mut(plane)
            .zip(a.par_chunks(plane))
            .enumerate()
            .with_min_len(planes_per_job)
            .for_each(|(i, (yp, ap))| {
                let v = b[scalar(p.b, i)];
                for (o, &u) in yp.iter_mut().zip(ap) {
                    *o = f(u, v);
                }
            });
        return;
    }
    if p.b == out && per_plane(p.a) {
        y.par_chunks_mut(plane)
            .zip(b.par_chunks(plane))
            .enumerate()
            .with_min_len(planes_per_job)
            .for_each(|(i, (yp, bp))| {
                let u = a[scalar(p.a, i)];
                for (o, &v) in yp.iter_mut().zip(bp) {
                    *o = f(u, v);
                }
            });
        return;
    }
    // Row by row along the last axis.
    let (sa, sb) = (broadcast_strides(p.a, out), broadcast_strides(p.b, out));
    let len = out[3];
    if len == 0 || y.is_empty() {
        return;
    }
    let rows_per_job = (CHUNK / len).max(1);
    y.par_chunks_mut(len * rows_per_job)
        .enumerate()
        .for_each(|(job, yc)| {
            for (k, yr) in yc.chunks_exact_mut(len).enumerate() {
                let r = job * rows_per_job + k;
                let idx = [r / (out[1] * out[2]), r / out[2] % out[1], r % out[2]];
                let oa: usize = (0..3).map(|i| idx[i] * sa[i]).sum();
                let ob: usize = (0..3).map(|i| idx[i] * sb[i]).sum();
                // A stride of 0 along the row: that operand is one value for the row.
                match (sa[3] != 0 || len == 1, sb[3] != 0 || len == 1) {
                    (true, true) => {
                        for ((o, &u), &v) in yr.iter_mut().zip(&a[oa..oa + len]).zip(&b[ob..]) {
                            *o = f(u, v);
                        }
                    }
                    (true, false) => {
                        let v = b[ob];
                        for (o, &u) in yr.iter_mut().zip(&a[oa..oa + len]) {
                            *o = f(u, v);
                        }
                    }
                    (false, true) => {
                        let u = a[oa];
                        for (o, &v) in yr.iter_mut().zip(&b[ob..ob + len]) {
                            *o = f(u, v);
                        }
                    }
                    (false, false) => yr.fill(f(a[oa], b[ob])),
                }
            }
        });
}

/// dx[e] = Σ g[i] (· other[i]) over the output indices i that read operand element e, where g
/// and `other` have the output's shape and dx has `shape`.
///
/// Axes of size 1 in the output are dropped and neighbours of the same kind (kept: the
/// operand has the output's size; broadcast: it has size 1) merged, so that the sum runs
/// over contiguous blocks of the output: when the last merged axis is broadcast, each dx
/// element sums whole blocks (eight lanes at a time, folded in a fixed order); when it is
/// kept, each dx row adds whole output rows. Either way the blocks are visited in row-major
/// order of the remaining broadcast axes, one task per dx element or row.
fn reduce<T: Real>(shape: [usize; 4], out: [usize; 4], g: &[T], other: Option<&[T]>, dx: &mut [T]) {
    let mut dims: Vec<(usize, bool)> = Vec::with_capacity(4);
    for k in 0..4 {
        if out[k] == 1 {
            continue;
        }
        let kept = shape[k] == out[k];
        match dims.last_mut() {
            Some(last) if last.1 == kept => last.0 *= out[k],
            _ => dims.push((out[k], kept)),
        }
    }
    if g.is_empty() {
        dx.fill(T::zero());
        return;
    }
    let r = dims.len();
    assert!(r > 0, "reduce without a broadcast axis");
    let mut strides = vec![0; r];
    let mut acc = 1;
    for k in (0..r).rev() {
        strides[k] = acc;
        acc *= dims[k].0;
    }
    let (len, last_kept) = dims[r - 1];
    // Offsets of the blocks a dx element (or row) sums, in row-major order, and the kept
    // axes that locate the dx element (or row) in the output.
    let mut blocks = vec![0usize];
    let mut kept_axes = Vec::new();
    for k in 0..r - 1 {
        if dims[k].1 {
            kept_axes.push((dims[k].0, strides[k]));
        } else {
            let (n, st) = (dims[k].0, strides[k]);
            blocks = blocks
                .iter()
                .flat_map(|&o| (0..n).map(move |i| o + i * st))
                .collect();
        }
    }
    let base = |mut e: usize| {
        let mut off = 0;
        for &(n, st) in kept_axes.iter().rev() {
            off += e % n * st;
            e /= n;
        }
        off
    };
    let work = blocks.len() * len;
    if last_kept {
        let rows_per_job = (CHUNK / work.max(1)).max(1);
        dx.par_chunks_mut(len * rows_per_job)
            .enumerate()
            .for_each(|(job, dc)| {
                for (k, row) in dc.chunks_exact_mut(len).enumerate() {
                    let b0 = base(job * rows_per_job + k);
                    row.fill(T::zero());
                    for &o in &blocks {
                        let gs = &g[b0 + o..b0 + o + len];
                        match other {
                            None => row.iter_mut().zip(gs).for_each(|(d, &v)| *d += v),
                            Some(x) => {
                                let xs = &x[b0 + o..b0 + o + len];
                                for ((d, &v), &w) in row.iter_mut().zip(gs).zip(xs) {
                                    *d += v * w;
                                }
                            }
                        }
                    }
                }
            });
    } else {
        let per_job = (CHUNK / work.max(1)).max(1);
        dx.par_chunks_mut(per_job)
            .enumerate()
            .for_each(|(job, dc)| {
                for (k, d) in dc.iter_mut().enumerate() {
                    let b0 = base(job * per_job + k);
                    let mut s = T::zero();
                    for &o in &blocks {
                        let at = b0 + o;
                        s += block_sum(&g[at..at + len], other.map(|x| &x[at..at + len]));
                    }
                    *d = s;
                }
            });
    }
}

/// Σ g[i] (· x[i]) in eight interleaved partial sums, folded pairwise, then the tail.
fn block_sum<T: Real>(g: &[T], x: Option<&[T]>) -> T {
    let mut acc = [T::zero(); 8];
    let head = g.len() / 8 * 8;
    let mut tail = T::zero();
    match x {
        None => {
            for c in g[..head].chunks_exact(8) {
                for (a, &v) in acc.iter_mut().zip(c) {
                    *a += v;
                }
            }
            for &v in &g[head..] {
                tail += v;
            }
        }
        Some(x) => {
            for (c, xc) in g[..head].chunks_exact(8).zip(x[..head].chunks_exact(8)) {
                for ((a, &v), &w) in acc.iter_mut().zip(c).zip(xc) {
                    *a += v * w;
                }
            }
            for (&v, &w) in g[head..].iter().zip(&x[head..]) {
                tail += v * w;
            }
        }
    }
    let q = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    ((q[0] + q[2]) + (q[1] + q[3])) + tail
}
