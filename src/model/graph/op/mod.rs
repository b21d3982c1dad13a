//! The ops of the graph, one file per op family. Each op type implements [`OpDef`]: its shape
//! rule, what its backward pass reads, its forward and its backward in terms of the
//! [`Backend`] trait; and [`Import`]: the exported-graph op names it reads, and how it reads
//! their attributes. [`Op`] is the enum over them, and the one `match` over it is the
//! `dispatch!` macro below. Adding an op is its code in its family's file and one line in
//! `ops!`; an activation is one row of `crate::ops::activation`'s table.

mod activation;
mod binary;
mod conv;
mod dropout;
mod import;
mod layout;
mod linear;
mod norm;
mod pool;

pub use activation::Act;
pub use binary::Binary;
pub use conv::Conv2d;
pub use dropout::{Dropout, Identity};
pub use import::{Import, Imported, NodeError, NodeReader};
pub use layout::{Concat, Flatten, Permute, Shuffle, Slice};
pub use linear::Linear;
pub use norm::{Affine, LayerNorm};
pub use pool::{Pool, Window};

use super::{Graph, ParamId};
use crate::backend::{Backend, Profile, TrainBackend};
use crate::error::Result;
use rand::rngs::StdRng;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

/// A shape rule's complaint, turned into an input-shape error with the op's location.
pub type ShapeResult<T> = std::result::Result<T, String>;

/// What an op's backward pass reads from the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Saves {
    /// Its inputs (every one).
    pub inputs: bool,
    pub output: bool,
    /// Auxiliary indices (max-pool argmax).
    pub aux: bool,
}

impl Saves {
    pub const NOTHING: Saves = Saves {
        inputs: false,
        output: false,
        aux: false,
    };
    pub const INPUTS: Saves = Saves {
        inputs: true,
        output: false,
        aux: false,
    };
}

/// Training-mode dropout: its probability and the host generator its masks come from.
pub struct DropoutMode<'a> {
    pub p: f64,
    pub rng: RefCell<&'a mut StdRng>,
}

/// How a ReLU's backward treats the gradient (kazuto1011/grad-cam-pytorch's three
/// backpropagations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReluRule {
    /// The true gradient, dx = dy·\[y > 0\] (vanilla backpropagation, every CAM).
    #[default]
    Gradient,
    /// Guided backpropagation: dx = ReLU(dy)·\[y > 0\].
    Guided,
    /// Deconvnet: dx = ReLU(dy), the forward mask ignored.
    Deconv,
}

/// What every op sees while it runs: the backend, the params on it, the graph (for param
/// shapes), the pass's mode, and the profile being recorded.
pub struct Ctx<'a, B: Backend> {
    pub be: &'a B,
    pub params: &'a [B::Buf],
    pub graph: &'a Graph,
    /// Training-mode dropout; None: dropout is the identity (inference).
    pub dropout: Option<DropoutMode<'a>>,
    /// How ReLUs pass gradients back (guided backpropagation, deconvnet).
    pub relu_rule: ReluRule,
    pub profile: Option<&'a RefCell<Profile>>,
}

impl<'a, B: Backend> Ctx<'a, B> {
    pub fn new(be: &'a B, params: &'a [B::Buf], graph: &'a Graph) -> Self {
        Ctx {
            be,
            params,
            graph,
            dropout: None,
            relu_rule: ReluRule::Gradient,
            profile: None,
        }
    }

    pub fn param(&self, id: ParamId) -> &B::Buf {
        &self.params[id]
    }

    /// The host shape of param `id`.
    pub fn param_shape(&self, id: ParamId) -> &[usize] {
        &self.graph.params[id].shape
    }

    /// Runs `f`, adding its time to the profile under `key` when one is recorded.
    pub fn timed<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(profile) = self.profile else {
            return f();
        };
        let start = Instant::now();
        let out = f()?;
        let mut p = profile.borrow_mut();
        let e = p.entry(key.to_owned()).or_default();
        e.0 += start.elapsed();
        e.1 += 1;
        Ok(out)
    }
}

/// An op's forward result: its output (an alias shares its input's buffer) and what it keeps
/// for its backward beyond values (argmax indices, a dropout mask).
pub struct Fwd<B: Backend> {
    pub y: Rc<B::Buf>,
    pub aux: Option<B::Idx>,
    pub mask: Option<B::Buf>,
}

impl<B: Backend> Fwd<B> {
    pub fn new(y: B::Buf) -> Self {
        Self::shared(Rc::new(y))
    }

    /// An output already shared: an alias of the input, or a gathered buffer.
    pub fn shared(y: Rc<B::Buf>) -> Self {
        Fwd {
            y,
            aux: None,
            mask: None,
        }
    }
}

/// The backward of an op whose output is its input: dy itself, where it is needed.
pub fn pass_through<B: Backend>(dy: &Rc<B::Buf>, need: &[bool]) -> Grads<B> {
    vec![need[0].then(|| dy.clone())]
}

/// What an op's backward reads: the saved values it declared in [`Saves`].
pub struct Io<'a, B: Backend> {
    pub inputs: Vec<Option<&'a B::Buf>>,
    pub output: Option<&'a B::Buf>,
    pub aux: Option<&'a B::Idx>,
    pub mask: Option<&'a B::Buf>,
}

impl<'a, B: Backend> Io<'a, B> {
    pub fn input(&self, i: usize) -> &'a B::Buf {
        self.inputs[i].expect("the walker keeps every input an op saves")
    }
    pub fn output(&self) -> &'a B::Buf {
        self.output
            .expect("the walker keeps the output of an op that saves it")
    }
}

/// Input gradients, one per input (None: not needed, or the op passes nothing back).
pub type Grads<B> = Vec<Option<Rc<<B as Backend>::Buf>>>;

/// The definition of one op.
pub trait OpDef {
    fn name(&self) -> &'static str;

    /// The output shape for these input shapes, or why they do not fit.
    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>>;

    /// What the backward pass reads.
    fn saves(&self) -> Saves {
        Saves::NOTHING
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>>;

    /// The forward pass when its `aux` will not be kept (no backward crosses the op): an op
    /// whose aux costs work of its own (max-pool's argmax) skips it.
    fn forward_without_aux<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        self.forward(cx, x, inputs)
    }

    /// Input gradients from the output gradient `dy`, for the inputs with `need[i]`.
    fn backward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>>;

    /// The gradients of its trainable params (training only; ops with frozen or no params
    /// return none).
    fn param_grads<B: TrainBackend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &B::Buf,
    ) -> Result<Vec<(ParamId, B::Buf)>> {
        let _ = (cx, x, io, dy);
        Ok(vec![])
    }

    /// Trainable params (conv and linear weights and biases).
    fn trainable(&self) -> Vec<ParamId> {
        vec![]
    }
}

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident($ty:ty),)*) => {
        #[derive(Clone, Debug)]
        pub enum Op {
            $($(#[$doc])* $variant($ty),)*
        }

        /// The one match over ops: `dispatch!(op, o => expr)` evaluates `expr` with `o` bound
        /// to the op's definition.
        macro_rules! dispatch {
            ($op:expr, $o:ident => $e:expr) => {
                match $op {
                    $(Op::$variant($o) => $e,)*
                }
            };
        }

        impl Op {
            /// Every op name of exported graphs, in the order of this list.
            pub fn import_names() -> Vec<&'static str> {
                [$(<$ty as Import>::NAMES),*].concat()
            }

            /// The op of an exported graph's node: that of the op type whose [`Import`]
            /// names its op, or "unknown op" with every name.
            pub fn import(n: &mut NodeReader) -> Imported<Op> {
                $(if <$ty as Import>::NAMES.contains(&n.op) {
                    return <$ty as Import>::import(n).map(Op::$variant);
                })*
                let names = Op::import_names().join(", ");
                Err(format!("unknown op '{}' (supported: {names})", n.op).into())
            }
        }
    };
}

// The activations come last: "unknown op" lists the names of the other ops first.
ops! {
    Conv2d(Conv2d),
    /// Eval BatchNorm folded to a per-channel affine map (also GoogLeNet's transform_input).
    Affine(Affine),
    LayerNorm(LayerNorm),
    Linear(Linear),
    Binary(Binary),
    Pool(Pool),
    Concat(Concat),
    Slice(Slice),
    Shuffle(Shuffle),
    Permute(Permute),
    Flatten(Flatten),
    Dropout(Dropout),
    /// Stochastic depth and other modules that are the identity at inference.
    Identity(Identity),
    Act(Act),
}

impl Op {
    pub fn name(&self) -> &'static str {
        dispatch!(self, o => o.name())
    }
    pub fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        dispatch!(self, o => o.shape(g, x))
    }
    pub fn saves(&self) -> Saves {
        dispatch!(self, o => o.saves())
    }
    pub fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        dispatch!(self, o => o.forward(cx, x, inputs))
    }
    pub fn forward_without_aux<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        dispatch!(self, o => o.forward_without_aux(cx, x, inputs))
    }
    pub fn backward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>> {
        dispatch!(self, o => o.backward(cx, x, io, dy, need))
    }
    pub fn param_grads<B: TrainBackend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &B::Buf,
    ) -> Result<Vec<(ParamId, B::Buf)>> {
        dispatch!(self, o => o.param_grads(cx, x, io, dy))
    }
    pub fn trainable(&self) -> Vec<ParamId> {
        dispatch!(self, o => o.trainable())
    }
}

/// `x` as [N, C, H, W], or why it is not rank 4.
pub fn nchw(x: &[usize]) -> ShapeResult<(usize, usize, usize, usize)> {
    match *x {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(format!("expects an [N, C, H, W] input, gets shape {x:?}")),
    }
}

/// Runs one backend call for the op, timed under `key`, and wraps its output.
pub fn run<B: Backend>(
    cx: &Ctx<B>,
    key: &str,
    f: impl FnOnce() -> Result<B::Buf>,
) -> Result<Rc<B::Buf>> {
    Ok(Rc::new(cx.timed(key, f)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exported op name read by two op types would always go to the first.
    #[test]
    fn every_exported_op_name_belongs_to_one_op() {
        let names = Op::import_names();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
