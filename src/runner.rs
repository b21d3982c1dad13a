//! Backend selection at run time: an engine on whichever backend the user asked for, with one
//! interface. Each backend adds a variant here and an arm in `AnyEngine::new`.

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{self, ConvKernel, CudaBackend};
use crate::backend::Backend;
use crate::engine::{Engine, Explanation, Profile};
use crate::error::Result;
use crate::model::Model;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The best available backend: cuda when a CUDA device, its driver and NVRTC are all
    /// present, else cpu.
    Auto,
    /// The pure-Rust CPU backend.
    Cpu,
    /// NVIDIA GPUs: CUDA kernels compiled at run time with NVRTC.
    Cuda,
}

/// Backend-specific settings; each backend reads the fields that concern it.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// CUDA: convolution kernel variant (default: v2 on sm_80+, else v1).
    pub conv_kernel: Option<ConvKernel>,
}

pub enum AnyEngine {
    Cpu(Engine<CpuBackend>),
    Cuda(Engine<CudaBackend>),
}

/// Runs `$body` with `$e` bound to the engine, whatever its backend.
macro_rules! dispatch {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            AnyEngine::Cpu($e) => $body,
            AnyEngine::Cuda($e) => $body,
        }
    };
}

impl AnyEngine {
    pub fn new(kind: BackendKind, model: Model) -> Result<Self> {
        Self::with_options(kind, model, &BackendOptions::default())
    }

    pub fn with_options(kind: BackendKind, model: Model, opts: &BackendOptions) -> Result<Self> {
        match kind {
            BackendKind::Cuda => Ok(AnyEngine::Cuda(Engine::new(
                CudaBackend::new(0, opts.conv_kernel)?,
                model,
            )?)),
            BackendKind::Auto if cuda::is_available() => {
                match CudaBackend::new(0, opts.conv_kernel) {
                    Ok(b) => Ok(AnyEngine::Cuda(Engine::new(b, model)?)),
                    Err(_) => Ok(AnyEngine::Cpu(Engine::new(CpuBackend::default(), model)?)),
                }
            }
            BackendKind::Auto | BackendKind::Cpu => {
                Ok(AnyEngine::Cpu(Engine::new(CpuBackend::default(), model)?))
            }
        }
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

    pub fn enable_profile(&mut self) {
        dispatch!(self, e => e.enable_profile())
    }

    pub fn take_profile(&self) -> Profile {
        dispatch!(self, e => e.take_profile())
    }
}
