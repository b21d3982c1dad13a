//! Launches of kernels/gradcam.cu: the class seed that starts the backward pass, the fused CAM
//! step (combine, ReLU, normalize, upsample), and ScoreCAM's masked inputs.

use super::{backend_error, flat, launch_positional, CudaBackend};
use crate::error::Result;
use crate::ops::{align_corners_scale, ClassPick, ClassSeedParams, GradCamParams, ScoreMaskParams};
use cudarc::driver::{CudaSlice, LaunchConfig};

pub fn class_seed(
    be: &CudaBackend,
    p: &ClassSeedParams,
    logits: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut seed = be.out(p.n * p.k)?;
    let (by_rank, value) = match p.pick {
        ClassPick::Fixed(c) => (0i32, c as i32),
        ClassPick::Rank(r) => (1, r as i32),
    };
    let (n, k) = (p.n as i32, p.k as i32);
    launch_positional!(be, "class_seed", flat(p.n * p.k); &mut seed, logits, &n, &k, &by_rank, &value);
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
    let d = [p.c, p.h, p.w, p.out_h, p.out_w].map(|v| v as i32);
    let (combine, renormalize) = (p.combine.code() as i32, i32::from(p.renormalize));
    let cfg = LaunchConfig {
        grid_dim: (p.n as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_positional!(be, "grad_cam", cfg; &mut cam, &mut weights, &mut small, activation, gradient,
        &d[0], &d[1], &d[2], &d[3], &d[4], &combine, &renormalize);
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
    let d = [p.image, p.c0, p.c, p.h, p.w, p.in_c, p.out_h, p.out_w].map(|v| v as i32);
    let scale = [
        align_corners_scale(p.h, p.out_h),
        align_corners_scale(p.w, p.out_w),
    ];
    let cfg = LaunchConfig {
        grid_dim: (p.count as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_positional!(be, "score_cam_masks", cfg; &mut out, x, activation, &d[0], &d[1], &d[2],
        &d[3], &d[4], &d[5], &d[6], &d[7], &scale[0], &scale[1]);
    Ok(out)
}
