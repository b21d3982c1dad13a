//! A model being trained: its graph, its parameters as plain vectors, SGD momentum buffers,
//! and the full state dict it was built from (so that frozen BatchNorm tensors are saved back
//! unchanged).

use super::executor;
use super::init::StateDict;
use crate::backend::cpu::training::{self, SgdParams};
use crate::error::Result;
use crate::model::graph::Op;
use crate::model::weights::WeightStore;
use crate::model::Model;
use crate::tensor::Tensor;
use rand::{rngs::StdRng, SeedableRng};

/// torchvision's VGG classifier dropout probability.
pub const VGG_DROPOUT: f64 = 0.5;

pub struct Trainer {
    pub model: Model,
    state: StateDict,
    params: Vec<Vec<f32>>,
    /// Param ids of conv2d and linear weights and biases: what SGD updates.
    trainable: Vec<usize>,
    velocity: Vec<Vec<f32>>,
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

impl Trainer {
    /// `arch` as for `Model::from_store` (None: detected). `seed` drives dropout masks.
    pub fn new(state: StateDict, arch: Option<&str>, sgd: SgdParams, seed: u64) -> Result<Self> {
        let store = WeightStore::from_tensors("(training state)", state.clone());
        let model = Model::from_store(&store, arch)?;
        let params: Vec<Vec<f32>> = model.graph.params.iter().map(|t| t.data.clone()).collect();
        let mut trainable = vec![];
        for n in &model.graph.nodes {
            if let Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias } = &n.op {
                trainable.push(*weight);
                trainable.extend(bias);
            }
        }
        let velocity = vec![Vec::new(); params.len()];
        Ok(Self {
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
    /// param (training mode: dropout active, BatchNorm frozen).
    pub fn gradients(
        &mut self,
        x: &Tensor,
        labels: &[usize],
    ) -> Result<(BatchStats, Vec<Option<Vec<f32>>>)> {
        let g = &self.model.graph;
        let cache = executor::forward(g, &self.params, x, Some((self.dropout_p, &mut self.rng)))?;
        let logits = cache.output(g);
        let mut dlogits = vec![0.0f32; logits.len()];
        let classes = self.model.num_classes;
        let (loss, correct) =
            training::softmax_cross_entropy(logits, labels, classes, &mut dlogits);
        let grads = executor::backward(g, &self.params, &cache, dlogits, self.dropout_p);
        Ok((BatchStats { loss, correct }, grads))
    }

    /// One SGD step on a batch; returns the batch's loss and accuracy before the step.
    pub fn step(&mut self, x: &Tensor, labels: &[usize]) -> Result<BatchStats> {
        let (stats, mut grads) = self.gradients(x, labels)?;
        for &p in &self.trainable {
            let grad = grads[p]
                .take()
                .expect("every trainable param gets a gradient");
            training::sgd_step(&self.sgd, &mut self.params[p], &grad, &mut self.velocity[p]);
        }
        Ok(stats)
    }

    /// Eval-mode logits [N, classes].
    pub fn predict(&self, x: &Tensor) -> Result<Vec<f32>> {
        let g = &self.model.graph;
        let cache = executor::forward(g, &self.params, x, None)?;
        Ok(cache.output(g).to_vec())
    }

    /// The current weights as a PyTorch state dict (trained tensors replaced, the rest as
    /// loaded).
    pub fn state_dict(&self) -> StateDict {
        let mut state = self.state.clone();
        for &p in &self.trainable {
            let name = &self.model.graph.param_names[p];
            let shape = self.model.graph.params[p].shape.clone();
            state.insert(name.clone(), Tensor::new(shape, self.params[p].clone()));
        }
        state
    }

    /// A trainable parameter by its PyTorch name (for tests).
    pub fn param(&self, name: &str) -> Option<&[f32]> {
        let g = &self.model.graph;
        let i = g.param_names.iter().position(|n| n == name)?;
        Some(&self.params[i])
    }
}
