//! The training executor: a full forward pass over a model's `Graph` that keeps every
//! activation (plus max-pool argmaxes and dropout masks) that the backward pass reads, and a
//! full backward pass that computes input gradients and the weight and bias gradients of every
//! conv2d and linear layer. CPU only: it calls the CPU kernels directly rather than going
//! through the `Backend` trait, which holds inference ops only.
//!
//! BatchNorm stays in eval mode (its running statistics and affine parameters are frozen, as
//! when fine-tuning with frozen BN): it is the folded per-channel affine map of the graph, and
//! gradients flow through it but nothing of it is updated.

use crate::backend::cpu::{conv, elementwise, linear, pool, training, weight_grad};
use crate::error::Result;
use crate::model::graph::{Graph, Op, Planned};
use crate::tensor::Tensor;
use rand::{rngs::StdRng, Rng};

/// Everything the backward pass reads, from one training-mode forward pass.
pub struct Cache {
    /// Every value of the graph, by value id.
    values: Vec<Vec<f32>>,
    /// Max-pool argmaxes, by node index.
    argmax: Vec<Option<Vec<u32>>>,
    /// Dropout keep masks, by node index (training mode only).
    masks: Vec<Option<Vec<bool>>>,
    nodes: Vec<Planned>,
}

impl Cache {
    pub fn output(&self, g: &Graph) -> &[f32] {
        &self.values[g.output]
    }
}

/// Runs the graph. With `dropout` Some((p, rng)), dropout layers drop with probability p
/// (training mode); with None they are the identity (eval mode).
pub fn forward(
    g: &Graph,
    params: &[Vec<f32>],
    x: &Tensor,
    mut dropout: Option<(f64, &mut StdRng)>,
) -> Result<Cache> {
    let plan = g.plan(&x.shape)?;
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); g.num_values];
    let mut argmax = vec![None; g.nodes.len()];
    let mut masks = vec![None; g.nodes.len()];
    values[g.input] = x.data.clone();
    for (i, (node, planned)) in g.nodes.iter().zip(&plan.nodes).enumerate() {
        let x = &values[node.inputs[0]];
        let y = match (&node.op, planned) {
            (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) => {
                let mut y = vec![0.0; p.output_len()];
                let b = bias.map(|b| params[b].as_slice());
                conv::conv2d_forward(p, x, &params[*weight], b, &mut y);
                y
            }
            (Op::BatchNorm { scale, shift }, Planned::Affine(p)) => {
                let mut y = vec![0.0; p.len()];
                elementwise::channel_affine_forward(p, x, &params[*scale], &params[*shift], &mut y);
                y
            }
            (Op::Relu, Planned::Elementwise(len)) => {
                let mut y = vec![0.0; *len];
                elementwise::relu_forward(x, &mut y);
                y
            }
            (Op::Add, Planned::Elementwise(len)) => {
                let mut y = vec![0.0; *len];
                elementwise::add(x, &values[node.inputs[1]], &mut y);
                y
            }
            (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                let mut y = vec![0.0; p.output_len()];
                let mut idx = vec![0u32; p.output_len()];
                pool::max_pool2d_forward(p, x, &mut y, &mut idx);
                argmax[i] = Some(idx);
                y
            }
            (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                let mut y = vec![0.0; p.output_len()];
                pool::adaptive_avg_pool2d_forward(p, x, &mut y);
                y
            }
            (Op::Linear { weight, bias }, Planned::Linear(p)) => {
                let mut y = vec![0.0; p.n * p.out_f];
                let b = bias.map(|b| params[b].as_slice());
                linear::linear_forward(p, x, &params[*weight], b, &mut y);
                y
            }
            (Op::Dropout, _) => match dropout.as_mut() {
                Some((p, rng)) if *p > 0.0 => {
                    let keep: Vec<bool> = (0..x.len()).map(|_| !rng.random_bool(*p)).collect();
                    let mut y = vec![0.0; x.len()];
                    training::dropout_forward(x, &keep, *p, &mut y);
                    masks[i] = Some(keep);
                    y
                }
                _ => x.clone(),
            },
            (Op::Flatten, _) => x.clone(),
            (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
        };
        values[node.output] = y;
    }
    Ok(Cache {
        values,
        argmax,
        masks,
        nodes: plan.nodes,
    })
}

/// Backward pass from `dlogits` (the loss gradient at the graph output). Returns the gradient
/// of every conv2d and linear weight and bias, by param id (None for frozen params).
pub fn backward(
    g: &Graph,
    params: &[Vec<f32>],
    cache: &Cache,
    dlogits: Vec<f32>,
    dropout_p: f64,
) -> Vec<Option<Vec<f32>>> {
    let mut grads: Vec<Option<Vec<f32>>> = vec![None; g.num_values];
    let mut pgrads: Vec<Option<Vec<f32>>> = vec![None; params.len()];
    grads[g.output] = Some(dlogits);
    for (i, (node, planned)) in g.nodes.iter().zip(&cache.nodes).enumerate().rev() {
        let Some(dy) = grads[node.output].take() else {
            continue;
        };
        let x = &cache.values[node.inputs[0]];
        // The input image needs no gradient: skip the most expensive input-gradient kernel.
        let need_dx = node.inputs[0] != g.input;
        let dx: Option<Vec<f32>> = match (&node.op, planned) {
            (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) => {
                let mut dw = vec![0.0; p.weight_len()];
                weight_grad::conv2d_backward_weight(p, x, &dy, &mut dw);
                pgrads[*weight] = Some(dw);
                if let Some(b) = bias {
                    let mut db = vec![0.0; p.c_out];
                    weight_grad::conv2d_backward_bias(p, &dy, &mut db);
                    pgrads[*b] = Some(db);
                }
                need_dx.then(|| {
                    let mut dx = vec![0.0; p.input_len()];
                    conv::conv2d_backward_input(p, &dy, &params[*weight], &mut dx);
                    dx
                })
            }
            (Op::BatchNorm { scale, .. }, Planned::Affine(p)) => {
                let mut dx = vec![0.0; p.len()];
                elementwise::channel_affine_backward_input(p, &dy, &params[*scale], &mut dx);
                Some(dx)
            }
            (Op::Relu, Planned::Elementwise(len)) => {
                let mut dx = vec![0.0; *len];
                elementwise::relu_backward_input(&cache.values[node.output], &dy, &mut dx);
                Some(dx)
            }
            (Op::Add, _) => {
                accumulate(&mut grads, node.inputs[1], dy.clone());
                Some(dy)
            }
            (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                let mut dx = vec![0.0; p.input_len()];
                let idx = cache.argmax[i].as_ref().expect("argmax kept");
                pool::max_pool2d_backward_input(p, idx, &dy, &mut dx);
                Some(dx)
            }
            (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                let mut dx = vec![0.0; p.input_len()];
                pool::adaptive_avg_pool2d_backward_input(p, &dy, &mut dx);
                Some(dx)
            }
            (Op::Linear { weight, bias }, Planned::Linear(p)) => {
                let mut dw = vec![0.0; p.out_f * p.in_f];
                weight_grad::linear_backward_weight(p, x, &dy, &mut dw);
                pgrads[*weight] = Some(dw);
                if let Some(b) = bias {
                    let mut db = vec![0.0; p.out_f];
                    weight_grad::linear_backward_bias(p, &dy, &mut db);
                    pgrads[*b] = Some(db);
                }
                need_dx.then(|| {
                    let mut dx = vec![0.0; p.n * p.in_f];
                    linear::linear_backward_input(p, &dy, &params[*weight], &mut dx);
                    dx
                })
            }
            (Op::Dropout, _) => match &cache.masks[i] {
                Some(keep) => {
                    let mut dx = vec![0.0; dy.len()];
                    training::dropout_backward_input(&dy, keep, dropout_p, &mut dx);
                    Some(dx)
                }
                None => Some(dy),
            },
            (Op::Flatten, _) => Some(dy),
            (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
        };
        if let Some(dx) = dx {
            if need_dx {
                accumulate(&mut grads, node.inputs[0], dx);
            }
        }
    }
    pgrads
}

fn accumulate(grads: &mut [Option<Vec<f32>>], v: usize, g: Vec<f32>) {
    match &mut grads[v] {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
        slot => *slot = Some(g),
    }
}
