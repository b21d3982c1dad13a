//! The WGSL backend on wgpu: every op of the engine as a hand-written compute shader
//! (`shaders/*.wgsl`), on Vulkan, Metal or DX12, any vendor, or Mesa's lavapipe without a GPU.
//!
//! Everything stays on the device: weights are uploaded once by `Engine::new`, activations and
//! gradients live in pooled storage buffers, each op is one dispatch submitted in queue order
//! without waiting, and only what the engine downloads (logits, CAMs) is read back.
//!
//! Modules: `context` (adapter and device, error capture), `buffer` (pool, upload, download),
//! `kernels` (shader sources, pipeline cache, dispatch, timing), and one file of glue per op
//! family (`conv`, `pool`, `elementwise`, `activation`, `binary`, `layout`, `norm`, `linear`,
//! `cam`, `sgd`). Training ops
//! (`TrainBackend`: weight and bias gradients, dropout, SGD) live with their families.

mod activation;
mod binary;
mod buffer;
mod cam;
mod context;
mod conv;
mod elementwise;
mod kernels;
mod layout;
mod linear;
mod norm;
mod pool;
mod sgd;
mod squeeze_excitation;

pub use buffer::GpuBuffer;
pub use context::{adapters, AdapterChoice};

use super::{Backend, ConvKernel, TrainBackend};
use crate::backend::Profile;
use crate::error::Result;
use crate::ops::*;
use buffer::Pool;
use context::{backend_error, Context};
use kernels::{groups_1d, Kernel, Kernels};
use std::cell::RefCell;
use std::rc::Rc;

pub struct WgpuBackend {
    ctx: Context,
    pool: Rc<RefCell<Pool>>,
    kernels: Kernels,
    /// Stands in for an absent bias (a binding cannot be left empty).
    dummy: wgpu::Buffer,
    /// Fill every output with NaN before its kernel runs, so tests catch unwritten elements.
    pub poison: bool,
    conv: ConvKernel,
}

impl WgpuBackend {
    /// Opens the best adapter allowed by `choice`; `Error::Backend` when there is none.
    pub fn new(choice: AdapterChoice) -> Result<Self> {
        let ctx = Context::new(choice)?;
        let dummy = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("no bias"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Self {
            ctx,
            pool: Rc::default(),
            kernels: Kernels::new(),
            dummy,
            poison: false,
            conv: ConvKernel::V2,
        })
    }

    /// Chooses the conv kernel variant; wgpu has v1 and v2.
    pub fn set_conv(&mut self, k: ConvKernel) -> Result<()> {
        if !matches!(k, ConvKernel::V1 | ConvKernel::V2) {
            return Err(crate::error::Error::Usage(format!(
                "conv kernel {} exists on the CUDA backend only; wgpu has v1 and v2",
                k.label()
            )));
        }
        self.conv = k;
        Ok(())
    }

    /// The adapter's name, type and graphics API.
    pub fn adapter(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// The adapter's largest storage binding, in bytes (`max_storage_buffer_binding_size`).
    pub fn max_binding_bytes(&self) -> u64 {
        self.ctx.limits.max_storage_buffer_binding_size
    }

    /// Whether the adapter can time kernels with timestamp queries.
    pub fn has_timestamps(&self) -> bool {
        self.ctx.timestamps
    }

    /// Bind groups created so far (and still cached).
    pub fn bind_groups_created(&self) -> usize {
        self.kernels.bind_groups_created()
    }

    /// Starts recording the time of every kernel dispatched from now on.
    pub fn start_timing(&self) {
        self.kernels.start_timing();
    }

    /// Time per kernel (by WGSL entry point) since `start_timing`, and how it was measured.
    pub fn take_timing(&self) -> Result<(Profile, String)> {
        self.ctx.wait()?;
        self.kernels.take_timing(&self.ctx)
    }

    fn run(
        &self,
        k: Kernel,
        params: &[u32],
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        self.kernels.dispatch(&self.ctx, k, params, bufs, groups)
    }

    /// [`WgpuBackend::run`] with bindings that may be byte ranges of their buffers.
    fn run_ranges(
        &self,
        k: Kernel,
        params: &[u32],
        bufs: &[kernels::Binding],
        groups: [u32; 3],
    ) -> Result<()> {
        self.kernels
            .dispatch_ranges(&self.ctx, k, params, bufs, groups)
    }

    /// A buffer for a kernel's output: uninitialized, or NaN when poisoning.
    fn output(&self, len: usize) -> Result<GpuBuffer> {
        let b = buffer::alloc(&self.ctx, &self.pool, len)?;
        if self.poison && len > 0 {
            elementwise::fill(self, &b, f32::NAN)?;
        }
        Ok(b)
    }

    /// Errors out when a buffer holds fewer elements than an op reads, or more bytes than one
    /// storage binding takes (for ops that bind it whole): the error names the tensor.
    fn need(&self, buf: &GpuBuffer, len: usize, what: &str) -> Result<()> {
        self.need_len(buf, len, what)?;
        let max = self.ctx.limits.max_storage_buffer_binding_size;
        if buf.raw().size() > max {
            return Err(backend_error(format!(
                "{what}: a tensor of {} elements ({:.1} MiB) is larger than the adapter's \
                 max_storage_buffer_binding_size of {:.1} MiB, and this op does not split it",
                buf.len(),
                buf.raw().size() as f64 / 1048576.0,
                max as f64 / 1048576.0
            )));
        }
        Ok(())
    }

    /// The length check of [`WgpuBackend::need`] alone, for tensors the op binds in ranges.
    fn need_len(&self, buf: &GpuBuffer, len: usize, what: &str) -> Result<()> {
        if buf.len() < len {
            return Err(backend_error(format!(
                "{what}: buffer of {} elements, op needs {len}",
                buf.len()
            )));
        }
        Ok(())
    }
}

fn u(v: usize) -> u32 {
    v as u32
}

impl Backend for WgpuBackend {
    type Buf = GpuBuffer;
    type Idx = GpuBuffer;

    fn name(&self) -> String {
        let i = &self.ctx.info;
        format!(
            "wgpu ({}, {:?}, {:?}, conv {})",
            i.name,
            i.device_type,
            i.backend,
            self.conv.label()
        )
    }

    fn upload(&self, data: &[f32]) -> Result<GpuBuffer> {
        buffer::upload(&self.ctx, &self.pool, data)
    }

    fn download(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        let bytes = buffer::download_bytes(&self.ctx, buf.raw(), buf.len())?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &GpuBuffer,
        w: &GpuBuffer,
        bias: Option<&GpuBuffer>,
    ) -> Result<GpuBuffer> {
        conv::forward(self, p, x, w, bias)
    }

    fn conv2d_grad_input(
        &self,
        p: &Conv2dParams,
        dy: &GpuBuffer,
        w: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        conv::backward_input(self, p, dy, w)
    }

    fn alloc(&self, len: usize) -> Result<GpuBuffer> {
        self.output(len)
    }

    fn zeros(&self, len: usize) -> Result<GpuBuffer> {
        let b = buffer::alloc(&self.ctx, &self.pool, len)?;
        if len > 0 {
            elementwise::fill(self, &b, 0.0)?;
        }
        Ok(b)
    }

    fn activation(&self, p: &ActivationParams, x: &GpuBuffer) -> Result<GpuBuffer> {
        activation::forward(self, p, x)
    }

    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &GpuBuffer,
        dy: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        activation::backward(self, p, saved, dy)
    }

    fn squeeze_excitation(
        &self,
        p: &SqueezeExciteParams,
        x: &GpuBuffer,
        fc1: (&GpuBuffer, &GpuBuffer),
        fc2: (&GpuBuffer, &GpuBuffer),
    ) -> Result<GpuBuffer> {
        squeeze_excitation::forward(self, p, x, fc1, fc2)
    }

    fn binary(&self, p: &BinaryParams, a: &GpuBuffer, b: &GpuBuffer) -> Result<GpuBuffer> {
        binary::forward(self, p, a, b)
    }

    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &GpuBuffer,
        a: &GpuBuffer,
        b: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        binary::backward(self, p, operand, dy, a, b)
    }

    fn strided_copy(
        &self,
        p: &StridedCopyParams,
        src: &GpuBuffer,
        dst: &mut GpuBuffer,
    ) -> Result<()> {
        layout::strided_copy(self, p, src, dst)
    }

    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        bias: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        norm::forward(self, p, x, weight, bias)
    }

    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        dy: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        norm::backward(self, p, x, weight, dy)
    }

    fn dropout(&self, x: &GpuBuffer, mask: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
        elementwise::dropout(self, x, mask, len)
    }

    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &GpuBuffer,
        scale: &GpuBuffer,
        shift: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        elementwise::affine(self, p, x, scale, shift)
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &GpuBuffer,
        scale: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        elementwise::affine_backward(self, p, dy, scale)
    }

    fn relu(&self, x: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
        elementwise::relu(self, x, len)
    }

    fn relu_grad_input(&self, y: &GpuBuffer, dy: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
        elementwise::relu_backward(self, y, dy, len)
    }

    fn pool(
        &self,
        p: &PoolParams,
        x: &GpuBuffer,
        argmax: bool,
    ) -> Result<(GpuBuffer, Option<GpuBuffer>)> {
        pool::forward(self, p, x, argmax)
    }

    fn pool_grad_input(
        &self,
        p: &PoolParams,
        argmax: Option<&GpuBuffer>,
        dy: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        pool::backward_input(self, p, argmax, dy)
    }

    fn add(&self, a: &GpuBuffer, b: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
        elementwise::add(self, a, b, len)
    }

    fn linear(
        &self,
        p: &LinearParams,
        x: &GpuBuffer,
        w: &GpuBuffer,
        bias: Option<&GpuBuffer>,
    ) -> Result<GpuBuffer> {
        linear::forward(self, p, x, w, bias)
    }

    fn linear_grad_input(
        &self,
        p: &LinearParams,
        dy: &GpuBuffer,
        w: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        linear::backward_input(self, p, dy, w)
    }

    fn class_seed(&self, p: &ClassSeedParams, logits: &GpuBuffer) -> Result<GpuBuffer> {
        cam::class_seed(self, p, logits)
    }

    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &GpuBuffer,
        gradient: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        cam::grad_cam(self, p, activation, gradient)
    }

    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &GpuBuffer,
        activation: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        cam::score_cam_masks(self, p, x, activation)
    }
}

impl TrainBackend for WgpuBackend {
    fn conv2d_grad_weight(
        &self,
        p: &Conv2dParams,
        x: &GpuBuffer,
        dy: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        conv::grad_weight(self, p, x, dy)
    }

    fn conv2d_grad_bias(&self, p: &Conv2dParams, dy: &GpuBuffer) -> Result<GpuBuffer> {
        conv::grad_bias(self, p, dy)
    }

    fn linear_grad_weight(
        &self,
        p: &LinearParams,
        x: &GpuBuffer,
        dy: &GpuBuffer,
    ) -> Result<GpuBuffer> {
        linear::grad_weight(self, p, x, dy)
    }

    fn linear_grad_bias(&self, p: &LinearParams, dy: &GpuBuffer) -> Result<GpuBuffer> {
        linear::grad_bias(self, p, dy)
    }

    fn sgd_step(
        &self,
        s: &SgdParams,
        w: &mut GpuBuffer,
        grad: &GpuBuffer,
        velocity: &mut Option<GpuBuffer>,
        len: usize,
    ) -> Result<()> {
        sgd::step(self, s, w, grad, velocity, len)
    }
}
