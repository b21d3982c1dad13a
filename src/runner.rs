//! Backend selection at run time: an engine on whichever backend the user asked for, with one
//! interface. Each backend adds a variant here and an arm in `AnyEngine::new`.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::engine::{Attribution, Classes, Engine, Explanation, Outputs, Profile};
use crate::error::Result;
use crate::model::Model;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The best available backend (today: cpu).
    Auto,
    /// The pure-Rust CPU backend.
    Cpu,
}

pub enum AnyEngine {
    Cpu(Engine<CpuBackend>),
}

/// Runs `$body` with `$e` bound to the engine, whatever its backend.
macro_rules! dispatch {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            AnyEngine::Cpu($e) => $body,
        }
    };
}

impl AnyEngine {
    pub fn new(kind: BackendKind, model: Model) -> Result<Self> {
        match kind {
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

    pub fn attribute(
        &self,
        x: &Tensor,
        layer: Option<&str>,
        classes: Classes,
        outputs: Outputs,
    ) -> Result<Attribution> {
        dispatch!(self, e => e.attribute(x, layer, classes, outputs))
    }

    pub fn enable_profile(&mut self) {
        dispatch!(self, e => e.enable_profile())
    }

    pub fn take_profile(&self) -> Profile {
        dispatch!(self, e => e.take_profile())
    }
}
