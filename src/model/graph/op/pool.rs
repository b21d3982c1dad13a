//! Pooling, one node for the family: windowed max and average pooling with PyTorch's one
//! output-size rule (`crate::ops::pool_out_len`, ceil mode included), and adaptive pooling to
//! a fixed size (`x.mean((2, 3))` is an adaptive average pool to 1×1 followed by a flatten).
//! Each kind's exported-graph name and attributes, shape rule and backend parameters
//! ([`PoolParams`]) are here; the backends run every kind through `Backend::pool`.

use super::*;
use crate::ops::{AdaptivePool2dParams, AvgPool2dParams, PoolParams, PoolWindow};

/// The geometry of a pooling window, shared by max and average pooling: what a graph stores,
/// without the input (`Window::over` an input gives the backends' [`PoolWindow`]).
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

/// A pooling node: what a graph stores, without the input.
#[derive(Clone, Debug)]
pub enum Pool {
    /// `nn.MaxPool2d` / `F.max_pool2d`.
    Max(Window),
    /// `nn.AvgPool2d` / `F.avg_pool2d`.
    Avg {
        window: Window,
        count_include_pad: bool,
    },
    /// `nn.AdaptiveAvgPool2d(out)`.
    AdaptiveAvg((usize, usize)),
    /// `nn.AdaptiveMaxPool2d(out)`.
    AdaptiveMax((usize, usize)),
}

impl Pool {
    /// The backends' parameters over input `x`, or why `x` does not fit the node.
    fn params(&self, x: &[usize]) -> ShapeResult<PoolParams> {
        let adaptive = |out: (usize, usize)| -> ShapeResult<AdaptivePool2dParams> {
            let (n, c, h, w) = nchw(x)?;
            if out.0 == 0 || out.1 == 0 {
                return Err(format!("pools to an empty output {out:?}"));
            }
            Ok(AdaptivePool2dParams {
                n,
                c,
                h_in: h,
                w_in: w,
                h_out: out.0,
                w_out: out.1,
            })
        };
        Ok(match self {
            Pool::Max(w) => PoolParams::Max(w.over("max-pool", x)?),
            Pool::Avg {
                window,
                count_include_pad,
            } => PoolParams::Avg(AvgPool2dParams {
                window: window.over("avg-pool", x)?,
                count_include_pad: *count_include_pad,
            }),
            Pool::AdaptiveAvg(out) => PoolParams::AdaptiveAvg(adaptive(*out)?),
            Pool::AdaptiveMax(out) => PoolParams::AdaptiveMax(adaptive(*out)?),
        })
    }

    fn keeps_argmax(&self) -> bool {
        matches!(self, Pool::Max(_) | Pool::AdaptiveMax(_))
    }
}

impl Import for Pool {
    const NAMES: &'static [&'static str] = &[
        "max_pool2d",
        "avg_pool2d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool2d",
    ];

    fn import(n: &mut NodeReader) -> Imported<Self> {
        let adaptive = |n: &mut NodeReader| -> Imported<(usize, usize)> {
            n.arity(1)?;
            Ok(n.pair("output_size", 1)?)
        };
        Ok(match n.op {
            "max_pool2d" => Pool::Max(Window::import(n)?),
            "avg_pool2d" => Pool::Avg {
                window: Window::import(n)?,
                count_include_pad: n.bool("count_include_pad")?,
            },
            "adaptive_avg_pool2d" => Pool::AdaptiveAvg(adaptive(n)?),
            _ => Pool::AdaptiveMax(adaptive(n)?),
        })
    }
}

impl OpDef for Pool {
    fn name(&self) -> &'static str {
        match self {
            Pool::Max(_) => "max_pool2d",
            Pool::Avg { .. } => "avg_pool2d",
            Pool::AdaptiveAvg(_) => "adaptive_avg_pool2d",
            Pool::AdaptiveMax(_) => "adaptive_max_pool2d",
        }
    }

    fn shape(&self, _g: &Graph, x: &[&[usize]]) -> ShapeResult<Vec<usize>> {
        Ok(self.params(x[0])?.output_shape().to_vec())
    }

    fn saves(&self) -> Saves {
        Saves {
            aux: self.keeps_argmax(),
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
        let (y, aux) = cx.timed(self.name(), || cx.be.pool(&p, &inputs[0], true))?;
        Ok(Fwd { aux, ..Fwd::new(y) })
    }

    fn forward_without_aux<B: Backend>(
        &self,
        cx: &Ctx<B>,
        x: &[&[usize]],
        inputs: &[Rc<B::Buf>],
    ) -> Result<Fwd<B>> {
        let p = self.params(x[0]).expect("planned");
        let (y, _) = cx.timed(self.name(), || cx.be.pool(&p, &inputs[0], false))?;
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
        let dx = run(cx, &key, || cx.be.pool_grad_input(&p, io.aux, dy))?;
        Ok(vec![Some(dx)])
    }
}
