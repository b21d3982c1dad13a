//! Elementwise activations: one op for every row of the activation table
//! (`crate::ops::Activation`).

use super::*;
use crate::ops::{Activation, ActivationParams, Saved};

#[derive(Clone, Debug)]
pub struct Act {
    pub act: Activation,
    pub alpha: f32,
    pub beta: f32,
}

impl Act {
    pub fn new(act: Activation) -> Self {
        Act {
            act,
            alpha: 0.0,
            beta: 0.0,
        }
    }

    pub fn params(&self, x: &[usize]) -> ActivationParams {
        ActivationParams {
            act: self.act,
            alpha: self.alpha,
            beta: self.beta,
            len: x.iter().product(),
        }
    }
}

/// Every row of the table, by its functional name; LeakyReLU, ELU and Hardtanh with their
/// parameters.
impl Import for Act {
    const NAMES: &'static [&'static str] = Activation::NAMES;

    fn import(n: &mut NodeReader) -> Imported<Self> {
        let Some(&a) = Activation::ALL.iter().find(|a| a.name() == n.op) else {
            return Err(format!("'{}' is not an activation", n.op).into());
        };
        n.arity(1)?;
        let mut act = Act::new(a);
        match a {
            Activation::LeakyRelu => act.alpha = n.f64("negative_slope")? as f32,
            Activation::Elu => act.alpha = n.f64("alpha")? as f32,
            Activation::Hardtanh => {
                act.alpha = n.f64("min_val")? as f32;
                act.beta = n.f64("max_val")? as f32;
            }
            _ => {}
        }
        Ok(act)
    }
}

impl OpDef for Act {
    fn name(&self) -> &'static str {
        self.act.name()
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(x[0].to_vec())
    }

    fn saves(&self) -> Saves {
        match self.act.saved() {
            Saved::Input => Saves::INPUTS,
            Saved::Output => Saves {
                output: true,
                ..Saves::NOTHING
            },
        }
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]);
        let y = cx.timed(self.name(), || cx.be.activation(&p, &inputs[0]))?;
        Ok(Fwd::new(y))
    }

    /// With guided backpropagation a ReLU passes back only positive gradients where its
    /// output was positive (dx = dy·[y>0]·[dy>0]): relu_grad(y, relu(dy)), no new kernel; with
    /// deconvnet, relu(dy) whatever the forward pass did.
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
        let p = self.params(x[0]);
        let saved = match self.act.saved() {
            Saved::Input => io.input(0),
            Saved::Output => io.output(),
        };
        let key = format!("{}.backward", self.name());
        let relu = self.act == Activation::Relu;
        let dx = match cx.relu_rule {
            ReluRule::Guided if relu => {
                let pos = cx.timed("relu.guided", || cx.be.activation(&p, dy))?;
                run(cx, &key, || cx.be.activation_grad_input(&p, saved, &pos))?
            }
            ReluRule::Deconv if relu => {
                Rc::new(cx.timed("relu.deconv", || cx.be.activation(&p, dy))?)
            }
            _ => run(cx, &key, || cx.be.activation_grad_input(&p, saved, dy))?,
        };
        Ok(vec![Some(dx)])
    }
}
