//! Glue for shaders/linear.wgsl: forward, input gradient, weight and bias gradients. A weight
//! larger than one storage binding is bound as tiles of whole rows (see linear.wgsl).

use super::context::backend_error;
use super::kernels::{kernel, Kernel, Shader::Linear};
use super::{groups_1d, u, GpuBuffer, WgpuBackend};
use crate::error::Result;
use crate::ops::LinearParams;

const FWD: Kernel = kernel(Linear, "linear_fwd");
const FWD_ROWS: Kernel = kernel(Linear, "linear_fwd_rows");

/// Rows and dot-product length from which the forward pass takes one invocation per output
/// (`linear_fwd_rows`) instead of one workgroup: ConvNeXt's channels-last Linear has N·H·W
/// rows of 96–3072 features, where the workgroup reduction left most of each workgroup idle
/// (81% of a convnext_tiny batch on lavapipe).
const ROWS_MIN_N: usize = 8;
const ROWS_MAX_IN: usize = 4096;
const BWD: Kernel = kernel(Linear, "linear_bwd");
const WGRAD: Kernel = kernel(Linear, "linear_wgrad");
const BGRAD: Kernel = kernel(Linear, "linear_bgrad");

/// Uniform words: [n, in_f, out_f, has_bias, o0, tile, accumulate, 0].
fn params(p: &LinearParams, has_bias: bool, rows: (usize, usize), accumulate: bool) -> [u32; 8] {
    [
        u(p.n),
        u(p.in_f),
        u(p.out_f),
        has_bias as u32,
        u(rows.0),
        u(rows.1),
        accumulate as u32,
        0,
    ]
}

/// The weight's row tiles (first row, rows) with their byte ranges: one tile when the weight
/// fits one storage binding, else as many rows as fit, their offsets aligned as the adapter
/// requires. An error names the weight and the limit when not even one row fits.
/// A weight tile: (first row, rows) and the byte range bound (None: the whole buffer).
type Tile = ((usize, usize), Option<(u64, u64)>);

fn weight_tiles(be: &WgpuBackend, p: &LinearParams, w: &GpuBuffer) -> Result<Vec<Tile>> {
    be.need_len(w, p.out_f * p.in_f, "linear weight")?;
    let limits = &be.ctx.limits;
    let max = limits.max_storage_buffer_binding_size;
    let row = (p.in_f * 4) as u64;
    if w.raw().size() <= max || p.out_f == 0 {
        return Ok(vec![((0, p.out_f), None)]);
    }
    // Rows per tile: as many as fit, a multiple of the rows per offset-alignment step.
    let align = limits.min_storage_buffer_offset_alignment.max(4) as u64;
    let step = align / gcd(row, align);
    let rows = (max / row) / step * step;
    if rows == 0 {
        return Err(backend_error(format!(
            "linear weight [{}, {}]: {step} row(s) of {:.1} KiB are the smallest tile the \
             adapter's alignment ({align} bytes) allows, more than its \
             max_storage_buffer_binding_size of {:.1} MiB",
            p.out_f,
            p.in_f,
            row as f64 / 1024.0,
            max as f64 / 1048576.0
        )));
    }
    let rows = rows as usize;
    Ok((0..p.out_f)
        .step_by(rows)
        .map(|o0| {
            let t = rows.min(p.out_f - o0);
            ((o0, t), Some((o0 as u64 * row, t as u64 * row)))
        })
        .collect())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub fn forward(
    be: &WgpuBackend,
    p: &LinearParams,
    x: &GpuBuffer,
    w: &GpuBuffer,
    bias: Option<&GpuBuffer>,
) -> Result<GpuBuffer> {
    be.need(x, p.n * p.in_f, "linear input")?;
    let tiles = weight_tiles(be, p, w)?;
    if let Some(b) = bias {
        be.need(b, p.out_f, "linear bias")?;
    }
    let y = be.output(p.n * p.out_f)?;
    let b = bias.map(|b| b.raw()).unwrap_or(&be.dummy);
    let per_row = p.n >= ROWS_MIN_N && p.in_f <= ROWS_MAX_IN;
    for (rows, range) in tiles {
        let (k, groups) = if per_row {
            (FWD_ROWS, groups_1d(p.n * rows.1, 256)?)
        } else {
            // one workgroup per output element of the tile
            (FWD, groups_1d(p.n * rows.1, 1)?)
        };
        be.run_ranges(
            k,
            &params(p, bias.is_some(), rows, false),
            &[
                (x.raw(), None),
                (w.raw(), range),
                (b, None),
                (y.raw(), None),
            ],
            groups,
        )?;
    }
    Ok(y)
}

pub fn backward_input(
    be: &WgpuBackend,
    p: &LinearParams,
    dy: &GpuBuffer,
    w: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    let tiles = weight_tiles(be, p, w)?;
    let dx = be.output(p.n * p.in_f)?;
    for (i, (rows, range)) in tiles.into_iter().enumerate() {
        be.run_ranges(
            BWD,
            &params(p, false, rows, i > 0),
            &[(dy.raw(), None), (w.raw(), range), (dx.raw(), None)],
            groups_1d(p.n * p.in_f, 256)?,
        )?;
    }
    Ok(dx)
}

pub fn grad_weight(
    be: &WgpuBackend,
    p: &LinearParams,
    x: &GpuBuffer,
    dy: &GpuBuffer,
) -> Result<GpuBuffer> {
    be.need(x, p.n * p.in_f, "linear input")?;
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    let dw = be.output(p.out_f * p.in_f)?;
    be.run(
        WGRAD,
        &params(p, false, (0, p.out_f), false),
        &[x.raw(), dy.raw(), dw.raw()],
        groups_1d(p.out_f * p.in_f, 256)?,
    )?;
    Ok(dw)
}

pub fn grad_bias(be: &WgpuBackend, p: &LinearParams, dy: &GpuBuffer) -> Result<GpuBuffer> {
    be.need(dy, p.n * p.out_f, "linear output gradient")?;
    let db = be.output(p.out_f)?;
    be.run(
        BGRAD,
        &params(p, false, (0, p.out_f), false),
        &[dy.raw(), db.raw()],
        groups_1d(p.out_f, 256)?,
    )?;
    Ok(db)
}
