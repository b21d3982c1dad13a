//! Training passes over a model's `Graph`, through the one graph walker
//! (`crate::model::graph::walk`): a forward pass that keeps every activation (plus max-pool
//! argmaxes and dropout masks), and a full backward pass that computes input gradients and
//! the weight and bias gradients of every conv2d and linear layer, on any [`TrainBackend`]
//! (CPU or wgpu).
//!
//! Dropout masks are drawn on the host from the trainer's seeded generator, in the same order
//! on every backend, and uploaded as scale factors (0 or 1/(1-p)): CPU and wgpu training see
//! identical masks.
//!
//! BatchNorm stays in eval mode (its running statistics and affine parameters are frozen, as
//! when fine-tuning with frozen BN): it is the folded per-channel affine map of the graph, and
//! gradients flow through it but nothing of it is updated. So are LayerNorm and layer-scale
//! params: only conv and linear weights and biases train.

use crate::backend::TrainBackend;
use crate::error::Result;
use crate::model::graph::op::{Ctx, DropoutMode};
use crate::model::graph::walk::{self, Keep, Scope, Values};
use crate::model::graph::{Graph, Plan};
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use std::cell::RefCell;
use std::rc::Rc;

/// Everything the backward pass reads, from one training-mode forward pass.
pub struct Cache<B: TrainBackend> {
    values: Values<B>,
    plan: Plan,
}

impl<B: TrainBackend> Cache<B> {
    /// The graph's output: logits [N, classes].
    pub fn output(&self, g: &Graph) -> &B::Buf {
        self.values.values[g.output]
            .as_ref()
            .expect("output computed")
    }
}

/// Runs the graph. With `dropout` Some((p, rng)), dropout layers drop with probability p
/// (training mode); with None they are the identity (eval mode).
pub fn forward<B: TrainBackend>(
    be: &B,
    g: &Graph,
    params: &[B::Buf],
    x: &Tensor,
    dropout: Option<(f64, &mut StdRng)>,
) -> Result<Cache<B>> {
    let plan = g.plan(&x.shape)?;
    let cx = Ctx {
        dropout: dropout.map(|(p, rng)| DropoutMode {
            p,
            rng: RefCell::new(rng),
        }),
        ..Ctx::new(be, params, g)
    };
    let input = be.upload(&x.data)?;
    let values = walk::forward(&cx, &plan, input, &Keep::all(g), false)?;
    Ok(Cache { values, plan })
}

/// Backward pass from `dlogits` (the loss gradient at the graph output, [N, classes]). Returns
/// the gradient of every conv2d and linear weight and bias, by param id (None for frozen
/// params). The input image gets no gradient: the first layer's input-gradient kernel, the
/// most expensive one, never runs.
pub fn backward<B: TrainBackend>(
    be: &B,
    g: &Graph,
    params: &[B::Buf],
    cache: &Cache<B>,
    dlogits: B::Buf,
) -> Result<Vec<Option<B::Buf>>> {
    let cx = Ctx::new(be, params, g);
    let plan = &cache.plan;
    let mut pgrads: Vec<Option<B::Buf>> = (0..params.len()).map(|_| None).collect();
    let scope = Scope::new(g, g.input, false);
    walk::backward(
        &cx,
        plan,
        &cache.values,
        &scope,
        Rc::new(dlogits),
        |i, io, dy| {
            let node = &g.nodes[i];
            let shapes: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|&v| plan.shapes[v].as_slice())
                .collect();
            for (p, grad) in node.op.param_grads(&cx, &shapes, io, dy)? {
                pgrads[p] = Some(grad);
            }
            Ok(())
        },
    )?;
    Ok(pgrads)
}
