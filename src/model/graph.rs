//! A model as a graph of ops over numbered values, with PyTorch's module paths attached to the
//! values they output, and shape inference that turns an input shape into every op's params.

use crate::error::{Error, Result};
use crate::ops::*;
use crate::tensor::Tensor;

pub type ValueId = usize;
pub type ParamId = usize;

#[derive(Clone, Debug)]
pub enum Op {
    Conv2d {
        weight: ParamId,
        bias: Option<ParamId>,
        stride: (usize, usize),
        pad: (usize, usize),
    },
    /// Eval-mode BatchNorm folded to a per-channel scale and shift.
    BatchNorm {
        scale: ParamId,
        shift: ParamId,
    },
    Relu,
    MaxPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
    },
    AdaptiveAvgPool {
        out: (usize, usize),
    },
    Add,
    Flatten,
    Linear {
        weight: ParamId,
        bias: Option<ParamId>,
    },
    /// Identity at inference time.
    Dropout,
}

impl Op {
    /// Ops whose output is their input, reinterpreted: no kernel runs.
    pub fn is_alias(&self) -> bool {
        matches!(self, Op::Flatten | Op::Dropout)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::MaxPool { .. } => "max_pool2d",
            Op::AdaptiveAvgPool { .. } => "adaptive_avg_pool2d",
            Op::Add => "add",
            Op::Flatten => "flatten",
            Op::Linear { .. } => "linear",
            Op::Dropout => "dropout",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The module path this op belongs to, for error messages and profiles.
    pub module: Option<String>,
}

/// An entry of `model.named_modules()`: its path, its PyTorch class, and the value holding
/// its output (for a module called several times, its first call, as hooks see it first).
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub kind: String,
    pub value: ValueId,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub modules: Vec<Module>,
    pub params: Vec<Tensor>,
    pub param_names: Vec<String>,
    pub input: ValueId,
    pub output: ValueId,
    pub num_values: usize,
    pub in_channels: usize,
}

/// The params of one node for a given input shape.
#[derive(Clone, Copy, Debug)]
pub enum Planned {
    Conv2d(Conv2dParams),
    Affine(ChannelAffineParams),
    Elementwise(usize),
    MaxPool(MaxPool2dParams),
    AdaptiveAvgPool(AdaptivePool2dParams),
    Linear(LinearParams),
    Alias,
}

pub struct Plan {
    pub shapes: Vec<Vec<usize>>,
    pub nodes: Vec<Planned>,
}

fn nchw(shape: &[usize]) -> (usize, usize, usize, usize) {
    (shape[0], shape[1], shape[2], shape[3])
}

impl Graph {
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// Shapes of every value and params of every node for input `input` ([N, C, H, W]).
    pub fn plan(&self, input: &[usize]) -> Result<Plan> {
        let bad = |reason: String| Error::InputShape {
            input: input.to_vec(),
            reason,
        };
        if input.len() != 4 {
            return Err(bad(format!(
                "expected rank 4 [N, C, H, W], got rank {}",
                input.len()
            )));
        }
        if input[1] != self.in_channels {
            return Err(bad(format!(
                "the model takes {} input channels, the input has {}",
                self.in_channels, input[1]
            )));
        }
        if input.contains(&0) {
            return Err(bad("the input is empty".into()));
        }
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; self.num_values];
        shapes[self.input] = Some(input.to_vec());
        let mut planned = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let x = shapes[node.inputs[0]]
                .clone()
                .expect("graph is topologically ordered");
            let at = node.module.as_deref().unwrap_or(node.op.kind());
            let too_small = |what: &str| {
                bad(format!(
                    "the feature map is too small at {at} ({what} on a {}x{} map)",
                    x[2], x[3]
                ))
            };
            let (shape, plan) = match &node.op {
                Op::Conv2d {
                    weight,
                    stride,
                    pad,
                    ..
                } => {
                    let w = &self.params[*weight].shape;
                    let (n, c, h, wd) = nchw(&x);
                    if c != w[1] {
                        return Err(bad(format!("{at} takes {} channels, gets {c}", w[1])));
                    }
                    if h + 2 * pad.0 < w[2] || wd + 2 * pad.1 < w[3] {
                        return Err(too_small(&format!("kernel {}x{}", w[2], w[3])));
                    }
                    let p = Conv2dParams {
                        n,
                        c_in: c,
                        h_in: h,
                        w_in: wd,
                        c_out: w[0],
                        k_h: w[2],
                        k_w: w[3],
                        stride_h: stride.0,
                        stride_w: stride.1,
                        pad_h: pad.0,
                        pad_w: pad.1,
                        pad_h_end: pad.0,
                        pad_w_end: pad.1,
                        dilation_h: 1,
                        dilation_w: 1,
                        groups: 1,
                    };
                    (vec![n, p.c_out, p.h_out(), p.w_out()], Planned::Conv2d(p))
                }
                Op::BatchNorm { .. } => {
                    let (n, c, h, w) = nchw(&x);
                    (
                        x.clone(),
                        Planned::Affine(ChannelAffineParams { n, c, hw: h * w }),
                    )
                }
                Op::Relu | Op::Add => (x.clone(), Planned::Elementwise(x.iter().product())),
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                } => {
                    let (n, c, h, w) = nchw(&x);
                    if h + 2 * pad.0 < kernel.0 || w + 2 * pad.1 < kernel.1 {
                        return Err(too_small(&format!("max-pool {}x{}", kernel.0, kernel.1)));
                    }
                    let p = MaxPool2dParams {
                        n,
                        c,
                        h_in: h,
                        w_in: w,
                        k_h: kernel.0,
                        k_w: kernel.1,
                        stride_h: stride.0,
                        stride_w: stride.1,
                        pad_h: pad.0,
                        pad_w: pad.1,
                        ceil_mode: false,
                    };
                    (vec![n, c, p.h_out(), p.w_out()], Planned::MaxPool(p))
                }
                Op::AdaptiveAvgPool { out } => {
                    let (n, c, h, w) = nchw(&x);
                    let p = AdaptivePool2dParams {
                        n,
                        c,
                        h_in: h,
                        w_in: w,
                        h_out: out.0,
                        w_out: out.1,
                    };
                    (vec![n, c, out.0, out.1], Planned::AdaptiveAvgPool(p))
                }
                Op::Flatten => (vec![x[0], x[1..].iter().product()], Planned::Alias),
                Op::Dropout => (x.clone(), Planned::Alias),
                Op::Linear { weight, .. } => {
                    let w = &self.params[*weight].shape;
                    if x.len() != 2 || x[1] != w[1] {
                        return Err(bad(format!(
                            "{at} takes {} features but gets {} (shape {:?}); this model was made for another input size",
                            w[1],
                            x[1..].iter().product::<usize>(),
                            &x[1..]
                        )));
                    }
                    let p = LinearParams {
                        n: x[0],
                        in_f: w[1],
                        out_f: w[0],
                    };
                    (vec![x[0], w[0]], Planned::Linear(p))
                }
            };
            shapes[node.output] = Some(shape);
            planned.push(plan);
        }
        Ok(Plan {
            shapes: shapes.into_iter().map(|s| s.unwrap_or_default()).collect(),
            nodes: planned,
        })
    }
}
