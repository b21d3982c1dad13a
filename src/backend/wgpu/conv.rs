//! Glue for shaders/conv2d.wgsl: forward, input gradient and weight gradient, each v1 (direct)
//! or v2 (tiled), and the bias gradient; and for shaders/grouped_conv.wgsl: the convs with
//! groups, dilation or asymmetric padding, forward and input gradient (v1 direct, v2 tiled),
//! weight gradient (v1, direct).

use super::kernels::{kernel, Kernel, Shader::Conv2d, Shader::GroupedConv};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::backend::ConvKernel;
use crate::error::Result;
use crate::ops::{Conv2dParams, GroupedTile};

const FWD_V1: Kernel = kernel(Conv2d, "conv2d_fwd_v1");
const FWD_V2: Kernel = kernel(Conv2d, "conv2d_fwd_v2");
const BWD_V1: Kernel = kernel(Conv2d, "conv2d_bwd_v1");
const BWD_V2: Kernel = kernel(Conv2d, "conv2d_bwd_v2");
const WGRAD_V1: Kernel = kernel(Conv2d, "conv2d_wgrad_v1");
const WGRAD_V2: Kernel = kernel(Conv2d, "conv2d_wgrad_v2");
const BGRAD: Kernel = kernel(Conv2d, "conv2d_bgrad");
const GROUPED_FWD: Kernel = kernel(GroupedConv, "grouped_conv_fwd");
const GROUPED_FWD_V2: Kernel = kernel(GroupedConv, "grouped_conv_fwd_v2");
const GROUPED_BWD: Kernel = kernel(GroupedConv, "grouped_conv_bwd");
const GROUPED_BWD_V2: Kernel = kernel(GroupedConv, "grouped_conv_bwd_v2");
const GROUPED_WGRAD: Kernel = kernel(GroupedConv, "grouped_conv_wgrad");

/// Output tile edge of the v2 kernels (TILE in conv2d.wgsl).
const TILE: usize = 64;

fn params(p: &Conv2dParams, has_bias: bool) -> [u32; 14] {
    [
        u(p.n),
        u(p.c_in),
        u(p.h_in),
        u(p.w_in),
        u(p.c_out),
        u(p.k_h),
        u(p.k_w),
        u(p.stride_h),
        u(p.stride_w),
        u(p.pad_h),
        u(p.pad_w),
        u(p.h_out()),
        u(p.w_out()),
        has_bias as u32,
    ]
}

/// Workgroups of a v2 kernel: x (folded into z past 65,535) over column tiles, y over row tiles.
fn tiled_groups(rows: usize, cols: usize) -> Result<[u32; 3]> {
    let [x, z, _] = groups_1d(cols, TILE)?;
    let y = rows.div_ceil(TILE).max(1);
    Ok([x, u(y), z])
}

/// Uniform words of grouped_conv.wgsl; `tile`: v2's tiling (zeros for the other kernels).
fn grouped_params(p: &Conv2dParams, has_bias: bool, tile: Option<GroupedTile>) -> [u32; 20] {
    let t = tile.map_or([0; 3], |t| [u(t.h), u(t.w), u(t.planes)]);
    [
        u(p.n),
        u(p.c_in),
        u(p.h_in),
        u(p.w_in),
        u(p.c_out),
        u(p.k_h),
        u(p.k_w),
        u(p.stride_h),
        u(p.stride_w),
        u(p.pad_h),
        u(p.pad_w),
        u(p.h_out()),
        u(p.w_out()),
        u(p.dilation_h),
        u(p.dilation_w),
        u(p.groups),
        has_bias as u32,
        t[0],
        t[1],
        t[2],
    ]
}

pub fn forward(
    be: &WgpuBackend,
    p: &Conv2dParams,
    x: &GpuBuffer,
    w: &GpuBuffer,
    bias: Option<&GpuBuffer>,
) -> Result<GpuBuffer> {
    be.need(x, p.input_len(), "conv2d input")?;
    be.need(w, p.weight_len(), "conv2d weight")?;
    if let Some(b) = bias {
        be.need(b, p.c_out, "conv2d bias")?;
    }
    let y = be.output(p.output_len())?;
    let b = bias.map(|b| b.raw()).unwrap_or(&be.dummy);
    let bufs = [x.raw(), w.raw(), b, y.raw()];
    if !p.is_dense() {
        let (k, tile, groups) = match p.grouped_tile().filter(|_| be.conv != ConvKernel::V1) {
            Some(t) => (GROUPED_FWD_V2, Some(t), groups_1d(t.workgroups, 1)?),
            None => (GROUPED_FWD, None, groups_1d(p.output_len(), 256)?),
        };
        be.run(k, &grouped_params(p, bias.is_some(), tile), &bufs, groups)?;
        return Ok(y);
    }
    let prm = params(p, bias.is_some());
    match be.conv {
        ConvKernel::V1 => be.run(FWD_V1, &prm, &bufs, groups_1d(p.output_len(), 256)?)?,
        // v2 (set_conv admits only v1 and v2)
        _ => {
            let cols = p.n * p.h_out() * p.w_out();
            be.run(FWD_V2, &prm, &bufs, tiled_groups(p.c_out, cols)?)?
        }
    }
    Ok(y)
}

pub fn backward_input(
    be: &WgpuBackend,
    p: &Conv2dParams,
    dy: &GpuBuffer,
    w: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(dy, p.output_len(), "conv2d output gradient")?;
    be.need(w, p.weight_len(), "conv2d weight")?;
    let dx = be.output(p.input_len())?;
    let bufs = [dy.raw(), w.raw(), dx.raw()];
    if !p.is_dense() {
        let tile = p
            .grouped_tile_backward()
            .filter(|_| be.conv != ConvKernel::V1);
        let (k, groups) = match tile {
            Some(t) => (GROUPED_BWD_V2, groups_1d(t.workgroups, 1)?),
            None => (GROUPED_BWD, groups_1d(p.input_len(), 256)?),
        };
        be.run(k, &grouped_params(p, false, tile), &bufs, groups)?;
        return Ok(dx);
    }
    let prm = params(p, false);
    match be.conv {
        ConvKernel::V1 => be.run(BWD_V1, &prm, &bufs, groups_1d(p.input_len(), 256)?)?,
        // v2 (set_conv admits only v1 and v2)
        _ => {
            let cols = p.n * p.h_in * p.w_in;
            be.run(BWD_V2, &prm, &bufs, tiled_groups(p.c_in, cols)?)?
        }
    }
    Ok(dx)
}

pub fn grad_weight(
    be: &WgpuBackend,
    p: &Conv2dParams,
    x: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.input_len(), "conv2d input")?;
    be.need(dy, p.output_len(), "conv2d output gradient")?;
    let dw = be.output(p.weight_len())?;
    let bufs = [x.raw(), dy.raw(), dw.raw()];
    if !p.is_dense() {
        let prm = grouped_params(p, false, None);
        be.run(GROUPED_WGRAD, &prm, &bufs, groups_1d(p.weight_len(), 256)?)?;
        return Ok(dw);
    }
    let prm = params(p, false);
    match be.conv {
        ConvKernel::V1 => be.run(WGRAD_V1, &prm, &bufs, groups_1d(p.weight_len(), 256)?)?,
        _ => be.run(WGRAD_V2, &prm, &bufs, tiled_groups(p.c_out, p.k_len())?)?,
    }
    Ok(dw)
}

pub fn grad_bias(be: &WgpuBackend, p: &Conv2dParams, dy: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(dy, p.output_len(), "conv2d output gradient")?;
    let db = be.output(p.c_out)?;
    be.run(
        BGRAD,
        &params(p, false),
        &[dy.raw(), db.raw()],
        // one workgroup per output channel
        groups_1d(p.c_out, 1)?,
    )?;
    Ok(db)
}
