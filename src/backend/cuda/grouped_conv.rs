//! Launches of kernels/grouped_conv.cu: convs with groups, dilation or asymmetric padding
//! (depthwise among them), forward and input gradient, v1 direct or v2 tiled.

use super::{conv, flat, launch_positional, CudaBackend};
use crate::backend::ConvKernel;
use crate::error::Result;
use crate::ops::{Conv2dParams, GroupedTile};
use cudarc::driver::{CudaSlice, LaunchConfig};

/// The launch of a tiled grouped-conv kernel: one block per tile of `t`.
fn grouped_grid(t: &GroupedTile) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (t.workgroups as u32, 1, 1),
        block_dim: (GroupedTile::THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Shape arguments of kernels/grouped_conv.cu after the batch size: c_in … pad_w as
/// `conv_shape`, then dilation and groups.
fn grouped_shape(p: &Conv2dParams) -> [i32; 16] {
    [
        p.c_in,
        p.h_in,
        p.w_in,
        p.c_out,
        p.h_out(),
        p.w_out(),
        p.k_h,
        p.k_w,
        p.stride_h,
        p.stride_w,
        p.pad_h,
        p.pad_w,
        p.dilation_h,
        p.dilation_w,
        p.groups,
        p.n,
    ]
    .map(|v| v as i32)
}

pub fn forward(
    be: &CudaBackend,
    p: &Conv2dParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let has_bias = bias.is_some() as i32;
    let b = bias.unwrap_or(w);
    let s = grouped_shape(p);
    // v1 is the reference; every other variant takes the tiled v2 where its window fits.
    match p.grouped_tile().filter(|_| be.conv != ConvKernel::V1) {
        Some(t) => {
            let name = "grouped_conv_fwd_v2";
            let [th, tw, planes] = [t.h, t.w, t.planes].map(|v| v as i32);
            launch_positional!(be, name, grouped_grid(&t), || conv::label(name, p); &mut y, x, w, b, &has_bias,
                &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                &s[11], &s[12], &s[13], &s[14], &th, &tw, &planes);
        }
        None => {
            let name = "grouped_conv_fwd";
            launch_positional!(be, name, flat(p.output_len()), || conv::label(name, p); &mut y, x, w, b,
                &has_bias, &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8],
                &s[9], &s[10], &s[11], &s[12], &s[13], &s[14]);
        }
    }
    Ok(y)
}

pub fn backward_input(
    be: &CudaBackend,
    p: &Conv2dParams,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let mut dx = be.out(p.input_len())?;
    let s = grouped_shape(p);
    match p
        .grouped_tile_backward()
        .filter(|_| be.conv != ConvKernel::V1)
    {
        Some(t) => {
            let name = "grouped_conv_bwd_input_v2";
            let [th, tw, planes] = [t.h, t.w, t.planes].map(|v| v as i32);
            launch_positional!(be, name, grouped_grid(&t), || conv::label(name, p); &mut dx, dy, w,
                &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                &s[11], &s[12], &s[13], &s[14], &th, &tw, &planes);
        }
        None => {
            let name = "grouped_conv_bwd_input";
            launch_positional!(be, name, flat(p.input_len()), || conv::label(name, p); &mut dx, dy, w,
                &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                &s[11], &s[12], &s[13], &s[14]);
        }
    }
    Ok(dx)
}
