//! The CUDA backend: hand-written kernels (`kernels/*.cu`) compiled at run time with NVRTC for
//! the device's own compute capability, launched through cudarc on one stream. Everything
//! stays on the device between layers; weights are uploaded once by the engine.
//!
//! cudarc loads `libcuda` and `libnvrtc` dynamically, so the crate builds and its tests run on
//! machines without CUDA; [`CudaBackend::new`] probes for both libraries and a device first and
//! turns their absence into one error line (cudarc itself would panic).
//!
//! Convolution has four kernel variants kept side by side (see `kernels/conv2d.cu`): `v1`,
//! plain FP32; `v2`, a first TF32 tensor-core tiling; `v3`, the tuned tiling in 3xTF32 (FP32
//! accuracy), with the conv's epilogue fused; `v4`, v3 in plain TF32. Choose with
//! `--conv-kernel` or `GRADCAM_CONV_KERNEL`; the default is `v3` where the device has TF32
//! tensor cores (sm_80+), else `v1`.
//!
//! Modules: `kernels` (the sources and their NVRTC compilation), `args` (the argument structs:
//! each kernel takes its scalars as one `#[repr(C)]` struct, declared alike in its .cu file),
//! and one file of launches per op family, named as the wgpu backend's (`conv`,
//! `grouped_conv`, `pool`, `elementwise`, `activation`, `binary`, `layout`, `norm`, `linear`,
//! `squeeze_excitation`, `cam`), each with its structs and kernels. This file holds the device,
//! buffers, timing, the kernel table and the `Backend` impl, which dispatches to the families.

mod activation;
mod args;
mod binary;
mod cam;
mod conv;
mod elementwise;
mod grouped_conv;
pub mod kernels;
mod layout;
mod linear;
mod norm;
mod pool;
mod squeeze_excitation;

use super::{Backend, ConvEpilogue, ConvKernel};
use crate::backend::Profile;
use crate::error::Result;
use crate::ops::*;
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice,
};
use kernels::backend_error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Every kernel of `kernels/*.cu`, family by family (each family's file declares its own with
/// `kernels!`), looked up once when the backend starts.
fn kernel_table() -> impl Iterator<Item = &'static args::Entry> {
    [
        conv::KERNELS,
        grouped_conv::KERNELS,
        activation::KERNELS,
        binary::KERNELS,
        layout::KERNELS,
        norm::KERNELS,
        pool::KERNELS,
        elementwise::KERNELS,
        linear::KERNELS,
        cam::KERNELS,
        squeeze_excitation::KERNELS,
    ]
    .into_iter()
    .flatten()
}

/// Every kernel's name and the size and alignment of its argument struct: what
/// tests/cuda_kernels.rs compares with the PTX that NVRTC makes of kernels/*.cu.
pub fn kernel_layouts() -> Vec<(&'static str, usize, usize)> {
    kernel_table().map(|e| (e.name, e.size, e.align)).collect()
}

/// Threads per block of the elementwise-style kernels (grid-stride loops).
const THREADS: u32 = 256;

/// A launch configuration for `total` independent elements with grid-stride loops.
fn flat(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch configuration with exactly one thread per item (for kernels without a grid-stride
/// loop: the linear layers, whose warps each own an output).
fn exact(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.div_ceil(THREADS as usize).max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Checks that the CUDA driver, NVRTC and a device are all there, without letting cudarc
/// panic: the error says which one is missing.
pub fn probe() -> Result<()> {
    if !kernels::driver_available() {
        return Err(backend_error(
            "no CUDA driver (libcuda.so) on this machine; use --backend cpu",
        ));
    }
    kernels::require_nvrtc()?;
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(backend_error("no CUDA device found; use --backend cpu")),
        Err(e) => Err(backend_error(format!(
            "the CUDA driver reports no usable device ({e}); use --backend cpu"
        ))),
    }
}

/// Lets the stream-ordered allocator keep freed memory for reuse instead of returning it to
/// the driver at every synchronization (its default), so the next batch allocates nothing
/// new. Best effort: on failure the default stays, which is slower, not wrong.
fn keep_freed_memory(ctx: &CudaContext) {
    let mut pool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on this context's device with valid out-pointers.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            == sys::cudaError_enum::CUDA_SUCCESS
        {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

/// True when `probe` succeeds: what `--backend auto` asks before choosing CUDA.
pub fn is_available() -> bool {
    probe().is_ok()
}

/// Launches `kernel` (an [`args::Kernel`]) on the backend's stream: the buffers (references,
/// in the order of the kernel's pointer parameters), then its argument struct (a value),
/// mapping a launch failure to an error naming the kernel.
/// `launch!(be, kernel, cfg, label; bufs; args)` times the launch under `label` (a closure giving
/// the row's name) instead of the kernel's name.
macro_rules! launch {
    ($be:expr, $kernel:expr, $cfg:expr; $($buf:expr),+ ; $args:expr) => {
        launch!($be, $kernel, $cfg, || $kernel.name.to_string(); $($buf),+ ; $args)
    };
    ($be:expr, $kernel:expr, $cfg:expr, $label:expr; $($buf:expr),+ ; $args:expr) => {{
        use cudarc::driver::PushKernelArg as _;
        let kernel = $kernel;
        let args = kernel.args($args);
        let start = $be.timing_event()?;
        let mut b = $be.stream.launch_builder($be.func(kernel.name));
        $( b.arg($buf); )+
        b.arg(&args);
        // SAFETY: the buffers are the kernel's pointer parameters in kernels/*.cu, in order and
        // element type, each as long as the launch reads or writes (shapes checked by the
        // selftest); `args` is the kernel's own struct, laid out as its C declaration (checked
        // by args' test).
        unsafe { b.launch($cfg) }.map_err(|e| {
            $crate::backend::cuda::kernels::backend_error(format!("{}: {e}", kernel.name))
        })?;
        $be.end_timing($label, start)?;
    }};
}
use launch;

/// A timing row's name and the events recorded before and after its launch.
type TimedLaunch = (String, CudaEvent, CudaEvent);

/// Host copies of at least this many floats go through a pinned staging buffer, filled or
/// emptied by all cores: page-locked memory moves at full bus speed, asynchronously.
const PINNED_MIN: usize = 1 << 16;

/// Copies `src` into `dst` (same length) on the rayon pool.
fn par_copy(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    dst.par_chunks_mut(PINNED_MIN)
        .zip(src.par_chunks(PINNED_MIN))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    conv: ConvKernel,
    arch: String,
    /// Fill every output with NaN before its kernel runs, so unwritten elements are caught.
    pub poison: bool,
    /// Pinned staging buffer for uploads that repeat the previous upload's size (the input
    /// batch), and the previous upload's size.
    staging: RefCell<(usize, Option<PinnedHostSlice<f32>>)>,
    /// Pinned staging buffer for large downloads (the CAMs), grown to the largest seen.
    download_staging: RefCell<Option<PinnedHostSlice<f32>>>,
    /// While timing: the events around every launch since `start_timing`.
    timing: RefCell<Option<Vec<TimedLaunch>>>,
}

impl CudaBackend {
    /// Device `ordinal`; `conv` overrides the conv kernel variant (else v2 on sm_80+ and v1
    /// below).
    pub fn new(ordinal: usize, conv: Option<ConvKernel>) -> Result<Self> {
        probe()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| backend_error(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| backend_error(format!("cannot read the compute capability: {e}")))?;
        let arch = format!("sm_{major}{minor}");
        let tensor_cores = major >= 8;
        let conv = match conv {
            Some(k) if k.tensor_cores() && !tensor_cores => {
                return Err(backend_error(format!(
                "conv kernel {} needs TF32 tensor cores (sm_80 or newer); this device is {arch}",
                k.label()
            )))
            }
            Some(k) => k,
            None if tensor_cores => ConvKernel::V3,
            None => ConvKernel::V1,
        };
        // One stream does all the work, so cudarc's per-buffer events (which order work across
        // streams) are pure overhead: two event records per argument of every launch.
        // SAFETY: every allocation, copy and launch of this backend goes to `stream`.
        unsafe { ctx.disable_event_tracking() };
        keep_freed_memory(&ctx);
        let mut funcs = HashMap::new();
        for (file, ptx) in kernels::compile_all_cached(&arch)? {
            let module = ctx
                .load_module(ptx)
                .map_err(|e| backend_error(format!("cannot load {file} for {arch}: {e}")))?;
            for name in kernel_table().map(|e| e.name) {
                if let Ok(f) = module.load_function(name) {
                    funcs.insert(name, f);
                }
            }
        }
        if let Some(missing) = kernel_table()
            .map(|e| e.name)
            .find(|n| !funcs.contains_key(n))
        {
            return Err(backend_error(format!(
                "kernel {missing} not found in kernels/*.cu"
            )));
        }
        let stream = ctx
            .new_stream()
            .map_err(|e| backend_error(format!("cannot create a stream: {e}")))?;
        Ok(Self {
            ctx,
            stream,
            funcs,
            conv,
            arch,
            poison: false,
            staging: RefCell::new((0, None)),
            download_staging: RefCell::new(None),
            timing: RefCell::new(None),
        })
    }

    /// Starts timing every kernel launch with CUDA events (device time, not launch time).
    pub fn start_timing(&self) {
        *self.timing.borrow_mut() = Some(vec![]);
    }

    /// Device time per kernel since `start_timing`, and how it was measured.
    pub fn take_timing(&self) -> Result<(Profile, String)> {
        let mut profile = Profile::new();
        for (name, start, end) in self.timing.borrow_mut().take().unwrap_or_default() {
            let ms = start
                .elapsed_ms(&end)
                .map_err(|e| backend_error(format!("reading the timing events: {e}")))?;
            let entry = profile.entry(name).or_default();
            entry.0 += std::time::Duration::from_secs_f64(f64::from(ms) / 1e3);
            entry.1 += 1;
        }
        Ok((profile, "CUDA events around each launch".into()))
    }

    /// A timing event recorded on the stream now, when timing is on.
    fn timing_event(&self) -> Result<Option<CudaEvent>> {
        if self.timing.borrow().is_none() {
            return Ok(None);
        }
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        self.stream
            .record_event(flags)
            .map(Some)
            .map_err(|e| backend_error(format!("recording a timing event: {e}")))
    }

    /// Closes the timing of one launch of `name` that began at `start`.
    fn end_timing(&self, label: impl FnOnce() -> String, start: Option<CudaEvent>) -> Result<()> {
        if let (Some(start), Some(end)) = (start, self.timing_event()?) {
            if let Some(t) = self.timing.borrow_mut().as_mut() {
                t.push((label(), start, end));
            }
        }
        Ok(())
    }

    pub fn conv_kernel(&self) -> ConvKernel {
        self.conv
    }

    fn func(&self, name: &str) -> &CudaFunction {
        &self.funcs[name]
    }

    /// An output buffer of `len` floats: uninitialized (every kernel writes all of its
    /// output), or NaN with `poison`.
    fn out(&self, len: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: the memory is written by a kernel (or the fill below) before it is read.
        let mut y = unsafe { self.stream.alloc::<f32>(len) }
            .map_err(|e| backend_error(format!("cannot allocate {len} floats: {e}")))?;
        if self.poison && len > 0 {
            elementwise::fill(self, &mut y, f32::NAN)?;
        }
        Ok(y)
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Idx = CudaSlice<u32>;

    fn name(&self) -> String {
        let device = self.ctx.name().unwrap_or_else(|_| "unknown device".into());
        format!("cuda ({device}, {}, conv {})", self.arch, self.conv.label())
    }

    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        let err = |e| backend_error(format!("upload of {} floats: {e}", data.len()));
        let mut staging = self.staging.borrow_mut();
        let repeat = staging.0 == data.len() && data.len() >= PINNED_MIN;
        staging.0 = data.len();
        if !repeat {
            return self.stream.clone_htod(data).map_err(err);
        }
        if staging.1.as_ref().map(|s| s.len()) != Some(data.len()) {
            // SAFETY: filled below before any copy reads it.
            staging.1 = Some(unsafe { self.ctx.alloc_pinned::<f32>(data.len()) }.map_err(err)?);
        }
        let pinned = staging.1.as_mut().expect("staging buffer allocated");
        // Waits for the previous copy out of this buffer, then refills it.
        par_copy(pinned.as_mut_slice().map_err(err)?, data);
        let mut buf = unsafe { self.stream.alloc::<f32>(data.len()) }.map_err(err)?;
        self.stream.memcpy_htod(&*pinned, &mut buf).map_err(err)?;
        Ok(buf)
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        let err = |e| backend_error(format!("download of {} floats: {e}", buf.len()));
        if buf.len() < PINNED_MIN {
            return self.stream.clone_dtoh(buf).map_err(err);
        }
        let mut staging = self.download_staging.borrow_mut();
        if staging.as_ref().is_none_or(|s| s.len() < buf.len()) {
            *staging = None; // free the smaller one first
                             // SAFETY: only the part the copy below writes is read.
            *staging = Some(unsafe { self.ctx.alloc_pinned::<f32>(buf.len()) }.map_err(err)?);
        }
        let pinned = staging.as_mut().expect("staging buffer allocated");
        self.stream.memcpy_dtoh(buf, pinned).map_err(err)?;
        let mut out = vec![0f32; buf.len()];
        // as_slice waits for the copy.
        par_copy(&mut out, &pinned.as_slice().map_err(err)?[..buf.len()]);
        Ok(out)
    }

    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        conv::forward(self, p, x, w, bias)
    }

    fn conv2d_fused(
        &self,
        p: &Conv2dParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        e: &ConvEpilogue<'_, CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        conv::forward_fused(self, p, x, w, bias, e)
    }

    fn conv2d_grad_input(
        &self,
        p: &Conv2dParams,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        conv::backward_input(self, p, dy, w)
    }

    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        shift: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        elementwise::affine(self, p, x, scale, shift)
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        elementwise::affine_backward(self, p, dy, scale)
    }

    fn relu(&self, x: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
        elementwise::relu(self, x, len)
    }

    fn relu_grad_input(
        &self,
        y: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        len: usize,
    ) -> Result<CudaSlice<f32>> {
        elementwise::relu_backward(self, y, dy, len)
    }

    fn pool(
        &self,
        p: &PoolParams,
        x: &CudaSlice<f32>,
        argmax: bool,
    ) -> Result<(CudaSlice<f32>, Option<CudaSlice<u32>>)> {
        pool::forward(self, p, x, argmax)
    }

    fn pool_grad_input(
        &self,
        p: &PoolParams,
        argmax: Option<&CudaSlice<u32>>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        pool::backward_input(self, p, argmax, dy)
    }

    fn add(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
        elementwise::add(self, a, b, len)
    }

    fn linear(
        &self,
        p: &LinearParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        linear::forward(self, p, x, w, bias)
    }

    fn linear_grad_input(
        &self,
        p: &LinearParams,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        linear::backward_input(self, p, dy, w)
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.out(len)
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros::<f32>(len)
            .map_err(|e| backend_error(format!("cannot allocate {len} floats: {e}")))
    }

    fn activation(&self, p: &ActivationParams, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        activation::forward(self, p, x)
    }

    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        activation::backward(self, p, saved, dy)
    }

    fn binary(
        &self,
        p: &BinaryParams,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        binary::forward(self, p, a, b)
    }

    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        binary::backward(self, p, operand, dy, a, b)
    }

    fn squeeze_excitation(
        &self,
        p: &SqueezeExciteParams,
        x: &CudaSlice<f32>,
        fc1: (&CudaSlice<f32>, &CudaSlice<f32>),
        fc2: (&CudaSlice<f32>, &CudaSlice<f32>),
    ) -> Result<CudaSlice<f32>> {
        squeeze_excitation::forward(self, p, x, fc1, fc2)
    }

    fn strided_copy(
        &self,
        p: &StridedCopyParams,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
    ) -> Result<()> {
        layout::strided_copy(self, p, src, dst)
    }

    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        norm::forward(self, p, x, weight, bias)
    }

    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        norm::backward(self, p, x, weight, dy)
    }

    fn class_seed(&self, p: &ClassSeedParams, logits: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        cam::class_seed(self, p, logits)
    }

    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &CudaSlice<f32>,
        gradient: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        cam::grad_cam(self, p, activation, gradient)
    }

    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &CudaSlice<f32>,
        activation: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        cam::score_cam_masks(self, p, x, activation)
    }
}
