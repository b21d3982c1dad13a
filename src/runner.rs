//! Backend selection at run time: an engine on whichever backend the user asked for, with one
//! interface. Each backend adds a variant here and an arm in `AnyEngine::new`.

use crate::backend::cpu::CpuBackend;
#[cfg(feature = "cuda")]
use crate::backend::cuda::{self, CudaBackend};
#[cfg(feature = "wgpu")]
use crate::backend::wgpu::{AdapterChoice, WgpuBackend};
use crate::backend::Backend;
use crate::backend::ConvKernel;
use crate::engine::{Attribution, Engine, Explanation, Profile, Request};
use crate::error::Error;
use crate::error::Result;
use crate::model::Model;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The best backend there is: CUDA when a CUDA device, its driver and NVRTC are all
    /// present; else a hardware GPU through wgpu; else the CPU backend.
    #[default]
    Auto,
    /// The pure-Rust CPU backend.
    Cpu,
    /// WGSL kernels on wgpu: the best adapter there is, a software one (lavapipe) included.
    Wgpu,
    /// NVIDIA GPUs: CUDA kernels compiled at run time with NVRTC.
    Cuda,
}

impl crate::named::Named for BackendKind {
    const ALL: &'static [Self] = &[
        BackendKind::Auto,
        BackendKind::Cpu,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];
    const WHAT: &'static str = "backend";

    fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    fn about(self) -> &'static str {
        match self {
            BackendKind::Auto => "CUDA if present, else a hardware GPU through wgpu, else the CPU",
            BackendKind::Cpu => "the pure-Rust CPU backend",
            BackendKind::Wgpu => "WGSL kernels on wgpu (Vulkan, Metal, DX12; lavapipe included)",
            BackendKind::Cuda => "NVIDIA GPUs: CUDA kernels compiled at run time with NVRTC",
        }
    }
}

impl BackendKind {
    /// The backend `Auto` stands for on this machine (what `selftest` checks and `devices`
    /// reports): CUDA when a device, its driver and NVRTC are present; else wgpu when it finds
    /// a hardware GPU adapter; else the CPU. Other kinds stand for themselves.
    pub fn resolve(self) -> BackendKind {
        match self {
            BackendKind::Auto if cuda_available() => BackendKind::Cuda,
            BackendKind::Auto if hardware_gpu() => BackendKind::Wgpu,
            BackendKind::Auto => BackendKind::Cpu,
            k => k,
        }
    }
}

/// Whether a CUDA device, its driver and NVRTC are there; probed once per process, like
/// [`hardware_gpu`].
#[cfg(feature = "cuda")]
fn cuda_available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(cuda::is_available)
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> bool {
    false
}

/// Whether wgpu finds a hardware GPU adapter. Probed once per process: creating an instance and
/// enumerating adapters takes seconds with some drivers (2.3 s with lavapipe on a 2-core
/// machine), and a process that builds many explainers (the Python drop-in builds one per
/// method and layer set; a server one per model) would pay it for each.
#[cfg(feature = "wgpu")]
fn hardware_gpu() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| crate::backend::wgpu::adapters().iter().any(|(_, hw)| *hw))
}

#[cfg(not(feature = "wgpu"))]
fn hardware_gpu() -> bool {
    false
}

/// The error of a backend this build left out.
#[allow(dead_code)] // only a build without one of the GPU features uses it
fn not_built(backend: &str) -> Error {
    Error::Backend {
        backend: backend.into(),
        reason: format!(
            "this build of gradcam has no {backend} backend (it was built without the cargo \
             feature `{backend}`)"
        ),
    }
}

/// Backend-specific settings; each backend reads the fields that concern it.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// GPU backends: convolution kernel variant (default: `GRADCAM_CONV_KERNEL`, else the
    /// backend's fastest for the device).
    pub conv_kernel: Option<ConvKernel>,
}

/// Engines are boxed: they are created once and differ widely in size between backends.
pub enum AnyEngine {
    Cpu(Box<Engine<CpuBackend>>),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<Engine<WgpuBackend>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<Engine<CudaBackend>>),
}

/// Time per kernel of one run, and how it was measured.
pub struct KernelTiming {
    pub profile: Profile,
    pub source: String,
}

/// Runs `$body` with `$e` bound to the engine, whatever its backend.
macro_rules! dispatch {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            AnyEngine::Cpu($e) => $body,
            #[cfg(feature = "wgpu")]
            AnyEngine::Wgpu($e) => $body,
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda($e) => $body,
        }
    };
}

impl AnyEngine {
    pub fn new(kind: BackendKind, model: Model) -> Result<Self> {
        Self::with_options(kind, model, &BackendOptions::default())
    }

    pub fn with_options(kind: BackendKind, model: Model, opts: &BackendOptions) -> Result<Self> {
        let conv = match opts.conv_kernel {
            Some(k) => Some(k),
            None => ConvKernel::from_env()?,
        };
        match kind {
            BackendKind::Cpu => Self::cpu(model),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Self::wgpu(WgpuBackend::new(AdapterChoice::Any)?, model, conv),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Self::cuda(CudaBackend::new(0, conv)?, model),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu => Err(not_built("wgpu")),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(not_built("cuda")),
            BackendKind::Auto => {
                #[cfg(feature = "cuda")]
                if cuda_available() {
                    if let Ok(be) = CudaBackend::new(0, conv) {
                        return Self::cuda(be, model);
                    }
                }
                #[cfg(feature = "wgpu")]
                if hardware_gpu() {
                    if let Ok(be) = WgpuBackend::new(AdapterChoice::RealGpu) {
                        return Self::wgpu(be, model, conv);
                    }
                }
                // No hardware GPU: a software rasterizer is slower than the CPU backend.
                let _ = conv;
                Self::cpu(model)
            }
        }
    }

    fn cpu(model: Model) -> Result<Self> {
        Ok(AnyEngine::Cpu(Box::new(Engine::new(
            CpuBackend::default(),
            model,
        )?)))
    }

    #[cfg(feature = "wgpu")]
    fn wgpu(mut be: WgpuBackend, model: Model, conv: Option<ConvKernel>) -> Result<Self> {
        if let Some(k) = conv {
            be.set_conv(k)?;
        }
        Ok(AnyEngine::Wgpu(Box::new(Engine::new(be, model)?)))
    }

    #[cfg(feature = "cuda")]
    fn cuda(be: CudaBackend, model: Model) -> Result<Self> {
        Ok(AnyEngine::Cuda(Box::new(Engine::new(be, model)?)))
    }

    /// On the CPU backend, fails when the activations for `shape` exceed the memory available.
    /// (GPU backends report their own allocation failures.)
    pub fn check_activations(&self, shape: &[usize]) -> Result<()> {
        if !matches!(self, AnyEngine::Cpu(_)) {
            return Ok(());
        }
        let bytes = activation_bytes(self.model(), shape)?;
        crate::limits::check_memory(&format!("a batch of input shape {shape:?}"), bytes)
            .map_err(|e| Error::Usage(format!("{e}; use a smaller `batch_size` or input size")))
    }

    pub fn model(&self) -> &Model {
        dispatch!(self, e => &e.model)
    }

    pub fn backend_name(&self) -> String {
        dispatch!(self, e => e.backend.name())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        dispatch!(self, e => e.forward(x))
    }

    pub fn explain(
        &self,
        x: &Tensor,
        layer: Option<&str>,
        class: Option<usize>,
    ) -> Result<Explanation> {
        dispatch!(self, e => e.explain(x, layer, class))
    }

    /// Checks a request's methods, options and classes without running it.
    pub fn check_request(&self, req: &Request) -> Result<()> {
        dispatch!(self, e => e.check_request(req))
    }

    pub fn attribute(&self, x: &Tensor, req: &Request) -> Result<Attribution> {
        dispatch!(self, e => e.attribute(x, req))
    }

    pub fn enable_profile(&mut self) {
        dispatch!(self, e => e.enable_profile())
    }

    pub fn take_profile(&self) -> Profile {
        dispatch!(self, e => e.take_profile())
    }

    /// Starts timing every kernel: on the CPU the engine's host timing per op; on wgpu the
    /// backend's per-dispatch timing (GPU timestamps where the adapter has them); on CUDA
    /// events around each launch. Host time around an asynchronous launch only measures its
    /// recording.
    pub fn start_kernel_timing(&mut self) {
        match self {
            AnyEngine::Cpu(e) => e.enable_profile(),
            #[cfg(feature = "wgpu")]
            AnyEngine::Wgpu(e) => e.backend.start_timing(),
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(e) => e.backend.start_timing(),
        }
    }

    pub fn take_kernel_timing(&self) -> Result<KernelTiming> {
        Ok(match self {
            AnyEngine::Cpu(e) => KernelTiming {
                profile: e.take_profile(),
                source: "host time per op".into(),
            },
            #[cfg(feature = "wgpu")]
            AnyEngine::Wgpu(e) => {
                let (profile, source) = e.backend.take_timing()?;
                KernelTiming { profile, source }
            }
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda(e) => {
                let (profile, source) = e.backend.take_timing()?;
                KernelTiming { profile, source }
            }
        })
    }
}

/// Bytes the CPU engine may hold for an input of `shape`: every value of the forward pass (an
/// upper bound: values no backward pass reads are freed early), plus the gradient buffers of a
/// backward pass (two of the largest value).
pub fn activation_bytes(model: &Model, shape: &[usize]) -> Result<u64> {
    let plan = model.graph.plan(shape)?;
    let sizes: Vec<f64> = plan
        .shapes
        .iter()
        .map(|s| s.iter().map(|&d| d as f64).product::<f64>())
        .collect();
    let largest = sizes.iter().copied().fold(0.0, f64::max);
    let total = sizes.iter().sum::<f64>() + 2.0 * largest;
    Ok((total * 4.0).min(u64::MAX as f64) as u64)
}
