//! The fused Grad-CAM post-processing, the reference for the GPU kernels that do the same
//! in one pass: channel weights = spatial mean of the gradient, cam = ReLU(Σ_c w_c·A_c),
//! min-max normalization, bilinear upsampling with half-pixel centers, and min-max
//! normalization again, each as (cam - min) / (max - min + 1e-7). Normalizing before and after
//! resizing is what pytorch-grad-cam does; it only matters for CAMs whose range is near 1e-7,
//! but then it matters, so we do the same.

use crate::ops::{bilinear_source, rank_cmp, ClassPick, ClassSeedParams, GradCamParams, CAM_EPS};
use rayon::prelude::*;

/// activation, gradient: [N, C, h, w]; cam: [N, out_h, out_w].
pub fn grad_cam(p: &GradCamParams, activation: &[f32], gradient: &[f32], cam: &mut [f32]) {
    let hw = p.h * p.w;
    assert_eq!(activation.len(), p.n * p.c * hw);
    assert_eq!(gradient.len(), p.n * p.c * hw);
    assert_eq!(cam.len(), p.n * p.out_h * p.out_w);
    cam.par_chunks_mut(p.out_h * p.out_w)
        .enumerate()
        .for_each(|(img, out)| {
            let a = &activation[img * p.c * hw..(img + 1) * p.c * hw];
            let g = &gradient[img * p.c * hw..(img + 1) * p.c * hw];
            // Accumulate in f64: this is the oracle the f32 GPU kernels are measured against.
            let mut small = vec![0f64; hw];
            for (ac, gc) in a.chunks(hw).zip(g.chunks(hw)) {
                let weight = gc.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
                for (s, &v) in small.iter_mut().zip(ac) {
                    *s += weight * v as f64;
                }
            }
            let mut small: Vec<f32> = small.iter().map(|&v| v.max(0.0) as f32).collect();
            normalize(&mut small);
            let cols: Vec<_> = (0..p.out_w)
                .map(|x| bilinear_source(x, p.w, p.out_w))
                .collect();
            for y in 0..p.out_h {
                let (y0, y1, wy) = bilinear_source(y, p.h, p.out_h);
                let (r0, r1) = (&small[y0 * p.w..][..p.w], &small[y1 * p.w..][..p.w]);
                for (x, &(x0, x1, wx)) in cols.iter().enumerate() {
                    let top = r0[x0] * (1.0 - wx) + r0[x1] * wx;
                    let bottom = r1[x0] * (1.0 - wx) + r1[x1] * wx;
                    out[y * p.out_w + x] = top * (1.0 - wy) + bottom * wy;
                }
            }
            normalize(out);
        });
}

fn normalize(v: &mut [f32]) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().map(|&x| x - lo).fold(0.0f32, f32::max);
    for x in v.iter_mut() {
        *x = (*x - lo) / (hi + CAM_EPS);
    }
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
