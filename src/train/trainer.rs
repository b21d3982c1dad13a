//! A model being trained on a backend: its graph, its parameters and SGD momentum buffers as
//! the backend's buffers, and the full state dict it was built from (so that frozen BatchNorm
//! tensors are saved back unchanged).

use super::executor;
use super::init::StateDict;
use crate::backend::cpu::training;
use crate::backend::cpu::CpuBackend;
use crate::backend::TrainBackend;
use crate::error::{Error, Result};
use crate::model::weights::WeightStore;
use crate::model::Model;
use crate::ops::SgdParams;
use crate::tensor::Tensor;
use rand::{rngs::StdRng, SeedableRng};

/// torchvision's VGG classifier dropout probability.
pub const VGG_DROPOUT: f64 = 0.5;

pub struct Trainer<B: TrainBackend = CpuBackend> {
    pub backend: B,
    pub model: Model,
    state: StateDict,
    /// Every param of the graph (trainable or frozen), on the backend.
    params: Vec<B::Buf>,
    /// Param ids of conv2d and linear weights and biases: what SGD updates.
    trainable: Vec<usize>,
    /// SGD momentum buffers by param id (None before the first step, or without momentum).
    velocity: Vec<Option<B::Buf>>,
    pub sgd: SgdParams,
    /// Probability of the graph's dropout layers in training mode.
    pub dropout_p: f64,
    rng: StdRng,
}

/// Loss and accuracy of one batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchStats {
    pub loss: f64,
    pub correct: usize,
}

impl Trainer<CpuBackend> {
    /// A trainer on the CPU backend; see [`Trainer::with_backend`].
    pub fn new(state: StateDict, arch: Option<&str>, sgd: SgdParams, seed: u64) -> Result<Self> {
        Self::with_backend(CpuBackend::default(), state, arch, sgd, seed)
    }
}

impl<B: TrainBackend> Trainer<B> {
    /// `arch` as for `Model::from_store` (None: detected). `seed` drives dropout masks. The
    /// params are uploaded to `backend` once and stay there.
    pub fn with_backend(
        backend: B,
        state: StateDict,
        arch: Option<&str>,
        sgd: SgdParams,
        seed: u64,
    ) -> Result<Self> {
        let store = WeightStore::from_tensors("(training state)", state.clone());
        let model = Model::from_store(&store, arch)?;
        let params = model
            .graph
            .params
            .iter()
            .map(|t| backend.upload_weight(&t.data))
            .collect::<Result<Vec<_>>>()?;
        let mut trainable = vec![];
        for n in &model.graph.nodes {
            trainable.extend(n.op.trainable());
        }
        let velocity = (0..params.len()).map(|_| None).collect();
        Ok(Self {
            backend,
            model,
            state,
            params,
            trainable,
            velocity,
            sgd,
            dropout_p: VGG_DROPOUT,
            rng: StdRng::seed_from_u64(seed ^ 0x000D_2090_u64),
        })
    }

    /// Loss (mean cross-entropy), correct predictions, and the gradient of every trainable
    /// param (training mode: dropout active, BatchNorm frozen). The loss and its gradient are
    /// computed on the host from the downloaded logits [N, classes].
    pub fn gradients(
        &mut self,
        x: &Tensor,
        labels: &[usize],
    ) -> Result<(BatchStats, Vec<Option<B::Buf>>)> {
        let (be, g) = (&self.backend, &self.model.graph);
        let dropout = Some((self.dropout_p, &mut self.rng));
        let cache = executor::forward(be, g, &self.params, x, dropout)?;
        let logits = be.download(cache.output(g))?;
        let mut dlogits = vec![0.0f32; logits.len()];
        let classes = self.model.num_classes;
        let (loss, correct) =
            training::softmax_cross_entropy(&logits, labels, classes, &mut dlogits);
        let dlogits = be.upload(&dlogits)?;
        let grads = executor::backward(be, g, &self.params, &cache, dlogits)?;
        Ok((BatchStats { loss, correct }, grads))
    }

    /// One SGD step on a batch; returns the batch's loss and accuracy before the step.
    pub fn step(&mut self, x: &Tensor, labels: &[usize]) -> Result<BatchStats> {
        let (stats, mut grads) = self.gradients(x, labels)?;
        for &p in &self.trainable {
            let grad = grads[p]
                .take()
                .expect("every trainable param gets a gradient");
            let len = self.model.graph.params[p].data.len();
            self.backend.sgd_step(
                &self.sgd,
                &mut self.params[p],
                &grad,
                &mut self.velocity[p],
                len,
            )?;
        }
        Ok(stats)
    }

    /// Eval-mode logits [N, classes].
    pub fn predict(&self, x: &Tensor) -> Result<Vec<f32>> {
        let g = &self.model.graph;
        let cache = executor::forward(&self.backend, g, &self.params, x, None)?;
        self.backend.download(cache.output(g))
    }

    /// The current weights as a PyTorch state dict (trained tensors replaced, the rest as
    /// loaded).
    pub fn state_dict(&self) -> Result<StateDict> {
        let mut state = self.state.clone();
        for &p in &self.trainable {
            let name = &self.model.graph.param_names[p];
            let shape = self.model.graph.params[p].shape.clone();
            let data = self.backend.download(&self.params[p])?;
            state.insert(name.clone(), Tensor::new(shape, data));
        }
        Ok(state)
    }

    /// A param's current values by its PyTorch name (for tests).
    pub fn param(&self, name: &str) -> Result<Vec<f32>> {
        let g = &self.model.graph;
        let i = g
            .param_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Usage(format!("the model has no param '{name}'")))?;
        self.backend.download(&self.params[i])
    }
}
