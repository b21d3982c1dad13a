//! Device buffers: a pool that recycles storage buffers by exact size, upload and download.
//!
//! A forward pass frees and allocates activations of the same few sizes on every call; reusing
//! them avoids a device allocation per op. Reuse is safe without waiting: the queue executes
//! submissions in order and wgpu inserts the barriers between a buffer's earlier readers and
//! its next writer.

use super::context::{backend_error, Context};
use crate::error::Result;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

/// Storage buffers no longer referenced, by size in bytes. Each size hands out its lowest
/// buffer (wgpu orders buffers by id) rather than the last one freed, so which buffer an op
/// gets depends on the set of free buffers, not on the order they were freed in: identical
/// batches get identical buffers, and their cached bind groups (kernels.rs) are reused.
#[derive(Default)]
pub struct Pool {
    free: HashMap<u64, BTreeSet<wgpu::Buffer>>,
}

/// A storage buffer of `len` 4-byte elements (f32, or u32 for max-pool argmaxes) that goes back
/// to the pool when dropped.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    len: usize,
    pool: Rc<RefCell<Pool>>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            if let Ok(mut pool) = self.pool.try_borrow_mut() {
                pool.free.entry(b.size()).or_default().insert(b);
            }
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer[{}]", self.len)
    }
}

/// Bytes allocated for `len` elements: at least 16, so that empty tensors still bind.
fn byte_size(len: usize) -> u64 {
    ((len as u64) * 4).max(16).div_ceil(16) * 16
}

/// Allocates (or recycles) a buffer of `len` elements. Its contents are undefined.
pub fn alloc(ctx: &Context, pool: &Rc<RefCell<Pool>>, len: usize) -> Result<GpuBuffer> {
    let size = byte_size(len);
    // Buffers may exceed one binding (max_storage_buffer_binding_size): ops that split a big
    // tensor bind it range by range, the others say which of their tensors is too big.
    let max = ctx.limits.max_buffer_size;
    if size > max {
        return Err(backend_error(format!(
            "a tensor of {len} elements ({:.1} MiB) exceeds the adapter's largest buffer \
             (max_buffer_size) of {:.1} MiB",
            size as f64 / 1048576.0,
            max as f64 / 1048576.0
        )));
    }
    let recycled = pool
        .borrow_mut()
        .free
        .get_mut(&size)
        .and_then(BTreeSet::pop_first);
    let buf = recycled.unwrap_or_else(|| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    });
    Ok(GpuBuffer {
        buf: Some(buf),
        len,
        pool: pool.clone(),
    })
}

pub fn upload(ctx: &Context, pool: &Rc<RefCell<Pool>>, data: &[f32]) -> Result<GpuBuffer> {
    let b = alloc(ctx, pool, data.len())?;
    if !data.is_empty() {
        ctx.queue
            .write_buffer(b.raw(), 0, bytemuck::cast_slice(data));
    }
    Ok(b)
}

/// Copies the first `len` elements of `buf` back to the host; waits for all submitted work.
pub fn download_bytes(ctx: &Context, buf: &wgpu::Buffer, len: usize) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(vec![]);
    }
    let size = (len as u64) * 4;
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
    ctx.queue.submit([enc.finish()]);
    read_mapped(ctx, &staging)
}

/// Maps a MAP_READ buffer (after the work that fills it was submitted) and copies it out.
pub fn read_mapped(ctx: &Context, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    match rx.try_recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(backend_error(format!("cannot read back a buffer: {e}"))),
        Err(_) => return Err(backend_error("buffer mapping did not complete")),
    }
    let bytes = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| backend_error(format!("cannot read back a buffer: {e}")))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(bytes)
}
