//! Launches of kernels/grouped_conv.cu: convs with groups, dilation or asymmetric padding
//! (depthwise among them), forward and input gradient, v1 direct or v2 tiled.

use super::args::{kernel_args, kernels};
use super::{conv, flat, launch, CudaBackend};
use crate::backend::ConvKernel;
use crate::error::Result;
use crate::ops::{Conv2dParams, GroupedTile};
use cudarc::driver::{CudaSlice, LaunchConfig};

kernel_args! {
    /// `struct GroupedConv` of kernels/grouped_conv.cu (shaders/grouped_conv.wgsl's): the
    /// shapes, dilation and groups; has_bias (forward): bias is read; tile_h, tile_w, planes:
    /// v2's tiling (0 for v1).
    struct GroupedConv {
        n: i32,
        c_in: i32,
        h_in: i32,
        w_in: i32,
        c_out: i32,
        k_h: i32,
        k_w: i32,
        stride_h: i32,
        stride_w: i32,
        pad_h: i32,
        pad_w: i32,
        h_out: i32,
        w_out: i32,
        dil_h: i32,
        dil_w: i32,
        groups: i32,
        has_bias: i32,
        tile_h: i32,
        tile_w: i32,
        planes: i32,
    }
}

impl GroupedConv {
    /// `tile`: v2's tiling (`None` for v1).
    fn new(p: &Conv2dParams, has_bias: bool, tile: Option<&GroupedTile>) -> Self {
        let [tile_h, tile_w, planes] =
            tile.map_or([0; 3], |t| [t.h, t.w, t.planes].map(|v| v as i32));
        Self {
            n: p.n as i32,
            c_in: p.c_in as i32,
            h_in: p.h_in as i32,
            w_in: p.w_in as i32,
            c_out: p.c_out as i32,
            k_h: p.k_h as i32,
            k_w: p.k_w as i32,
            stride_h: p.stride_h as i32,
            stride_w: p.stride_w as i32,
            pad_h: p.pad_h as i32,
            pad_w: p.pad_w as i32,
            h_out: p.h_out() as i32,
            w_out: p.w_out() as i32,
            dil_h: p.dilation_h as i32,
            dil_w: p.dilation_w as i32,
            groups: p.groups as i32,
            has_bias: has_bias as i32,
            tile_h,
            tile_w,
            planes,
        }
    }
}

kernels! {
    FWD: GroupedConv = "grouped_conv_fwd";
    FWD_V2: GroupedConv = "grouped_conv_fwd_v2";
    BWD: GroupedConv = "grouped_conv_bwd_input";
    BWD_V2: GroupedConv = "grouped_conv_bwd_input_v2";
}

/// The launch of a tiled grouped-conv kernel: one block per tile of `t`.
fn grouped_grid(t: &GroupedTile) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (t.workgroups as u32, 1, 1),
        block_dim: (GroupedTile::THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub fn forward(
    be: &CudaBackend,
    p: &Conv2dParams,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    let mut y = be.out(p.output_len())?;
    let has_bias = bias.is_some();
    let b = bias.unwrap_or(w);
    // v1 is the reference; every other variant takes the tiled v2 where its window fits.
    match p.grouped_tile().filter(|_| be.conv != ConvKernel::V1) {
        Some(t) => {
            let args = GroupedConv::new(p, has_bias, Some(&t));
            launch!(be, FWD_V2, grouped_grid(&t), || conv::label(FWD_V2.name, p); &mut y, x, w, b; args);
        }
        None => {
            let args = GroupedConv::new(p, has_bias, None);
            launch!(be, FWD, flat(p.output_len()), || conv::label(FWD.name, p); &mut y, x, w, b; args);
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
    match p
        .grouped_tile_backward()
        .filter(|_| be.conv != ConvKernel::V1)
    {
        Some(t) => {
            let args = GroupedConv::new(p, false, Some(&t));
            launch!(be, BWD_V2, grouped_grid(&t), || conv::label(BWD_V2.name, p); &mut dx, dy, w; args);
        }
        None => {
            let args = GroupedConv::new(p, false, None);
            launch!(be, BWD, flat(p.input_len()), || conv::label(BWD.name, p); &mut dx, dy, w; args);
        }
    }
    Ok(dx)
}
