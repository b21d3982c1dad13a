//! Normalizations: eval BatchNorm as a per-channel affine map (the builder folds its
//! statistics and eps in; GoogLeNet's `transform_input` is the same map with constants), and
//! LayerNorm over one axis.

use super::*;
use crate::ops::{ChannelAffineParams, LayerNormParams};

#[derive(Clone, Debug)]
pub struct Affine {
    /// [C]
    pub scale: ParamId,
    /// [C]
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
    /// [dim]
    pub weight: ParamId,
    /// [dim]
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
