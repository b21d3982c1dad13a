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

pub mod kernels;

use super::{Backend, ConvEpilogue, ConvKernel};
use crate::backend::Profile;
use crate::error::Result;
use crate::ops::*;
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use kernels::backend_error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Every kernel name of `kernels/*.cu`, looked up once when the backend starts.
pub const KERNEL_NAMES: &[&str] = &[
    "conv2d_fwd_v1",
    "conv2d_bwd_input_v1",
    "conv2d_fwd_v2",
    "conv2d_bwd_input_v2",
    "conv2d_fwd_v3",
    "conv2d_bwd_input_v3",
    "conv2d_fwd_v4",
    "conv2d_bwd_input_v4",
    "grouped_conv_fwd",
    "grouped_conv_fwd_v2",
    "grouped_conv_bwd_input",
    "grouped_conv_bwd_input_v2",
    "activation_fwd",
    "activation_bwd_input",
    "binary_fwd",
    "binary_bwd_input",
    "strided_copy",
    "layer_norm_fwd",
    "layer_norm_bwd_input",
    "avg_pool2d_fwd",
    "avg_pool2d_bwd_input",
    "adaptive_max_pool2d_fwd",
    "adaptive_max_pool2d_bwd_input",
    "max_pool2d_fwd",
    "max_pool2d_bwd_input",
    "adaptive_avg_pool2d_fwd",
    "adaptive_avg_pool2d_bwd_input",
    "relu_fwd",
    "relu_bwd_input",
    "channel_affine_fwd",
    "channel_affine_bwd_input",
    "add",
    "fill",
    "linear_fwd",
    "linear_bwd_input",
    "grad_cam",
    "score_cam_masks",
    "squeeze_excite_gates",
    "class_seed",
];

/// A rank-4 shape or stride vector passed by value (`struct Dims4` of kernels/binary.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dims4([i32; 4]);
// SAFETY: #[repr(C)] array of i32, the layout of `struct Dims4 { int v[4]; }`.
unsafe impl cudarc::driver::DeviceRepr for Dims4 {}

/// A rank-6 shape or stride vector passed by value (`struct Dims6` of kernels/layout.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct Dims6([i64; COPY_RANK]);
// SAFETY: #[repr(C)] array of i64, the layout of `struct Dims6 { long long v[6]; }`.
unsafe impl cudarc::driver::DeviceRepr for Dims6 {}

fn dims4(v: [usize; 4]) -> Dims4 {
    Dims4(v.map(|x| x as i32))
}

fn dims6(v: [usize; COPY_RANK]) -> Dims6 {
    Dims6(v.map(|x| x as i64))
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

/// The launch of a tiled grouped-conv kernel: one block per tile of `t`.
fn grouped_grid(t: &GroupedTile) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (t.workgroups as u32, 1, 1),
        block_dim: (GroupedTile::THREADS as u32, 1, 1),
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

/// Launches `$name` on the backend's stream with the given arguments (references), mapping
/// a launch failure to an error naming the kernel.
/// `launch!(self, name, cfg, label; args)` times the launch under `label` (a closure giving
/// the row's name) instead of the kernel's name.
macro_rules! launch {
    ($self:expr, $name:expr, $cfg:expr; $($arg:expr),* $(,)?) => {
        launch!($self, $name, $cfg, || $name.to_string(); $($arg),*)
    };
    ($self:expr, $name:expr, $cfg:expr, $label:expr; $($arg:expr),* $(,)?) => {{
        let start = $self.timing_event()?;
        let mut b = $self.stream.launch_builder($self.func($name));
        $( b.arg($arg); )*
        // SAFETY: every call site passes exactly the arguments, in order and type, that the
        // kernel of that name declares in kernels/*.cu (shapes checked by the selftest).
        unsafe { b.launch($cfg) }.map_err(|e| backend_error(format!("{}: {e}", $name)))?;
        $self.end_timing($label, start)?;
    }};
}

/// A timing row's name and the events recorded before and after its launch.
type TimedLaunch = (String, CudaEvent, CudaEvent);

/// Timing rows of the conv kernels carry the layer's shape: which layers cost the most is
/// what a kernel experiment needs to know.
fn conv_label(name: &str, p: &Conv2dParams) -> String {
    format!(
        "{name} {}->{} {}x{} k{} s{}",
        p.c_in, p.c_out, p.h_in, p.w_in, p.k_h, p.stride_h
    )
}

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
            for name in KERNEL_NAMES {
                if let Ok(f) = module.load_function(name) {
                    funcs.insert(*name, f);
                }
            }
        }
        if let Some(missing) = KERNEL_NAMES.iter().find(|n| !funcs.contains_key(*n)) {
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
            let (nan, n) = (f32::NAN, len as i64);
            let mut b = self.stream.launch_builder(self.func("fill"));
            b.arg(&mut y).arg(&nan).arg(&n);
            // SAFETY: fill(y: [len], value, len) matches the kernel's signature.
            unsafe { b.launch(flat(len)) }.map_err(|e| backend_error(format!("fill: {e}")))?;
        }
        Ok(y)
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

    fn conv_shape(p: &Conv2dParams) -> [i32; 13] {
        [
            p.n,
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
        ]
        .map(|v| v as i32)
    }

    /// Shape arguments of kernels/pool.cu's avg_pool2d kernels.
    fn avg_pool_shape(a: &AvgPool2dParams) -> [i32; 11] {
        let p = &a.window;
        [
            p.h_in,
            p.w_in,
            p.h_out(),
            p.w_out(),
            p.k_h,
            p.k_w,
            p.stride_h,
            p.stride_w,
            p.pad_h,
            p.pad_w,
            a.count_include_pad as usize,
        ]
        .map(|v| v as i32)
    }

    /// Grid of the tensor-core kernels for C[M, N]: v2's 64x64 tiles of 128 threads, v3/v4's
    /// 128x128 tiles of 256 threads.
    fn tile_grid(&self, m: usize, n: usize) -> LaunchConfig {
        let (tile, threads) = match self.conv {
            ConvKernel::V2 => (64, 128),
            _ => (128, 256),
        };
        LaunchConfig {
            grid_dim: (n.div_ceil(tile) as u32, m.div_ceil(tile) as u32, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// v3/v4 forward with an optional fused epilogue (`None`: bias only).
    fn conv2d_v3(
        &self,
        p: &Conv2dParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        e: Option<&ConvEpilogue<'_, CudaSlice<f32>>>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.output_len())?;
        let s = Self::conv_shape(p);
        let name = match self.conv {
            ConvKernel::V4 => "conv2d_fwd_v4",
            _ => "conv2d_fwd_v3",
        };
        // Absent operands are null pointers: the kernel skips their step.
        let ptr = |b: Option<&CudaSlice<f32>>| b.map_or(0u64, |b| b.device_ptr(&self.stream).0);
        let bias = ptr(bias);
        let scale = ptr(e.and_then(|e| e.bn.map(|(s, _)| s)));
        let shift = ptr(e.and_then(|e| e.bn.map(|(_, t)| t)));
        let residual = ptr(e.and_then(|e| e.residual));
        // ReLU as max(v, 0) (the CPU's fused rule); any other row through the table.
        let act = e.and_then(|e| e.act);
        let relu = act.is_some_and(|a| a.act == Activation::Relu) as i32;
        let (id, alpha, beta) = match act {
            Some(a) if a.act != Activation::Relu => (a.act.index() as i32, a.alpha, a.beta),
            _ => (-1, 0.0, 0.0),
        };
        let cfg = self.tile_grid(p.c_out, p.n * p.h_out() * p.w_out());
        launch!(self, name, cfg, || conv_label(name, p); &mut y, x, w, &bias, &scale, &shift, &residual, &relu,
            &id, &alpha, &beta, &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
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
        if !p.is_dense() {
            let mut y = self.out(p.output_len())?;
            let has_bias = bias.is_some() as i32;
            let b = bias.unwrap_or(w);
            let s = Self::grouped_shape(p);
            // v1 is the reference; every other variant takes the tiled v2 where its window fits.
            match p.grouped_tile().filter(|_| self.conv != ConvKernel::V1) {
                Some(t) => {
                    let name = "grouped_conv_fwd_v2";
                    let [th, tw, planes] = [t.h, t.w, t.planes].map(|v| v as i32);
                    launch!(self, name, grouped_grid(&t), || conv_label(name, p); &mut y, x, w, b, &has_bias,
                        &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                        &s[11], &s[12], &s[13], &s[14], &th, &tw, &planes);
                }
                None => {
                    let name = "grouped_conv_fwd";
                    launch!(self, name, flat(p.output_len()), || conv_label(name, p); &mut y, x, w, b,
                        &has_bias, &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8],
                        &s[9], &s[10], &s[11], &s[12], &s[13], &s[14]);
                }
            }
            return Ok(y);
        }
        if matches!(self.conv, ConvKernel::V3 | ConvKernel::V4) {
            return self.conv2d_v3(p, x, w, bias, None);
        }
        let mut y = self.out(p.output_len())?;
        let has_bias = bias.is_some() as i32;
        let b = bias.unwrap_or(w);
        let s = Self::conv_shape(p);
        let (name, cfg) = match self.conv {
            ConvKernel::V1 => ("conv2d_fwd_v1", flat(p.output_len())),
            _ => (
                "conv2d_fwd_v2",
                self.tile_grid(p.c_out, p.n * p.h_out() * p.w_out()),
            ),
        };
        launch!(self, name, cfg, || conv_label(name, p); &mut y, x, w, b, &has_bias,
            &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
        Ok(y)
    }

    fn conv2d_fused(
        &self,
        p: &Conv2dParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        e: &ConvEpilogue<'_, CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        if !p.is_dense() {
            return super::conv2d_then_epilogue(self, p, x, w, bias, e);
        }
        match self.conv {
            ConvKernel::V3 | ConvKernel::V4 => self.conv2d_v3(p, x, w, bias, Some(e)),
            _ => super::conv2d_then_epilogue(self, p, x, w, bias, e),
        }
    }

    fn conv2d_grad_input(
        &self,
        p: &Conv2dParams,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        if !p.is_dense() {
            let mut dx = self.out(p.input_len())?;
            let s = Self::grouped_shape(p);
            match p
                .grouped_tile_backward()
                .filter(|_| self.conv != ConvKernel::V1)
            {
                Some(t) => {
                    let name = "grouped_conv_bwd_input_v2";
                    let [th, tw, planes] = [t.h, t.w, t.planes].map(|v| v as i32);
                    launch!(self, name, grouped_grid(&t), || conv_label(name, p); &mut dx, dy, w,
                        &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                        &s[11], &s[12], &s[13], &s[14], &th, &tw, &planes);
                }
                None => {
                    let name = "grouped_conv_bwd_input";
                    launch!(self, name, flat(p.input_len()), || conv_label(name, p); &mut dx, dy, w,
                        &s[15], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10],
                        &s[11], &s[12], &s[13], &s[14]);
                }
            }
            return Ok(dx);
        }
        let mut dx = self.out(p.input_len())?;
        let s = Self::conv_shape(p);
        let name = match self.conv {
            ConvKernel::V1 => "conv2d_bwd_input_v1",
            ConvKernel::V2 => "conv2d_bwd_input_v2",
            ConvKernel::V3 => "conv2d_bwd_input_v3",
            ConvKernel::V4 => "conv2d_bwd_input_v4",
        };
        let cfg = match self.conv {
            ConvKernel::V1 => flat(p.input_len()),
            _ => self.tile_grid(p.c_in, p.n * p.h_in * p.w_in),
        };
        launch!(self, name, cfg, || conv_label(name, p); &mut dx, dy, w,
            &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7], &s[8], &s[9], &s[10], &s[11], &s[12]);
        Ok(dx)
    }

    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        shift: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.len())?;
        let (c, hw, len) = (p.c as i32, p.hw as i64, p.len() as i64);
        launch!(self, "channel_affine_fwd", flat(p.len()); &mut y, x, scale, shift, &c, &hw, &len);
        Ok(y)
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.len())?;
        let (c, hw, len) = (p.c as i32, p.hw as i64, p.len() as i64);
        launch!(self, "channel_affine_bwd_input", flat(p.len()); &mut dx, dy, scale, &c, &hw, &len);
        Ok(dx)
    }

    fn relu(&self, x: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.out(len)?;
        let n = len as i64;
        launch!(self, "relu_fwd", flat(len); &mut y, x, &n);
        Ok(y)
    }

    fn relu_grad_input(
        &self,
        y: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        len: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(len)?;
        let n = len as i64;
        launch!(self, "relu_bwd_input", flat(len); &mut dx, y, dy, &n);
        Ok(dx)
    }

    fn max_pool2d(
        &self,
        p: &MaxPool2dParams,
        x: &CudaSlice<f32>,
    ) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
        let mut y = self.out(p.output_len())?;
        // SAFETY: every element is written by the kernel (checked by the selftest).
        let mut idx = unsafe { self.stream.alloc::<u32>(p.output_len()) }
            .map_err(|e| backend_error(format!("cannot allocate argmax: {e}")))?;
        let d = [
            p.h_in,
            p.w_in,
            p.h_out(),
            p.w_out(),
            p.k_h,
            p.k_w,
            p.stride_h,
            p.stride_w,
            p.pad_h,
            p.pad_w,
        ]
        .map(|v| v as i32);
        let total = p.output_len() as i64;
        launch!(self, "max_pool2d_fwd", flat(p.output_len()); &mut y, &mut idx, x,
            &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &total);
        Ok((y, idx))
    }

    fn max_pool2d_grad_input(
        &self,
        p: &MaxPool2dParams,
        argmax: &CudaSlice<u32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.input_len())?;
        let d = [
            p.h_in,
            p.w_in,
            p.h_out(),
            p.w_out(),
            p.k_h,
            p.k_w,
            p.stride_h,
            p.stride_w,
            p.pad_h,
            p.pad_w,
        ]
        .map(|v| v as i32);
        let total = p.input_len() as i64;
        launch!(self, "max_pool2d_bwd_input", flat(p.input_len()); &mut dx, argmax, dy,
            &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &total);
        Ok(dx)
    }

    fn adaptive_avg_pool2d(
        &self,
        p: &AdaptivePool2dParams,
        x: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.output_len())?;
        let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
        let total = p.output_len() as i64;
        launch!(self, "adaptive_avg_pool2d_fwd", flat(p.output_len()); &mut y, x,
            &d[0], &d[1], &d[2], &d[3], &total);
        Ok(y)
    }

    fn adaptive_avg_pool2d_grad_input(
        &self,
        p: &AdaptivePool2dParams,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.input_len())?;
        let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
        let total = p.input_len() as i64;
        launch!(self, "adaptive_avg_pool2d_bwd_input", flat(p.input_len()); &mut dx, dy,
            &d[0], &d[1], &d[2], &d[3], &total);
        Ok(dx)
    }

    fn add(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, len: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.out(len)?;
        let n = len as i64;
        launch!(self, "add", flat(len); &mut y, a, b, &n);
        Ok(y)
    }

    fn linear(
        &self,
        p: &LinearParams,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.n * p.out_f)?;
        let has_bias = bias.is_some() as i32;
        let b = bias.unwrap_or(w);
        let (n, i, o) = (p.n as i32, p.in_f as i32, p.out_f as i32);
        let warps = p.out_f * p.n.div_ceil(8);
        launch!(self, "linear_fwd", exact(warps * 32); &mut y, x, w, b, &has_bias, &n, &i, &o);
        Ok(y)
    }

    fn linear_grad_input(
        &self,
        p: &LinearParams,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.n * p.in_f)?;
        let (n, i, o) = (p.n as i32, p.in_f as i32, p.out_f as i32);
        let threads = p.in_f * p.n.div_ceil(8);
        launch!(self, "linear_bwd_input", exact(threads); &mut dx, dy, w, &n, &i, &o);
        Ok(dx)
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
        let mut y = self.out(p.len)?;
        let (id, n) = (p.act.index() as u32, p.len as i64);
        launch!(self, "activation_fwd", flat(p.len), || format!("activation_fwd {}", p.act.name());
            &mut y, x, &id, &p.alpha, &p.beta, &n);
        Ok(y)
    }

    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.len)?;
        let (id, n) = (p.act.index() as u32, p.len as i64);
        launch!(self, "activation_bwd_input", flat(p.len),
            || format!("activation_bwd_input {}", p.act.name());
            &mut dx, saved, dy, &id, &p.alpha, &p.beta, &n);
        Ok(dx)
    }

    fn binary(
        &self,
        p: &BinaryParams,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.len())?;
        let (out, sa, sb) = (
            dims4(p.out),
            dims4(broadcast_strides(p.a, p.out)),
            dims4(broadcast_strides(p.b, p.out)),
        );
        let (op, n) = ((p.op == BinaryOp::Mul) as i32, p.len() as i64);
        launch!(self, "binary_fwd", flat(p.len()); &mut y, a, b, &out, &sa, &sb, &op, &n);
        Ok(y)
    }

    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let shape = p.operand(operand.min(1));
        let (other_shape, other) = if operand == 0 { (p.b, b) } else { (p.a, a) };
        let len: usize = shape.iter().product();
        let reduced: usize = (0..4)
            .filter(|&k| shape[k] == 1 && p.out[k] != 1)
            .map(|k| p.out[k])
            .product();
        let mut dx = self.out(len)?;
        let mul = (p.op == BinaryOp::Mul) as i32;
        // An add reads no other operand: dy stands in for it.
        let other = if mul == 1 { other } else { dy };
        let (out, sh, so) = (
            dims4(p.out),
            dims4(shape),
            dims4(broadcast_strides(other_shape, p.out)),
        );
        let (reduced, n) = (reduced as i64, len as i64);
        launch!(self, "binary_bwd_input", flat(len); &mut dx, dy, other, &out, &sh, &so, &mul, &reduced, &n);
        Ok(dx)
    }

    fn squeeze_excitation(
        &self,
        p: &SqueezeExciteParams,
        x: &CudaSlice<f32>,
        (w1, b1): (&CudaSlice<f32>, &CudaSlice<f32>),
        (w2, b2): (&CudaSlice<f32>, &CudaSlice<f32>),
    ) -> Result<CudaSlice<f32>> {
        let mut gates = self.out(p.n * p.c)?;
        let mut hidden = self.out(p.n * p.squeeze)?;
        let [c, hw, squeeze] = [p.c, p.h * p.w, p.squeeze].map(|v| v as i32);
        let lanes = p.lanes_per_channel(THREADS as usize) as i32;
        let (a, g) = (&p.act, &p.gate);
        let ids = [a.act.index() as u32, g.act.index() as u32];
        let cfg = LaunchConfig {
            grid_dim: (p.n as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "squeeze_excite_gates", cfg; &mut gates, &mut hidden, x, w1, b1, w2, b2,
            &c, &hw, &squeeze, &lanes, &ids[0], &a.alpha, &a.beta, &ids[1], &g.alpha, &g.beta);
        self.binary(&p.scale(), &gates, x)
    }

    fn avg_pool2d(&self, a: &AvgPool2dParams, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        let p = &a.window;
        let mut y = self.out(p.output_len())?;
        let d = Self::avg_pool_shape(a);
        let total = p.output_len() as i64;
        launch!(self, "avg_pool2d_fwd", flat(p.output_len()); &mut y, x,
            &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &d[10], &total);
        Ok(y)
    }

    fn avg_pool2d_grad_input(
        &self,
        a: &AvgPool2dParams,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let p = &a.window;
        let mut dx = self.out(p.input_len())?;
        let d = Self::avg_pool_shape(a);
        let total = p.input_len() as i64;
        launch!(self, "avg_pool2d_bwd_input", flat(p.input_len()); &mut dx, dy,
            &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9], &d[10], &total);
        Ok(dx)
    }

    fn adaptive_max_pool2d(
        &self,
        p: &AdaptivePool2dParams,
        x: &CudaSlice<f32>,
    ) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
        let mut y = self.out(p.output_len())?;
        // SAFETY: every element is written by the kernel (checked by the selftest).
        let mut idx = unsafe { self.stream.alloc::<u32>(p.output_len()) }
            .map_err(|e| backend_error(format!("cannot allocate argmax: {e}")))?;
        let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
        let total = p.output_len() as i64;
        launch!(self, "adaptive_max_pool2d_fwd", flat(p.output_len()); &mut y, &mut idx, x,
            &d[0], &d[1], &d[2], &d[3], &total);
        Ok((y, idx))
    }

    fn adaptive_max_pool2d_grad_input(
        &self,
        p: &AdaptivePool2dParams,
        argmax: &CudaSlice<u32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.input_len())?;
        let d = [p.h_in, p.w_in, p.h_out, p.w_out].map(|v| v as i32);
        let total = p.input_len() as i64;
        launch!(self, "adaptive_max_pool2d_bwd_input", flat(p.input_len()); &mut dx, argmax, dy,
            &d[0], &d[1], &d[2], &d[3], &total);
        Ok(dx)
    }

    fn strided_copy(
        &self,
        p: &StridedCopyParams,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if p.is_empty() {
            return Ok(());
        }
        let last = |offset: usize, strides: &[usize; COPY_RANK]| {
            offset
                + (0..COPY_RANK)
                    .map(|k| (p.shape[k] - 1) * strides[k])
                    .sum::<usize>()
        };
        if last(p.src_offset, &p.src_strides) >= src.len()
            || last(p.dst_offset, &p.dst_strides) >= dst.len()
        {
            return Err(backend_error(format!(
                "strided copy of shape {:?} past its source ({} elements) or destination ({})",
                p.shape,
                src.len(),
                dst.len()
            )));
        }
        let (shape, ss, ds) = (dims6(p.shape), dims6(p.src_strides), dims6(p.dst_strides));
        let (so, d_o, n) = (p.src_offset as i64, p.dst_offset as i64, p.len() as i64);
        launch!(self, "strided_copy", flat(p.len()); &mut *dst, src, &shape, &ss, &ds, &so, &d_o, &n);
        Ok(())
    }

    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.out(p.len())?;
        let (outer, dim, inner) = (p.outer as i32, p.dim as i32, p.inner as i64);
        launch!(self, "layer_norm_fwd", flat(p.outer * p.inner); &mut y, x, weight, bias,
            &outer, &dim, &inner, &p.eps);
        Ok(y)
    }

    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let mut dx = self.out(p.len())?;
        let (outer, dim, inner) = (p.outer as i32, p.dim as i32, p.inner as i64);
        launch!(self, "layer_norm_bwd_input", flat(p.outer * p.inner); &mut dx, x, weight, dy,
            &outer, &dim, &inner, &p.eps);
        Ok(dx)
    }

    fn class_seed(&self, p: &ClassSeedParams, logits: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        let mut seed = self.out(p.n * p.k)?;
        let (by_rank, value) = match p.pick {
            ClassPick::Fixed(c) => (0i32, c as i32),
            ClassPick::Rank(r) => (1, r as i32),
        };
        let (n, k) = (p.n as i32, p.k as i32);
        launch!(self, "class_seed", flat(p.n * p.k); &mut seed, logits, &n, &k, &by_rank, &value);
        Ok(seed)
    }

    fn grad_cam(
        &self,
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
        let mut cam = self.out(p.n * p.out_h * p.out_w)?;
        if p.n * p.out_h * p.out_w == 0 {
            return Ok(cam);
        }
        let alloc_err = |e| backend_error(format!("cannot allocate Grad-CAM scratch: {e}"));
        // SAFETY: both scratch buffers are written by the kernel before it reads them.
        let mut weights = unsafe { self.stream.alloc::<f64>(p.n * p.c) }.map_err(alloc_err)?;
        let mut small = unsafe { self.stream.alloc::<f32>(p.n * p.h * p.w) }.map_err(alloc_err)?;
        let d = [p.c, p.h, p.w, p.out_h, p.out_w].map(|v| v as i32);
        let (combine, renormalize) = (p.combine.code() as i32, i32::from(p.renormalize));
        let cfg = LaunchConfig {
            grid_dim: (p.n as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "grad_cam", cfg; &mut cam, &mut weights, &mut small, activation, gradient,
            &d[0], &d[1], &d[2], &d[3], &d[4], &combine, &renormalize);
        Ok(cam)
    }

    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &CudaSlice<f32>,
        activation: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        p.check(x.len(), activation.len()).map_err(backend_error)?;
        let mut out = self.out(p.output_len())?;
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
        launch!(self, "score_cam_masks", cfg; &mut out, x, activation, &d[0], &d[1], &d[2],
            &d[3], &d[4], &d[5], &d[6], &d[7], &scale[0], &scale[1]);
        Ok(out)
    }
}
