//! Launches of kernels/gradcam.cu: the class seed that starts the backward pass, the fused CAM
//! step (combine, ReLU, normalize, upsample), and ScoreCAM's masked inputs.

use super::args::{kernel_args, kernels};
use super::{backend_error, flat, launch, CudaBackend};
use crate::error::Result;
use crate::ops::{align_corners_scale, ClassPick, ClassSeedParams, GradCamParams, ScoreMaskParams};
use cudarc::driver::{CudaSlice, LaunchConfig};

kernel_args! {
    /// `struct ClassSeed` of kernels/gradcam.cu (shaders/gradcam.wgsl's): n images of k
    /// classes; mode 0: the class `value`, 1: the class of rank `value`.
    struct ClassSeed {
        n: i32,
        k: i32,
        mode: i32,
        value: i32,
    }
}

kernel_args! {
    /// `struct GradCam` of kernels/gradcam.cu (shaders/gradcam.wgsl's, less n, one block per
    /// image, and the scales, computed by the kernel): activations [c, h, w] to a CAM of
    /// [out_h, out_w]; combine, CamCombine::code(); renormalize, 0 or 1.
    struct GradCam {
        c: i32,
        h: i32,
        w: i32,
        out_h: i32,
        out_w: i32,
        combine: i32,
        renormalize: i32,
    }
}

kernel_args! {
    /// `struct ScoreMask` of kernels/gradcam.cu (shaders/gradcam.wgsl's, less count, one block
    /// per mask): see ops::ScoreMaskParams; the scales are ops::align_corners_scale's.
    struct ScoreMask {
        image: i32,
        c0: i32,
        c: i32,
        h: i32,
        w: i32,
        in_c: i32,
        out_h: i32,
        out_w: i32,
        scale_h: f32,
        scale_w: f32,
    }
}

kernels! {
    CLASS_SEED: ClassSeed = "class_seed";
    GRAD_CAM: GradCam = "grad_cam";
    SCORE_CAM_MASKS: ScoreMask = "score_cam_masks";
}

pub fn class_seed(
    be: &CudaBackend,
    p: &ClassSeedParams,
    logits: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut seed = be.out(p.n * p.k)?;
    let (mode, value) = match p.pick {
        ClassPick::Fixed(c) => (0i32, c as i32),
        ClassPick::Rank(r) => (1, r as i32),
    };
    let args = ClassSeed {
        n: p.n as i32,
        k: p.k as i32,
        mode,
        value,
    };
    launch!(be, CLASS_SEED, flat(p.n * p.k); &mut seed, logits; args);
    Ok(seed)
}

pub fn grad_cam(
    be: &CudaBackend,
    p: &GradCamParams,
    activation: &CudaSlice<f32>,
    gradient: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    for (buf, len, what) in [
        (activation, p.n * p.c * p.h * p.w, "activation"),
        (gradient, p.second_len(), "second operand"),
    ] {
        if buf.len() < len {
            return Err(backend_error(format!(
                "grad_cam {what}: buffer of {} elements, {p:?} needs {len}",
                buf.len()
            )));
        }
    }
    let mut cam = be.out(p.n * p.out_h * p.out_w)?;
    if p.n * p.out_h * p.out_w == 0 {
        return Ok(cam);
    }
    let alloc_err = |e| backend_error(format!("cannot allocate Grad-CAM scratch: {e}"));
    // SAFETY: both scratch buffers are written by the kernel before it reads them.
    let mut weights = unsafe { be.stream.alloc::<f64>(p.n * p.c) }.map_err(alloc_err)?;
    let mut small = unsafe { be.stream.alloc::<f32>(p.n * p.h * p.w) }.map_err(alloc_err)?;
    let args = GradCam {
        c: p.c as i32,
        h: p.h as i32,
        w: p.w as i32,
        out_h: p.out_h as i32,
        out_w: p.out_w as i32,
        combine: p.combine.code() as i32,
        renormalize: i32::from(p.renormalize),
    };
    let cfg = LaunchConfig {
        grid_dim: (p.n as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(be, GRAD_CAM, cfg; &mut cam, &mut weights, &mut small, activation, gradient; args);
    Ok(cam)
}

pub fn score_cam_masks(
    be: &CudaBackend,
    p: &ScoreMaskParams,
    x: &CudaSlice<f32>,
    activation: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    p.check(x.len(), activation.len()).map_err(backend_error)?;
    let mut out = be.out(p.output_len())?;
    if p.count == 0 {
        return Ok(out);
    }
    let args = ScoreMask {
        image: p.image as i32,
        c0: p.c0 as i32,
        c: p.c as i32,
        h: p.h as i32,
        w: p.w as i32,
        in_c: p.in_c as i32,
        out_h: p.out_h as i32,
        out_w: p.out_w as i32,
        scale_h: align_corners_scale(p.h, p.out_h),
        scale_w: align_corners_scale(p.w, p.out_w),
    };
    let cfg = LaunchConfig {
        grid_dim: (p.count as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(be, SCORE_CAM_MASKS, cfg; &mut out, x, activation; args);
    Ok(out)
}
