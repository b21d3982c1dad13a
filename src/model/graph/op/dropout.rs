//! Dropout (the identity at inference; in training a mask drawn on the host, the same on every
//! backend) and the modules that are the identity at inference (stochastic depth).

use super::*;
use rand::Rng;

#[derive(Clone, Debug)]
pub struct Dropout;

/// Training only: no exported graph names it (an exporter writes `identity`).
impl Import for Dropout {}

impl OpDef for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(x[0].to_vec())
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let identity = Fwd::shared(inputs[0].clone());
        let Some(mode) = cx.dropout.as_ref().filter(|m| m.p > 0.0) else {
            return Ok(identity);
        };
        let len: usize = x[0].iter().product();
        let scale = (1.0 / (1.0 - mode.p)) as f32;
        let mut rng = mode.rng.borrow_mut();
        let mask: Vec<f32> = (0..len)
            .map(|_| if rng.random_bool(mode.p) { 0.0 } else { scale })
            .collect();
        let mask = cx.be.upload(&mask)?;
        let y = cx.be.dropout(&inputs[0], &mask, len)?;
        Ok(Fwd {
            y: Rc::new(y),
            aux: None,
            mask: Some(mask),
        })
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
        Ok(vec![Some(match io.mask {
            Some(mask) => Rc::new(cx.be.dropout(dy, mask, x[0].iter().product())?),
            None => dy.clone(),
        })])
    }
}

/// The identity at inference: torchvision's StochasticDepth in eval mode, an empty
/// `nn.Sequential` or `nn.Identity`.
#[derive(Clone, Debug)]
pub struct Identity;

impl Import for Identity {
    const NAMES: &'static [&'static str] = &["identity"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        Ok(Identity)
    }
}

impl OpDef for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(x[0].to_vec())
    }

    fn forward<B: Backend>(
        &self,
        _cx: &Ctx<B>,
        _x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        Ok(Fwd::shared(inputs[0].clone()))
    }

    fn backward<B: Backend>(
        &self,
        _cx: &Ctx<B>,
        _x: &[&[usize]],
        _io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>> {
        Ok(pass_through::<B>(dy, need))
    }
}
