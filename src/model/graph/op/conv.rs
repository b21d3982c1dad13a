//! `nn.Conv2d`: groups (depthwise when groups = channels), dilation, and zero padding that may
//! differ per side (a `nn.ZeroPad2d` / `F.pad` folded in by the builder).

use super::*;
use crate::ops::Conv2dParams;

#[derive(Clone, Debug)]
pub struct Conv2d {
    /// [c_out, c_in / groups, k_h, k_w]
    pub weight: ParamId,
    /// \[c_out\]
    pub bias: Option<ParamId>,
    pub stride: (usize, usize),
    /// Zero padding: top, left, bottom, right.
    pub pad: [usize; 4],
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Conv2d {
    /// The backend's description of this conv on input `x`, or why `x` does not fit it.
    pub fn params(&self, g: &Graph, x: &[usize]) -> ShapeResult<Conv2dParams> {
        let (n, c, h, w) = nchw(x)?;
        let ws = &g.params[self.weight].shape;
        let [c_out, c_in_g, k_h, k_w] = ws[..] else {
            return Err(format!("its weight has shape {ws:?}, not 4-D"));
        };
        if self.groups == 0 || c_out % self.groups != 0 {
            return Err(format!(
                "{c_out} output channels do not split into {} groups",
                self.groups
            ));
        }
        if c != c_in_g * self.groups {
            return Err(format!("takes {} channels, gets {c}", c_in_g * self.groups));
        }
        let p = Conv2dParams::dense(n, c, (h, w), c_out, (k_h, k_w), self.stride, (0, 0))
            .with_padding(self.pad)
            .with_dilation(self.dilation)
            .with_groups(self.groups);
        if !p.fits() {
            return Err(format!(
                "the feature map is too small (kernel {k_h}x{k_w} on a {h}x{w} map)"
            ));
        }
        Ok(p)
    }

    fn p(&self, cx: &Ctx<impl Backend>, x: &[&[usize]]) -> Conv2dParams {
        self.params(cx.graph, x[0])
            .expect("shapes were checked when the graph was planned")
    }
}

impl Import for Conv2d {
    const NAMES: &'static [&'static str] = &["conv2d"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let (kh, kw) = n.pair("kernel", 1)?;
        let stride = n.pair("stride", 1)?;
        let pad = n.list("padding", 4, 0)?;
        let dilation = n.pair("dilation", 1)?;
        let groups = n.int("groups", 1)?;
        let key = n.need_tensor("weight")?;
        let weight = n.b.take(&key, &[None, None, Some(kh), Some(kw)])?;
        let c_out = n.b.param_shape(weight)[0];
        let bias = match n.tensor("bias") {
            Some(k) => Some(n.b.take(&k, &[Some(c_out)])?),
            None => None,
        };
        Ok(Conv2d {
            weight,
            bias,
            stride,
            pad: [pad[0], pad[1], pad[2], pad[3]],
            dilation,
            groups,
        })
    }
}

impl OpDef for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let p = self.params(g, x[0])?;
        Ok(vec![p.n, p.c_out, p.h_out(), p.w_out()])
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.p(cx, x);
        let bias = self.bias.map(|b| cx.param(b));
        let y = cx.timed(self.name(), || {
            cx.be.conv2d(&p, &inputs[0], cx.param(self.weight), bias)
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
        let p = self.p(cx, x);
        let dx = run(cx, "conv2d.backward", || {
            cx.be.conv2d_grad_input(&p, dy, cx.param(self.weight))
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
        let p = self.p(cx, x);
        let mut out = vec![(self.weight, cx.be.conv2d_grad_weight(&p, io.input(0), dy)?)];
        if let Some(b) = self.bias {
            out.push((b, cx.be.conv2d_grad_bias(&p, dy)?));
        }
        Ok(out)
    }

    fn trainable(&self) -> Vec<ParamId> {
        std::iter::once(self.weight).chain(self.bias).collect()
    }

    fn saves(&self) -> Saves {
        // The input only for the weight gradient: training keeps every value anyway.
        Saves::NOTHING
    }
}
