//! Pooling: windowed max and average pooling with PyTorch's one output-size rule
//! (`crate::ops::pool_out_len`, ceil mode included), and adaptive pooling to a fixed size
//! (`x.mean((2, 3))` is an adaptive average pool to 1×1 followed by a flatten).

use super::*;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, MaxPool2dParams, PoolWindow};

/// The geometry of a pooling window, shared by max and average pooling: what a graph stores,
/// without the input ([`Window::over`] an input gives the backends' [`PoolWindow`]).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub ceil_mode: bool,
}

impl Window {
    /// The sweep of this window over input `x` (`what`: the op, for messages), or why `x`
    /// does not fit it.
    fn over(&self, what: &str, x: &[usize]) -> ShapeResult<PoolWindow> {
        let (n, c, h, w) = nchw(x)?;
        self.check(what, h, w)?;
        Ok(PoolWindow {
            n,
            c,
            h_in: h,
            w_in: w,
            k_h: self.kernel.0,
            k_w: self.kernel.1,
            stride_h: self.stride.0,
            stride_w: self.stride.1,
            pad_h: self.pad.0,
            pad_w: self.pad.1,
            ceil_mode: self.ceil_mode,
        })
    }

    /// The window of a `max_pool2d` or `avg_pool2d` node.
    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        let window = Window {
            kernel: n.pair("kernel", 1)?,
            stride: n.pair("stride", 1)?,
            pad: n.pair("padding", 0)?,
            ceil_mode: n.bool("ceil_mode")?,
        };
        if 2 * window.pad.0 > window.kernel.0 || 2 * window.pad.1 > window.kernel.1 {
            return Err(format!(
                "padding {:?} is more than half the kernel {:?} (PyTorch refuses it too)",
                window.pad, window.kernel
            )
            .into());
        }
        Ok(window)
    }

    fn check(&self, what: &str, h: usize, w: usize) -> ShapeResult<()> {
        let (k, p) = (self.kernel, self.pad);
        if p.0 * 2 > k.0 || p.1 * 2 > k.1 {
            return Err(format!(
                "{what} padding {p:?} is more than half its kernel {k:?}"
            ));
        }
        if h + 2 * p.0 < k.0 || w + 2 * p.1 < k.1 {
            return Err(format!(
                "the feature map is too small ({what} {}x{} on a {h}x{w} map)",
                k.0, k.1
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct MaxPool(pub Window);

impl MaxPool {
    fn params(&self, x: &[usize]) -> ShapeResult<MaxPool2dParams> {
        self.0.over("max-pool", x)
    }
}

impl Import for MaxPool {
    const NAMES: &'static [&'static str] = &["max_pool2d"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        Ok(MaxPool(Window::import(n)?))
    }
}

impl OpDef for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let p = self.params(x[0])?;
        Ok(vec![p.n, p.c, p.h_out(), p.w_out()])
    }

    fn saves(&self) -> Saves {
        Saves {
            aux: true,
            ..Saves::NOTHING
        }
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]).expect("planned");
        let (y, idx) = cx.timed(self.name(), || cx.be.max_pool2d(&p, &inputs[0]))?;
        Ok(Fwd {
            aux: Some(idx),
            ..Fwd::new(y)
        })
    }

    fn forward_without_aux<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]).expect("planned");
        let y = cx.timed(self.name(), || cx.be.max_pool2d_values(&p, &inputs[0]))?;
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
        let p = self.params(x[0]).expect("planned");
        let idx = io.aux.expect("argmax kept");
        let dx = run(cx, "max_pool2d.backward", || {
            cx.be.max_pool2d_grad_input(&p, idx, dy)
        })?;
        Ok(vec![Some(dx)])
    }
}

#[derive(Clone, Debug)]
pub struct AvgPool {
    pub window: Window,
    pub count_include_pad: bool,
}

impl AvgPool {
    fn params(&self, x: &[usize]) -> ShapeResult<AvgPool2dParams> {
        Ok(AvgPool2dParams {
            window: self.window.over("avg-pool", x)?,
            count_include_pad: self.count_include_pad,
        })
    }
}

impl Import for AvgPool {
    const NAMES: &'static [&'static str] = &["avg_pool2d"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        Ok(AvgPool {
            window: Window::import(n)?,
            count_include_pad: n.bool("count_include_pad")?,
        })
    }
}

impl OpDef for AvgPool {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let p = self.params(x[0])?.window;
        Ok(vec![p.n, p.c, p.h_out(), p.w_out()])
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]).expect("planned");
        let y = cx.timed(self.name(), || cx.be.avg_pool2d(&p, &inputs[0]))?;
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
        let p = self.params(x[0]).expect("planned");
        let dx = run(cx, "avg_pool2d.backward", || {
            cx.be.avg_pool2d_grad_input(&p, dy)
        })?;
        Ok(vec![Some(dx)])
    }
}

/// `nn.AdaptiveAvgPool2d` (or `AdaptiveMaxPool2d` with `max`) to `out`.
#[derive(Clone, Debug)]
pub struct AdaptivePool {
    pub out: (usize, usize),
    pub max: bool,
}

impl AdaptivePool {
    fn params(&self, x: &[usize]) -> ShapeResult<AdaptivePool2dParams> {
        let (n, c, h, w) = nchw(x)?;
        if self.out.0 == 0 || self.out.1 == 0 {
            return Err(format!("pools to an empty output {:?}", self.out));
        }
        Ok(AdaptivePool2dParams {
            n,
            c,
            h_in: h,
            w_in: w,
            h_out: self.out.0,
            w_out: self.out.1,
        })
    }
}

impl Import for AdaptivePool {
    const NAMES: &'static [&'static str] = &["adaptive_avg_pool2d", "adaptive_max_pool2d"];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        n.arity(1)?;
        Ok(AdaptivePool {
            out: n.pair("output_size", 1)?,
            max: n.op == "adaptive_max_pool2d",
        })
    }
}

impl OpDef for AdaptivePool {
    fn name(&self) -> &'static str {
        if self.max {
            "adaptive_max_pool2d"
        } else {
            "adaptive_avg_pool2d"
        }
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        let p = self.params(x[0])?;
        Ok(vec![p.n, p.c, p.h_out, p.w_out])
    }

    fn saves(&self) -> Saves {
        Saves {
            aux: self.max,
            ..Saves::NOTHING
        }
    }

    fn forward<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]).expect("planned");
        if self.max {
            let (y, idx) = cx.timed(self.name(), || cx.be.adaptive_max_pool2d(&p, &inputs[0]))?;
            return Ok(Fwd {
                aux: Some(idx),
                ..Fwd::new(y)
            });
        }
        let y = cx.timed(self.name(), || cx.be.adaptive_avg_pool2d(&p, &inputs[0]))?;
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
        let p = self.params(x[0]).expect("planned");
        let key = format!("{}.backward", self.name());
        let dx = if self.max {
            let idx = io.aux.expect("argmax kept");
            run(cx, &key, || {
                cx.be.adaptive_max_pool2d_grad_input(&p, idx, dy)
            })?
        } else {
            run(cx, &key, || cx.be.adaptive_avg_pool2d_grad_input(&p, dy))?
        };
        Ok(vec![Some(dx)])
    }
}
