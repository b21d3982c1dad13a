//! The training executor: a full forward pass over a model's `Graph` that keeps every
//! activation (plus max-pool argmaxes and dropout masks) that the backward pass reads, and a
//! full backward pass that computes input gradients and the weight and bias gradients of every
//! conv2d and linear layer, on any [`TrainBackend`] (CPU or wgpu).
//!
//! Dropout masks are drawn on the host from the trainer's seeded generator, in the same order
//! on every backend, and uploaded as scale factors (0 or 1/(1-p)): CPU and wgpu training see
//! identical masks.
//!
//! BatchNorm stays in eval mode (its running statistics and affine parameters are frozen, as
//! when fine-tuning with frozen BN): it is the folded per-channel affine map of the graph, and
//! gradients flow through it but nothing of it is updated.

use crate::backend::TrainBackend;
use crate::error::Result;
use crate::model::graph::{Graph, Op, Plan, Planned};
use crate::tensor::Tensor;
use rand::{rngs::StdRng, Rng};
use std::rc::Rc;

/// Everything the backward pass reads, from one training-mode forward pass.
pub struct Cache<B: TrainBackend> {
    /// Every value of the graph, by value id (aliases — flatten, eval dropout — share a buffer).
    values: Vec<Option<Rc<B::Buf>>>,
    /// Max-pool argmaxes, by node index.
    argmax: Vec<Option<B::Idx>>,
    /// Dropout masks as scale factors, by node index (training mode only).
    masks: Vec<Option<B::Buf>>,
    plan: Plan,
}

impl<B: TrainBackend> Cache<B> {
    /// The graph's output: logits [N, classes].
    pub fn output(&self, g: &Graph) -> &B::Buf {
        self.values[g.output].as_ref().expect("output computed")
    }
}

/// Elements of value `v`.
fn len_of(plan: &Plan, v: usize) -> usize {
    plan.shapes[v].iter().product()
}

/// Runs the graph. With `dropout` Some((p, rng)), dropout layers drop with probability p
/// (training mode); with None they are the identity (eval mode).
pub fn forward<B: TrainBackend>(
    be: &B,
    g: &Graph,
    params: &[B::Buf],
    x: &Tensor,
    mut dropout: Option<(f64, &mut StdRng)>,
) -> Result<Cache<B>> {
    let plan = g.plan(&x.shape)?;
    let mut values: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
    let mut argmax: Vec<Option<B::Idx>> = (0..g.nodes.len()).map(|_| None).collect();
    let mut masks: Vec<Option<B::Buf>> = (0..g.nodes.len()).map(|_| None).collect();
    values[g.input] = Some(Rc::new(be.upload(&x.data)?));
    for (i, (node, planned)) in g.nodes.iter().zip(&plan.nodes).enumerate() {
        let x = values[node.inputs[0]].clone().expect("input computed");
        let y = match (&node.op, planned) {
            (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) => {
                be.conv2d(p, &x, &params[*weight], bias.map(|b| &params[b]))?
            }
            (Op::BatchNorm { scale, shift }, Planned::Affine(p)) => {
                be.channel_affine(p, &x, &params[*scale], &params[*shift])?
            }
            (Op::Relu, Planned::Elementwise(len)) => be.relu(&x, *len)?,
            (Op::Add, Planned::Elementwise(len)) => {
                let b = values[node.inputs[1]].as_ref().expect("input computed");
                be.add(&x, b, *len)?
            }
            (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                let (y, idx) = be.max_pool2d(p, &x)?;
                argmax[i] = Some(idx);
                y
            }
            (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                be.adaptive_avg_pool2d(p, &x)?
            }
            (Op::Linear { weight, bias }, Planned::Linear(p)) => {
                be.linear(p, &x, &params[*weight], bias.map(|b| &params[b]))?
            }
            (Op::Dropout, _) => match dropout.as_mut() {
                Some((p, rng)) if *p > 0.0 => {
                    let len = len_of(&plan, node.inputs[0]);
                    let scale = (1.0 / (1.0 - *p)) as f32;
                    let mask: Vec<f32> = (0..len)
                        .map(|_| if rng.random_bool(*p) { 0.0 } else { scale })
                        .collect();
                    let mask = be.upload(&mask)?;
                    let y = be.dropout(&x, &mask, len)?;
                    masks[i] = Some(mask);
                    y
                }
                _ => {
                    values[node.output] = Some(x);
                    continue;
                }
            },
            (Op::Flatten, _) => {
                values[node.output] = Some(x);
                continue;
            }
            (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
        };
        values[node.output] = Some(Rc::new(y));
    }
    Ok(Cache {
        values,
        argmax,
        masks,
        plan,
    })
}

/// Backward pass from `dlogits` (the loss gradient at the graph output, [N, classes]). Returns
/// the gradient of every conv2d and linear weight and bias, by param id (None for frozen
/// params).
pub fn backward<B: TrainBackend>(
    be: &B,
    g: &Graph,
    params: &[B::Buf],
    cache: &Cache<B>,
    dlogits: B::Buf,
) -> Result<Vec<Option<B::Buf>>> {
    let mut grads: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
    let mut pgrads: Vec<Option<B::Buf>> = (0..params.len()).map(|_| None).collect();
    grads[g.output] = Some(Rc::new(dlogits));
    let plan = &cache.plan;
    for (i, (node, planned)) in g.nodes.iter().zip(&plan.nodes).enumerate().rev() {
        let Some(dy) = grads[node.output].take() else {
            continue;
        };
        let x = cache.values[node.inputs[0]]
            .as_ref()
            .expect("activation kept");
        // The input image needs no gradient: skip the most expensive input-gradient kernel.
        let need_dx = node.inputs[0] != g.input;
        let dx: Option<Rc<B::Buf>> = match (&node.op, planned) {
            (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) => {
                pgrads[*weight] = Some(be.conv2d_grad_weight(p, x, &dy)?);
                if let Some(b) = bias {
                    pgrads[*b] = Some(be.conv2d_grad_bias(p, &dy)?);
                }
                if need_dx {
                    Some(Rc::new(be.conv2d_grad_input(p, &dy, &params[*weight])?))
                } else {
                    None
                }
            }
            (Op::BatchNorm { scale, .. }, Planned::Affine(p)) => Some(Rc::new(
                be.channel_affine_grad_input(p, &dy, &params[*scale])?,
            )),
            (Op::Relu, Planned::Elementwise(len)) => {
                let y = cache.values[node.output]
                    .as_ref()
                    .expect("relu output kept");
                Some(Rc::new(be.relu_grad_input(y, &dy, *len)?))
            }
            (Op::Add, _) => {
                accumulate(be, plan, &mut grads, node.inputs[1], dy.clone())?;
                Some(dy)
            }
            (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                let idx = cache.argmax[i].as_ref().expect("argmax kept");
                Some(Rc::new(be.max_pool2d_grad_input(p, idx, &dy)?))
            }
            (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                Some(Rc::new(be.adaptive_avg_pool2d_grad_input(p, &dy)?))
            }
            (Op::Linear { weight, bias }, Planned::Linear(p)) => {
                pgrads[*weight] = Some(be.linear_grad_weight(p, x, &dy)?);
                if let Some(b) = bias {
                    pgrads[*b] = Some(be.linear_grad_bias(p, &dy)?);
                }
                if need_dx {
                    Some(Rc::new(be.linear_grad_input(p, &dy, &params[*weight])?))
                } else {
                    None
                }
            }
            (Op::Dropout, _) => match &cache.masks[i] {
                Some(mask) => {
                    let len = len_of(plan, node.output);
                    Some(Rc::new(be.dropout(&dy, mask, len)?))
                }
                None => Some(dy),
            },
            (Op::Flatten, _) => Some(dy),
            (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
        };
        if let Some(dx) = dx {
            if need_dx {
                accumulate(be, plan, &mut grads, node.inputs[0], dx)?;
            }
        }
    }
    Ok(pgrads)
}

/// Adds gradient `dv` into value `v`'s (which holds it as is when it has none yet).
fn accumulate<B: TrainBackend>(
    be: &B,
    plan: &Plan,
    grads: &mut [Option<Rc<B::Buf>>],
    v: usize,
    dv: Rc<B::Buf>,
) -> Result<()> {
    grads[v] = Some(match grads[v].take() {
        Some(acc) => Rc::new(be.add(&acc, &dv, len_of(plan, v))?),
        None => dv,
    });
    Ok(())
}
