//! Layout ops, all made of the backend's one strided copy: concat and slice along an axis
//! (torch.cat, chunk, split), ShuffleNet's channel shuffle, permute (ConvNeXt's NCHW ↔ NHWC),
//! and flatten, which only reinterprets its input.

use super::*;
use crate::ops::StridedCopyParams;

/// A fresh buffer of `len` elements filled by strided copies `copies` from `srcs`.
fn gather<B: Backend>(
    cx: &Ctx<B>,
    key: &str,
    len: usize,
    copies: &[(StridedCopyParams, &B::Buf)],
) -> Result<Rc<B::Buf>> {
    run(cx, key, || {
        let mut out = cx.be.alloc(len)?;
        for (p, src) in copies {
            cx.be.strided_copy(p, src, &mut out)?;
        }
        Ok(out)
    })
}

/// `torch.cat` along `axis`.
#[derive(Clone, Debug)]
pub struct Concat {
    pub axis: usize,
}

impl Concat {
    /// Each input's offset along the axis, and the output shape.
    fn layout(&self, x: &[&[usize]]) -> ShapeResult<(Vec<usize>, Vec<usize>)> {
        let first = x[0];
        if self.axis >= first.len() {
            return Err(format!(
                "concatenates along axis {} of rank {}",
                self.axis,
                first.len()
            ));
        }
        let mut out = first.to_vec();
        out[self.axis] = 0;
        let mut offsets = Vec::with_capacity(x.len());
        for s in x {
            let same = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == self.axis || a == b);
            if !same {
                return Err(format!(
                    "concatenates shapes {first:?} and {s:?}, which differ off axis {}",
                    self.axis
                ));
            }
            offsets.push(out[self.axis]);
            out[self.axis] += s[self.axis];
        }
        Ok((offsets, out))
    }
}

impl Import for Concat {
    const NAMES: &'static [&'static str] = &["cat"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        if n.inputs() == 0 {
            return Err("takes at least one input, has none".to_owned().into());
        }
        Ok(Concat {
            axis: n.int("axis", 1)?,
        })
    }
}

impl OpDef for Concat {
    fn name(&self) -> &'static str {
        "cat"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(self.layout(x)?.1)
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let (offsets, out) = self.layout(x).expect("planned");
        let copies: Vec<_> = offsets
            .iter()
            .zip(x)
            .zip(inputs)
            .map(|((&o, s), src)| {
                (
                    StridedCopyParams::block(&out, self.axis, o, s[self.axis], true),
                    &**src,
                )
            })
            .collect();
        let y = gather(cx, self.name(), out.iter().product(), &copies)?;
        Ok(Fwd::shared(y))
    }

    fn backward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        _io: &Io<B>,
        dy: &Rc<B::Buf>,
        need: &[bool],
    ) -> Result<Grads<B>> {
        let (offsets, out) = self.layout(x).expect("planned");
        let mut grads = Vec::with_capacity(x.len());
        for ((&o, s), &needed) in offsets.iter().zip(x).zip(need) {
            grads.push(if needed {
                let p = StridedCopyParams::block(&out, self.axis, o, s[self.axis], false);
                Some(gather(
                    cx,
                    "cat.backward",
                    s.iter().product(),
                    &[(p, &**dy)],
                )?)
            } else {
                None
            });
        }
        Ok(grads)
    }
}

/// Elements start..start+len along `axis`: one piece of `chunk` or `split`.
#[derive(Clone, Debug)]
pub struct Slice {
    pub axis: usize,
    pub start: usize,
    pub len: usize,
}

impl Slice {
    fn check(&self, x: &[usize]) -> ShapeResult<()> {
        if self.axis >= x.len() || self.start + self.len > x[self.axis] || self.len == 0 {
            return Err(format!(
                "takes elements {}..{} of axis {} of shape {x:?}",
                self.start,
                self.start + self.len,
                self.axis
            ));
        }
        Ok(())
    }
}

impl Import for Slice {
    const NAMES: &'static [&'static str] = &["slice"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        Ok(Slice {
            axis: n.int("axis", 1)?,
            start: n.int("start", 0)?,
            len: n.int("len", 1)?,
        })
    }
}

impl OpDef for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        self.check(x[0])?;
        let mut s = x[0].to_vec();
        s[self.axis] = self.len;
        Ok(s)
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = StridedCopyParams::block(x[0], self.axis, self.start, self.len, false);
        let len = p.len();
        let y = gather(cx, self.name(), len, &[(p, &*inputs[0])])?;
        Ok(Fwd::shared(y))
    }

    /// The gradient is dy in the slice's place and zero elsewhere.
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
        let p = StridedCopyParams::block(x[0], self.axis, self.start, self.len, true);
        let dx = run(cx, "slice.backward", || {
            let mut dx = cx.be.zeros(x[0].iter().product())?;
            cx.be.strided_copy(&p, dy, &mut dx)?;
            Ok(dx)
        })?;
        Ok(vec![Some(dx)])
    }
}

/// ShuffleNet's channel shuffle: view [N, g, C/g, H, W], swap axes 1 and 2, view [N, C, H, W].
#[derive(Clone, Debug)]
pub struct Shuffle {
    pub groups: usize,
}

impl Shuffle {
    fn copy(&self, x: &[usize]) -> ShapeResult<StridedCopyParams> {
        let (n, c, h, w) = nchw(x)?;
        let g = self.groups;
        if g == 0 || c % g != 0 {
            return Err(format!("shuffles {c} channels in {g} groups"));
        }
        let hw = h * w;
        // Output (n, j, i, p) ← input (n, i, j, p), i < g, j < C/g.
        Ok(StridedCopyParams::new(
            &[n, c / g, g, hw],
            0,
            &[c * hw, hw, (c / g) * hw, 1],
            0,
            &[c * hw, g * hw, hw, 1],
        ))
    }
}

impl Import for Shuffle {
    const NAMES: &'static [&'static str] = &["channel_shuffle"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        Ok(Shuffle {
            groups: n.int("groups", 1)?,
        })
    }
}

impl OpDef for Shuffle {
    fn name(&self) -> &'static str {
        "channel_shuffle"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        self.copy(x[0])?;
        Ok(x[0].to_vec())
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.copy(x[0]).expect("planned");
        let y = gather(cx, self.name(), p.len(), &[(p, &*inputs[0])])?;
        Ok(Fwd::shared(y))
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
        let p = self.copy(x[0]).expect("planned").inverse();
        Ok(vec![Some(gather(
            cx,
            "channel_shuffle.backward",
            p.len(),
            &[(p, &**dy)],
        )?)])
    }
}

/// `torch.permute`: output axis i is input axis perm\[i\].
#[derive(Clone, Debug)]
pub struct Permute {
    pub perm: Vec<usize>,
}

impl Import for Permute {
    const NAMES: &'static [&'static str] = &["permute"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let perm = n.list("perm", 0, 0)?;
        if perm.first() != Some(&0) {
            return Err(format!("permutation {perm:?} moves the batch axis").into());
        }
        Ok(Permute { perm })
    }
}

impl OpDef for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let mut seen = self.perm.clone();
        seen.sort_unstable();
        if x[0].len() != self.perm.len() || seen != (0..self.perm.len()).collect::<Vec<_>>() {
            return Err(format!("permutes shape {:?} by {:?}", x[0], self.perm));
        }
        Ok(self.perm.iter().map(|&a| x[0][a]).collect())
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = StridedCopyParams::permute(x[0], &self.perm);
        let y = gather(cx, self.name(), p.len(), &[(p, &*inputs[0])])?;
        Ok(Fwd::shared(y))
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
        let p = StridedCopyParams::permute(x[0], &self.perm).inverse();
        Ok(vec![Some(gather(
            cx,
            "permute.backward",
            p.len(),
            &[(p, &**dy)],
        )?)])
    }
}

/// `torch.flatten(x, start_dim)` (and `x.view(N, -1)`): the axes from `start_dim` on become
/// one. The output shares the input's buffer.
#[derive(Clone, Debug)]
pub struct Flatten {
    pub start_dim: usize,
}

impl Import for Flatten {
    const NAMES: &'static [&'static str] = &["flatten"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        Ok(Flatten {
            start_dim: n.int("start_dim", 1)?,
        })
    }
}

impl OpDef for Flatten {
    fn name(&self) -> &'static str {
        "flatten"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let x = x[0];
        if self.start_dim >= x.len() {
            return Err(format!(
                "flattens from axis {} of shape {x:?}",
                self.start_dim
            ));
        }
        let mut s = x[..self.start_dim].to_vec();
        let flat = x[self.start_dim..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("flattens shape {x:?} past the address space"))?;
        s.push(flat);
        Ok(s)
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
