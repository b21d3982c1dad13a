//! Glue for shaders/gradcam.wgsl: the class seed of the backward pass, the fused Grad-CAM
//! step, and ScoreCAM's masked inputs (their designs are explained there).

use super::context::backend_error;
use super::kernels::{kernel, Kernel, Shader::GradCam};
use super::{buffer, groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::{align_corners_scale, ClassPick, ClassSeedParams, GradCamParams, ScoreMaskParams};

const GRAD_CAM: Kernel = kernel(GradCam, "grad_cam");
const CLASS_SEED: Kernel = kernel(GradCam, "class_seed");
const SCORE_CAM_MASKS: Kernel = kernel(GradCam, "score_cam_masks");

pub fn class_seed(be: &WgpuBackend, p: &ClassSeedParams, logits: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(logits, p.n * p.k, "class_seed logits")?;
    let seed = be.output(p.n * p.k)?;
    if seed.is_empty() {
        return Ok(seed);
    }
    let (mode, value) = match p.pick {
        ClassPick::Fixed(c) => (0, c),
        ClassPick::Rank(r) => (1, r),
    };
    be.run(
        CLASS_SEED,
        &[u(p.n), u(p.k), mode, u(value)],
        &[logits.raw(), seed.raw()],
        groups_1d(p.n * p.k, 256)?,
    )?;
    Ok(seed)
}

pub fn grad_cam(
    be: &WgpuBackend,
    p: &GradCamParams,
    activation: &GpuBuffer,
    gradient: &GpuBuffer,
) -> Result<GpuBuffer> {
    let len = p.n * p.c * p.h * p.w;
    be.need(activation, len, "grad_cam activation")?;
    be.need(gradient, p.second_len(), "grad_cam gradient")?;
    let cam = be.output(p.n * p.out_h * p.out_w)?;
    if cam.is_empty() {
        return Ok(cam);
    }
    // Channel weights and the small CAM of each image: [N, C + h·w], written and read only by
    // the kernel.
    let scratch = buffer::alloc(&be.ctx, &be.pool, p.n * (p.c + p.h * p.w))?;
    // The same f32 scale the CPU backend's `bilinear_source` computes.
    let scale_h = p.h as f32 / p.out_h as f32;
    let scale_w = p.w as f32 / p.out_w as f32;
    be.run(
        GRAD_CAM,
        &[
            u(p.n),
            u(p.c),
            u(p.h),
            u(p.w),
            u(p.out_h),
            u(p.out_w),
            scale_h.to_bits(),
            scale_w.to_bits(),
            p.combine.code(),
            u32::from(p.renormalize),
        ],
        &[activation.raw(), gradient.raw(), scratch.raw(), cam.raw()],
        groups_1d(p.n, 1)?,
    )?;
    Ok(cam)
}

/// ScoreCAM's masked inputs (shaders/gradcam.wgsl explains the kernel).
pub fn score_cam_masks(
    be: &WgpuBackend,
    p: &ScoreMaskParams,
    x: &GpuBuffer,
    activation: &GpuBuffer,
) -> Result<GpuBuffer> {
    p.check(x.len(), activation.len()).map_err(backend_error)?;
    be.need(x, p.x_len(), "score_cam_masks image")?;
    be.need(activation, p.activation_len(), "score_cam_masks activation")?;
    let out = be.output(p.output_len())?;
    if out.is_empty() {
        return Ok(out);
    }
    be.run(
        SCORE_CAM_MASKS,
        &[
            u(p.image),
            u(p.c0),
            u(p.count),
            u(p.c),
            u(p.h),
            u(p.w),
            u(p.in_c),
            u(p.out_h),
            u(p.out_w),
            align_corners_scale(p.h, p.out_h).to_bits(),
            align_corners_scale(p.w, p.out_w).to_bits(),
        ],
        &[x.raw(), activation.raw(), out.raw()],
        groups_1d(p.count, 1)?,
    )?;
    Ok(out)
}
