//! Backend selection at run time: an engine on whichever backend the user asked for, with one
//! interface. Each backend adds a variant here and an arm in `AnyEngine::new`.

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, CudaBackend};
use crate::backend::wgpu::{AdapterChoice, WgpuBackend};
use crate::backend::Backend;
use crate::backend::ConvKernel;
use crate::engine::{Attribution, Engine, Explanation, Profile, Request};
use crate::error::Result;
use crate::model::Model;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The best backend there is: CUDA when a CUDA device, its driver and NVRTC are all
    /// present; else a hardware GPU through wgpu; else the CPU backend.
    Auto,
    /// The pure-Rust CPU backend.
    Cpu,
    /// WGSL kernels on wgpu: the best adapter there is, a software one (lavapipe) included.
    Wgpu,
    /// NVIDIA GPUs: CUDA kernels compiled at run time with NVRTC.
    Cuda,
}

impl BackendKind {
    /// The backend `Auto` stands for on this machine (what `selftest` checks and `devices`
    /// reports): CUDA when a device, its driver and NVRTC are present; else wgpu when it finds
    /// a hardware GPU adapter; else the CPU. Other kinds stand for themselves.
    pub fn resolve(self) -> BackendKind {
        match self {
            BackendKind::Auto if cuda::is_available() => BackendKind::Cuda,
            BackendKind::Auto if crate::backend::wgpu::adapters().iter().any(|(_, hw)| *hw) => {
                BackendKind::Wgpu
            }
            BackendKind::Auto => BackendKind::Cpu,
            k => k,
        }
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
    Wgpu(Box<Engine<WgpuBackend>>),
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
            AnyEngine::Wgpu($e) => $body,
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
            BackendKind::Wgpu => Self::wgpu(WgpuBackend::new(AdapterChoice::Any)?, model, conv),
            BackendKind::Cuda => Self::cuda(CudaBackend::new(0, conv)?, model),
            BackendKind::Auto => {
                if cuda::is_available() {
                    if let Ok(be) = CudaBackend::new(0, conv) {
                        return Self::cuda(be, model);
                    }
                }
                match WgpuBackend::new(AdapterChoice::RealGpu) {
                    Ok(be) => Self::wgpu(be, model, conv),
                    // No hardware GPU: a software rasterizer is slower than the CPU backend.
                    Err(_) => Self::cpu(model),
                }
            }
        }
    }

    fn cpu(model: Model) -> Result<Self> {
        Ok(AnyEngine::Cpu(Box::new(Engine::new(
            CpuBackend::default(),
            model,
        )?)))
    }

    fn wgpu(mut be: WgpuBackend, model: Model, conv: Option<ConvKernel>) -> Result<Self> {
        if let Some(k) = conv {
            be.set_conv(k)?;
        }
        Ok(AnyEngine::Wgpu(Box::new(Engine::new(be, model)?)))
    }

    fn cuda(be: CudaBackend, model: Model) -> Result<Self> {
        Ok(AnyEngine::Cuda(Box::new(Engine::new(be, model)?)))
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
            AnyEngine::Wgpu(e) => e.backend.start_timing(),
            AnyEngine::Cuda(e) => e.backend.start_timing(),
        }
    }

    pub fn take_kernel_timing(&self) -> Result<KernelTiming> {
        Ok(match self {
            AnyEngine::Cpu(e) => KernelTiming {
                profile: e.take_profile(),
                source: "host time per op".into(),
            },
            AnyEngine::Wgpu(e) => {
                let (profile, source) = e.backend.take_timing()?;
                KernelTiming { profile, source }
            }
            AnyEngine::Cuda(e) => {
                let (profile, source) = e.backend.take_timing()?;
                KernelTiming { profile, source }
            }
        })
    }
}
