//! `nn.Linear` over the last axis of its input: [N, F] after a flatten, or [N, H, W, C] in
//! ConvNeXt's channels-last blocks.

use super::*;
use crate::ops::LinearParams;

#[derive(Clone, Debug)]
pub struct Linear {
    /// [out_f, in_f]
    pub weight: ParamId,
    /// \[out_f\]
    pub bias: Option<ParamId>,
}

impl Linear {
    pub fn params(&self, g: &Graph, x: &[usize]) -> ShapeResult<LinearParams> {
        let w = &g.params[self.weight].shape;
        let last = *x.last().unwrap_or(&0);
        if x.len() < 2 || last != w[1] {
            return Err(format!(
                "takes {} features but gets {} (shape {:?}); this model was made for another input size",
                w[1],
                if x.len() == 2 { last } else { x[1..].iter().product() },
                &x[1..]
            ));
        }
        Ok(LinearParams {
            n: x[..x.len() - 1].iter().product(),
            in_f: w[1],
            out_f: w[0],
        })
    }
}

impl Import for Linear {
    const NAMES: &'static [&'static str] = &["linear"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let key = n.need_tensor("weight")?;
        let weight = n.b.take(&key, &[None, None])?;
        let out_f = n.b.param_shape(weight)[0];
        let bias = match n.tensor("bias") {
            Some(k) => Some(n.b.take(&k, &[Some(out_f)])?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }
}

impl OpDef for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let p = self.params(g, x[0])?;
        let mut s = x[0].to_vec();
        *s.last_mut().expect("rank checked") = p.out_f;
        Ok(s)
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(cx.graph, x[0]).expect("planned");
        let bias = self.bias.map(|b| cx.param(b));
        let y = cx.timed(self.name(), || {
            cx.be.linear(&p, &inputs[0], cx.param(self.weight), bias)
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
        let dx = run(cx, "linear.backward", || {
            cx.be.linear_grad_input(&p, dy, cx.param(self.weight))
        })?;
        Ok(vec![Some(dx)])
    }

    fn param_grads<B: TrainBackend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        io: &Io<B>,
        dy: &B::Buf,
    ) -> Result<Vec<(ParamId, B::Buf)>> {
        let p = self.params(cx.graph, x[0]).expect("planned");
        let mut out = vec![(self.weight, cx.be.linear_grad_weight(&p, io.input(0), dy)?)];
        if let Some(b) = self.bias {
            out.push((b, cx.be.linear_grad_bias(&p, dy)?));
        }
        Ok(out)
    }

    fn trainable(&self) -> Vec<ParamId> {
        std::iter::once(self.weight).chain(self.bias).collect()
    }
}
