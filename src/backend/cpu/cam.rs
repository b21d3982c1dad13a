//! The fused CAM step, the reference for the GPU kernels that do the same in one pass: the
//! map of the method (`CamCombine`: channel weights then Σ_c w_c·A_c, or an element-wise
//! product summed over channels), then the shared tail: ReLU, min-max normalization, bilinear
//! upsampling with half-pixel centers, and min-max normalization again, each as
//! (cam - min) / (max - min + 1e-7). Normalizing before and after resizing is what
//! pytorch-grad-cam does; it only matters for CAMs whose range is near 1e-7, but then it
//! matters, so we do the same.

use crate::ops::{
    align_corners_source, bilinear_source, rank_cmp, CamCombine, ClassPick, ClassSeedParams,
    GradCamParams, ScoreMaskParams, CAM_EPS, FEM_K, PLUS_PLUS_EPS, SCORE_MASK_EPS, XGRAD_EPS,
};
use rayon::prelude::*;

/// activation: [N, C, h, w]; gradient: [N, C, h, w] (or [N, C] weights); cam: [N, out_h, out_w].
pub fn grad_cam(p: &GradCamParams, activation: &[f32], gradient: &[f32], cam: &mut [f32]) {
    let hw = p.h * p.w;
    assert_eq!(activation.len(), p.n * p.c * hw);
    assert_eq!(gradient.len(), p.second_len());
    assert_eq!(cam.len(), p.n * p.out_h * p.out_w);
    let g_len = p.second_len() / p.n.max(1);
    cam.par_chunks_mut(p.out_h * p.out_w)
        .enumerate()
        .for_each(|(img, out)| {
            let a = &activation[img * p.c * hw..(img + 1) * p.c * hw];
            let g = &gradient[img * g_len..(img + 1) * g_len];
            let small = combine(p.combine, hw, a, g);
            let mut small: Vec<f32> = small.iter().map(|&v| v.max(0.0) as f32).collect();
            normalize(&mut small);
            resize_bilinear(&small, p.h, p.w, out, p.out_h, p.out_w);
            if p.renormalize {
                normalize(out);
            }
        });
}

/// One image's map before the ReLU, accumulated in f64: this is the oracle the f32 GPU kernels
/// are measured against. a: [C, hw]; g: [C, hw], or [C] weights.
fn combine(how: CamCombine, hw: usize, a: &[f32], g: &[f32]) -> Vec<f64> {
    let mut small = vec![0f64; hw];
    let weighted = |small: &mut [f64], weight: f64, ac: &[f32]| {
        for (s, &v) in small.iter_mut().zip(ac) {
            *s += weight * v as f64;
        }
    };
    let elementwise = |small: &mut [f64], f: fn(f64, f64) -> f64| {
        for (ac, gc) in a.chunks(hw).zip(g.chunks(hw)) {
            for ((s, &av), &gv) in small.iter_mut().zip(ac).zip(gc) {
                *s += f(gv as f64, av as f64);
            }
        }
    };
    match how {
        CamCombine::HiRes => elementwise(&mut small, |g, a| g * a),
        CamCombine::ElementWise => elementwise(&mut small, |g, a| (g * a).max(0.0)),
        CamCombine::Layer => elementwise(&mut small, |g, a| g.max(0.0) * a),
        CamCombine::Weights => {
            for (ac, &w) in a.chunks(hw).zip(g) {
                weighted(&mut small, w as f64, ac);
            }
        }
        CamCombine::Mean | CamCombine::PlusPlus | CamCombine::XGrad | CamCombine::Fem => {
            for (ac, gc) in a.chunks(hw).zip(g.chunks(hw)) {
                weighted(&mut small, channel_weight(how, ac, gc), ac);
            }
        }
    }
    small
}

/// The weight of one channel (a, g: \[hw\]) for the methods that weight channels.
pub fn channel_weight(how: CamCombine, a: &[f32], g: &[f32]) -> f64 {
    let hw = a.len() as f64;
    let sum_a = || a.iter().map(|&v| v as f64).sum::<f64>();
    match how {
        CamCombine::Mean => g.iter().map(|&v| v as f64).sum::<f64>() / hw,
        CamCombine::PlusPlus => {
            let sa = sum_a();
            g.iter()
                .filter(|&&gv| gv != 0.0)
                .map(|&gv| {
                    let gv = gv as f64;
                    let (g2, g3) = (gv * gv, gv * gv * gv);
                    gv.max(0.0) * g2 / (2.0 * g2 + sa * g3 + PLUS_PLUS_EPS)
                })
                .sum()
        }
        CamCombine::XGrad => {
            let den = sum_a() + XGRAD_EPS;
            a.iter()
                .zip(g)
                .map(|(&av, &gv)| gv as f64 * av as f64 / den)
                .sum()
        }
        CamCombine::Fem => {
            let mean = sum_a() / hw;
            let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / hw;
            let th = mean + FEM_K * var.sqrt();
            a.iter().filter(|&&v| v as f64 > th).count() as f64 / hw
        }
        _ => unreachable!("{how:?} has no channel weights"),
    }
}

/// Bilinear resizing with half-pixel centers (OpenCV's INTER_LINEAR, PyTorch's
/// align_corners=False) of `src` [h, w] into `out` [out_h, out_w].
pub fn resize_bilinear(
    src: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    out_h: usize,
    out_w: usize,
) {
    resample(src, (h, w), out, (out_h, out_w), bilinear_source);
}

/// Bilinear resampling of `src` [h, w] into `out` [out_h, out_w], with `source(dst, len_in,
/// len_out)` giving each output coordinate's two source indices and the second one's weight.
fn resample(
    src: &[f32],
    (h, w): (usize, usize),
    out: &mut [f32],
    (out_h, out_w): (usize, usize),
    source: fn(usize, usize, usize) -> (usize, usize, f32),
) {
    let cols: Vec<_> = (0..out_w).map(|x| source(x, w, out_w)).collect();
    for y in 0..out_h {
        let (y0, y1, wy) = source(y, h, out_h);
        let (r0, r1) = (&src[y0 * w..][..w], &src[y1 * w..][..w]);
        for (x, &(x0, x1, wx)) in cols.iter().enumerate() {
            let top = r0[x0] * (1.0 - wx) + r0[x1] * wx;
            let bottom = r1[x0] * (1.0 - wx) + r1[x1] * wx;
            out[y * out_w + x] = top * (1.0 - wy) + bottom * wy;
        }
    }
}

/// (v - min) / (max - min + 1e-7), pytorch-grad-cam's `scale_cam_image` without the resize.
pub fn normalize(v: &mut [f32]) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().map(|&x| x - lo).fold(0.0f32, f32::max);
    for x in v.iter_mut() {
        *x = (*x - lo) / (hi + CAM_EPS);
    }
}

/// ScoreCAM's masked inputs (`ScoreMaskParams`). x: [in_c, out_h, out_w] one image;
/// activation: [n, c, h, w]; out: [count, in_c, out_h, out_w].
pub fn score_cam_masks(p: &ScoreMaskParams, x: &[f32], activation: &[f32], out: &mut [f32]) {
    let hw = p.h * p.w;
    let plane = p.out_h * p.out_w;
    if let Err(e) = p.check(x.len(), activation.len()) {
        panic!("{e}");
    }
    assert_eq!(out.len(), p.output_len());
    out.par_chunks_mut(p.x_len())
        .enumerate()
        .for_each(|(j, o)| {
            let ch = &activation[(p.image * p.c + p.c0 + j) * hw..][..hw];
            let mut mask = upsample_align_corners(ch, p.h, p.w, p.out_h, p.out_w);
            let lo = mask.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = mask.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            mask.iter_mut()
                .for_each(|v| *v = (*v - lo) / (hi - lo + SCORE_MASK_EPS));
            for (oc, xc) in o.chunks_mut(plane).zip(x.chunks(plane)) {
                for ((o, &xv), &m) in oc.iter_mut().zip(xc).zip(&mask) {
                    *o = xv * m;
                }
            }
        });
}

/// Bilinear upsampling with align_corners=True (`nn.UpsamplingBilinear2d`): [h, w] → [H, W].
pub fn upsample_align_corners(
    src: &[f32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; out_h * out_w];
    resample(src, (h, w), &mut out, (out_h, out_w), align_corners_source);
    out
}

/// logits, seed: [N, K]. Each image's row of `seed` is one-hot at its picked class; the class
/// at rank r is found by a selection in the `ranks_before` order (O(K) per row; the GPU
/// kernels count, per class, how many classes rank before it).
pub fn class_seed(p: &ClassSeedParams, logits: &[f32], seed: &mut [f32]) {
    assert_eq!(logits.len(), p.n * p.k);
    assert_eq!(seed.len(), p.n * p.k);
    let mut order: Vec<usize> = Vec::with_capacity(p.k);
    for (row, out) in logits.chunks(p.k).zip(seed.chunks_mut(p.k)) {
        let class = match p.pick {
            ClassPick::Fixed(c) => c,
            ClassPick::Rank(r) => {
                order.clear();
                order.extend(0..p.k);
                let (_, &mut nth, _) =
                    order.select_nth_unstable_by(r, |&a, &b| rank_cmp(row, a, b));
                nth
            }
        };
        out.fill(0.0);
        if class < p.k {
            out[class] = 1.0;
        }
    }
}
