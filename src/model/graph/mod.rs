//! A model as a graph of ops over numbered values, with PyTorch's module paths attached to the
//! values they output, and shape inference that turns an input shape into every value's shape.
//!
//! Each op is defined once, in its own file under `op/` (its shape rule, what its backward
//! reads, its forward and its backward); `walk` is the one graph walker that runs them, for
//! Grad-CAM's partial backward passes and for training alike.

pub mod op;
pub mod walk;

use crate::error::{Error, Result};
use crate::storage::Weight;
pub use op::{Op, OpDef};

pub type ValueId = usize;
pub type ParamId = usize;

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The module path this op belongs to, for error messages and profiles.
    pub module: Option<String>,
}

impl Node {
    /// Where the node is, for messages: its module path, else its op's name.
    pub fn at(&self) -> &str {
        self.module.as_deref().unwrap_or(self.op.name())
    }
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
    pub params: Vec<Weight>,
    pub param_names: Vec<String>,
    pub input: ValueId,
    pub output: ValueId,
    pub num_values: usize,
    pub in_channels: usize,
    /// Modules of the exported model that produced no tensor in its forward (never called,
    /// or returning something else): named in the error when one is asked for as a layer.
    pub idle_modules: Vec<String>,
}

/// The shape of every value for one input shape.
pub struct Plan {
    pub shapes: Vec<Vec<usize>>,
}

impl Plan {
    /// Elements of value `v`.
    pub fn len(&self, v: ValueId) -> usize {
        self.shapes[v].iter().product()
    }
}

impl Graph {
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// Shapes of every value for input `input` ([N, C, H, W]); every op checks its inputs.
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
        if input
            .iter()
            .try_fold(4usize, |a, &d| a.checked_mul(d))
            .is_none()
        {
            return Err(bad("the input is too large to address".into()));
        }
        let mut shapes: Vec<Option<Vec<usize>>> = vec![None; self.num_values];
        shapes[self.input] = Some(input.to_vec());
        for node in &self.nodes {
            let ins: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|&v| {
                    shapes[v].as_deref().ok_or_else(|| {
                        bad(format!(
                            "{} reads value {v} before it is computed",
                            node.at()
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            let shape = node
                .op
                .shape(self, &ins)
                .map_err(|reason| bad(format!("at {}: {reason}", node.at())))?;
            if shape.contains(&0) {
                return Err(bad(format!(
                    "{} would output an empty tensor {shape:?}",
                    node.at()
                )));
            }
            // Sizes from untrusted input sizes: a value must be addressable (and its bytes).
            if shape
                .iter()
                .try_fold(4usize, |a, &d| a.checked_mul(d))
                .is_none()
            {
                return Err(bad(format!(
                    "{} would output a tensor of shape {shape:?}, too large to address",
                    node.at()
                )));
            }
            shapes[node.output] = Some(shape);
        }
        Ok(Plan {
            shapes: shapes.into_iter().map(|s| s.unwrap_or_default()).collect(),
        })
    }

    /// For each value, the index of the last node that reads it (usize::MAX: none).
    pub fn last_uses(&self) -> Vec<usize> {
        let mut last = vec![usize::MAX; self.num_values];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last[v] = i;
            }
        }
        last
    }
}
