//! Binary elementwise ops with broadcasting: a residual add, a squeeze-excitation gate
//! (x · s with s [N, C, 1, 1]), ConvNeXt's layer scale (a [C, 1, 1] param times the block).
//! Each operand's gradient is summed over the axes it was broadcast along.

use super::*;
use crate::ops::{BinaryOp, BinaryParams};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Binary {
    pub op: BinaryOp,
    /// A param as the second operand (layer scale); then the op has one input value.
    pub param: Option<ParamId>,
}

impl Binary {
    fn params(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<(BinaryParams, Vec<usize>)> {
        let b: &[usize] = match self.param {
            Some(p) => &g.params[p].shape,
            None => x[1],
        };
        BinaryParams::broadcast(self.op, x[0], b)
            .ok_or_else(|| format!("shapes {:?} and {b:?} do not broadcast", x[0]))
    }

    fn operands<'a, B: Backend>(
        &self,
        cx: &'a Ctx<B>,
        inputs: &[&'a B::Buf],
    ) -> (&'a B::Buf, &'a B::Buf) {
        match self.param {
            Some(p) => (inputs[0], cx.param(p)),
            None => (inputs[0], inputs[1]),
        }
    }
}

/// `add` and `mul`: of two inputs, or of one input and a `scalar` param or an `other` tensor.
impl Import for Binary {
    const NAMES: &'static [&'static str] = &["add", "mul"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        let op = if n.op == "add" {
            BinaryOp::Add
        } else {
            BinaryOp::Mul
        };
        let param = if n.has("scalar") {
            n.arity(1)?;
            let s = n.f64("scalar")? as f32;
            let name = format!("{} (scalar)", n.name);
            Some(n.b.param(&name, Tensor::new(vec![1], vec![s])))
        } else if let Some(k) = n.tensor("other") {
            n.arity(1)?;
            let rank = n.b.store.shape(&k).map_or(0, |s| s.len());
            Some(n.b.take(&k, &vec![None; rank])?)
        } else {
            n.arity(2)?;
            None
        };
        Ok(Binary { op, param })
    }
}

impl OpDef for Binary {
    fn name(&self) -> &'static str {
        self.op.name()
    }

    fn shape(&self, g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(self.params(g, x)?.1)
    }

    fn saves(&self) -> Saves {
        match self.op {
            BinaryOp::Add => Saves::NOTHING,
            BinaryOp::Mul => Saves::INPUTS,
        }
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let (p, _) = self.params(cx.graph, x).expect("planned");
        let ins: Vec<&B::Buf> = inputs.iter().map(|r| &**r).collect();
        let (a, b) = self.operands(cx, &ins);
        let y = cx.timed(self.name(), || cx.be.binary(&p, a, b))?;
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
        let (p, _) = self.params(cx.graph, x).expect("planned");
        let key = format!("{}.backward", self.name());
        let mut grads = Vec::with_capacity(need.len());
        for (i, &needed) in need.iter().enumerate() {
            if !needed {
                grads.push(None);
                continue;
            }
            // An add passes dy through to an operand of the output's shape.
            if self.op == BinaryOp::Add && p.operand(i) == p.out {
                grads.push(Some(dy.clone()));
                continue;
            }
            let dx = match self.op {
                BinaryOp::Add => run(cx, &key, || cx.be.binary_grad_input(&p, i, dy, dy, dy))?,
                BinaryOp::Mul => {
                    let ins: Vec<&B::Buf> = (0..io.inputs.len()).map(|j| io.input(j)).collect();
                    let (a, b) = self.operands(cx, &ins);
                    run(cx, &key, || cx.be.binary_grad_input(&p, i, dy, a, b))?
                }
            };
            grads.push(Some(dx));
        }
        Ok(grads)
    }
}
