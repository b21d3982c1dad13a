//! Normalizations: eval BatchNorm as a per-channel affine map (the builder folds its
//! statistics and eps in; GoogLeNet's `transform_input` is the same map with constants), and
//! LayerNorm over one axis.

use super::*;
use crate::model::builder::fold_batch_norm;
use crate::ops::{ChannelAffineParams, LayerNormParams};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Affine {
    /// \[C\]
    pub scale: ParamId,
    /// \[C\]
    pub shift: ParamId,
}

impl Affine {
    pub fn params(&self, g: &Graph, x: &[usize]) -> ShapeResult<ChannelAffineParams> {
        let (n, c, h, w) = nchw(x)?;
        let k = g.params[self.scale].shape.iter().product::<usize>();
        if k != c {
            return Err(format!("normalizes {k} channels, gets {c}"));
        }
        Ok(ChannelAffineParams { n, c, hw: h * w })
    }
}

/// `batch_norm`, folded: its four tensors are read, not kept as params.
impl Import for Affine {
    const NAMES: &'static [&'static str] = &["batch_norm"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let eps = n.f64("eps")?;
        if eps < 0.0 {
            return Err(format!("eps {eps} is negative").into());
        }
        let store = n.b.store;
        let arch = n.b.arch.clone();
        let w = &store.take(&arch, &n.need_tensor("weight")?, &[None])?.data;
        let c = Some(w.len());
        let mut get = |role| -> Imported<&[f32]> {
            Ok(&store.take(&arch, &n.need_tensor(role)?, &[c])?.data[..])
        };
        let (bias, mean, var) = (get("bias")?, get("running_mean")?, get("running_var")?);
        if var.iter().any(|&v| v as f64 + eps <= 0.0) {
            return Err("running_var + eps is not positive".to_owned().into());
        }
        let (scale, shift) = fold_batch_norm(w, bias, mean, var, eps);
        let c = scale.len();
        let scale =
            n.b.param(&format!("{} (scale)", n.name), Tensor::new(vec![c], scale));
        let shift =
            n.b.param(&format!("{} (shift)", n.name), Tensor::new(vec![c], shift));
        Ok(Affine { scale, shift })
    }
}

impl OpDef for Affine {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        self.params(g, x[0])?;
        Ok(x[0].to_vec())
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(cx.graph, x[0]).expect("planned");
        let y = cx.timed(self.name(), || {
            cx.be
                .channel_affine(&p, &inputs[0], cx.param(self.scale), cx.param(self.shift))
        })?;
        Ok(Fwd::new(y))
    }

    fn backward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        _io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>> {
        if !need[0] {
            return Ok(vec![None]);
        }
        let p = self.params(cx.graph, x[0]).expect("planned");
        let dx = run(cx, "batch_norm.backward", || {
            cx.be
                .channel_affine_grad_input(&p, dy, cx.param(self.scale))
        })?;
        Ok(vec![Some(dx)])
    }
}

/// LayerNorm over axis `axis` of its input: nn.LayerNorm over the last axis of an NHWC
/// tensor (ConvNeXt's blocks) or torchvision's LayerNorm2d over the channels of NCHW.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// \[dim\]
    pub weight: ParamId,
    /// \[dim\]
    pub bias: ParamId,
    pub eps: f32,
    pub axis: usize,
}

impl LayerNorm {
    fn params(&self, g: &Graph, x: &[usize]) -> ShapeResult<LayerNormParams> {
        if self.axis >= x.len() {
            return Err(format!(
                "normalizes axis {} of a rank-{} tensor",
                self.axis,
                x.len()
            ));
        }
        let dim = x[self.axis];
        let k = g.params[self.weight].shape.iter().product::<usize>();
        if k != dim {
            return Err(format!("normalizes {k} features, gets {dim} (shape {x:?})"));
        }
        Ok(LayerNormParams {
            outer: x[..self.axis].iter().product(),
            dim,
            inner: x[self.axis + 1..].iter().product(),
            eps: self.eps,
        })
    }
}

impl Import for LayerNorm {
    const NAMES: &'static [&'static str] = &["layer_norm"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let eps = n.f64("eps")? as f32;
        let axis = n.int("axis", 1)?;
        let key = n.need_tensor("weight")?;
        let weight = n.b.take(&key, &[None])?;
        let d = Some(n.b.param_shape(weight)[0]);
        let key = n.need_tensor("bias")?;
        let bias = n.b.take(&key, &[d])?;
        Ok(LayerNorm {
            weight,
            bias,
            eps,
            axis,
        })
    }
}

impl OpDef for LayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        self.params(g, x[0])?;
        Ok(x[0].to_vec())
    }

    fn saves(&self) -> Saves {
        Saves::INPUTS
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(cx.graph, x[0]).expect("planned");
        let y = cx.timed(self.name(), || {
            cx.be
                .layer_norm(&p, &inputs[0], cx.param(self.weight), cx.param(self.bias))
        })?;
        Ok(Fwd::new(y))
    }

    fn backward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>> {
        if !need[0] {
            return Ok(vec![None]);
        }
        let p = self.params(cx.graph, x[0]).expect("planned");
        let dx = run(cx, "layer_norm.backward", || {
            cx.be
                .layer_norm_grad_input(&p, io.input(0), cx.param(self.weight), dy)
        })?;
        Ok(vec![Some(dx)])
    }
}
