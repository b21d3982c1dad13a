//! Windowed pooling (max and average) with PyTorch's one output-size rule, and adaptive
//! pooling to a fixed output size.

/// Output length of a pooling window sweep, as PyTorch's `pooling_output_shape`: floor (or
/// ceil with `ceil_mode`) of (len + 2·pad − kernel) / stride, plus one; in ceil mode the last
/// window must start inside the input or its left padding.
pub fn pool_out_len(
    len: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    ceil_mode: bool,
) -> usize {
    let span = len + 2 * pad - kernel;
    let mut out = if ceil_mode {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil_mode && (out - 1) * stride >= len + pad {
        out -= 1;
    }
    out
}

/// A window sweep over x: [n, c, h_in, w_in], the spec every windowed pooling op shares: a
/// k_h × k_w window moved by the stride over the input padded by pad_h / pad_w on each side,
/// giving y: [n, c, h_out, w_out] by [`pool_out_len`] (ceil mode included). An op's own
/// parameters sit beside it (see [`AvgPool2dParams`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolWindow {
    pub n: usize,
    pub c: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub ceil_mode: bool,
}

impl PoolWindow {
    pub fn h_out(&self) -> usize {
        pool_out_len(
            self.h_in,
            self.k_h,
            self.stride_h,
            self.pad_h,
            self.ceil_mode,
        )
    }
    pub fn w_out(&self) -> usize {
        pool_out_len(
            self.w_in,
            self.k_w,
            self.stride_w,
            self.pad_w,
            self.ceil_mode,
        )
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.h_out() * self.w_out()
    }
    /// Window of output (oy, ox): the input rows and columns it covers, clipped to the input,
    /// and its size over the padded input (the padding counts, the overhang of a ceil-mode
    /// window past the padding does not), as PyTorch's pooling loops compute them.
    pub fn input_window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let axis = |o: usize, k: usize, s: usize, p: usize, len: usize| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((len + p) as isize);
            let padded = (end - start) as usize;
            let (a, b) = (
                start.max(0) as usize,
                (end.min(len as isize)).max(0) as usize,
            );
            (a..b.max(a), padded)
        };
        let (ry, py) = axis(oy, self.k_h, self.stride_h, self.pad_h, self.h_in);
        let (rx, px) = axis(ox, self.k_w, self.stride_w, self.pad_w, self.w_in);
        (ry, rx, py * px)
    }
}

/// Max pooling with implicit −inf padding, like `nn.MaxPool2d`: its window is all it has.
/// y and argmax: [n, c, h_out, w_out]; argmax holds the flat index (iy * w_in + ix) of the
/// first maximum of each window in row-major window order. Windows of ceil mode that hang
/// over the input's end are clipped to it.
pub type MaxPool2dParams = PoolWindow;

/// Average pooling, like `nn.AvgPool2d` / `F.avg_pool2d`: each output is the sum of its
/// window's inputs divided by the window's size counted over the padded input
/// (`count_include_pad`, PyTorch's default: the padding's zeros count, the overhang of a ceil-mode
/// window past the padding does not) or over the input's own elements only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AvgPool2dParams {
    pub window: PoolWindow,
    pub count_include_pad: bool,
}

impl AvgPool2dParams {
    /// Window of output (oy, ox): input rows and columns it covers (clipped to the input) and
    /// the divisor, as PyTorch's avg_pool2d computes them.
    pub fn window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let (ry, rx, padded) = self.window.input_window(oy, ox);
        let div = if self.count_include_pad {
            padded
        } else {
            ry.len() * rx.len()
        };
        (ry, rx, div)
    }
}

/// `nn.AdaptiveAvgPool2d` / `nn.AdaptiveMaxPool2d`: output cell (i, j) pools input rows
/// floor(i·h_in/h_out) .. ceil((i+1)·h_in/h_out), and likewise for columns.
/// x: [n, c, h_in, w_in], y: [n, c, h_out, w_out] (max pooling: argmax too, as
/// [`MaxPool2dParams`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptivePool2dParams {
    pub n: usize,
    pub c: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl AdaptivePool2dParams {
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.h_out * self.w_out
    }
}

/// The pooling family: every pooling op's parameters. The backends implement the family as
/// one pair of methods (`Backend::pool`, `Backend::pool_grad_input`) that match on this, so a
/// new pooling op is a variant here, its graph node (`model/graph/op/pool.rs`), its kernels
/// and its cases, and no line elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolParams {
    Max(MaxPool2dParams),
    Avg(AvgPool2dParams),
    AdaptiveAvg(AdaptivePool2dParams),
    AdaptiveMax(AdaptivePool2dParams),
}

impl PoolParams {
    /// The op's name, as exported graphs and profiles call it.
    pub fn name(&self) -> &'static str {
        match self {
            PoolParams::Max(_) => "max_pool2d",
            PoolParams::Avg(_) => "avg_pool2d",
            PoolParams::AdaptiveAvg(_) => "adaptive_avg_pool2d",
            PoolParams::AdaptiveMax(_) => "adaptive_max_pool2d",
        }
    }

    /// Whether the backward pass reads the forward's argmax (the index of each window's first
    /// maximum), which the forward then returns when asked.
    pub fn keeps_argmax(&self) -> bool {
        matches!(self, PoolParams::Max(_) | PoolParams::AdaptiveMax(_))
    }

    /// [n, c, h_out, w_out].
    pub fn output_shape(&self) -> [usize; 4] {
        match self {
            PoolParams::Max(w) | PoolParams::Avg(AvgPool2dParams { window: w, .. }) => {
                [w.n, w.c, w.h_out(), w.w_out()]
            }
            PoolParams::AdaptiveAvg(a) | PoolParams::AdaptiveMax(a) => [a.n, a.c, a.h_out, a.w_out],
        }
    }

    /// [n, c, h_in, w_in].
    pub fn input_shape(&self) -> [usize; 4] {
        match self {
            PoolParams::Max(w) | PoolParams::Avg(AvgPool2dParams { window: w, .. }) => {
                [w.n, w.c, w.h_in, w.w_in]
            }
            PoolParams::AdaptiveAvg(a) | PoolParams::AdaptiveMax(a) => [a.n, a.c, a.h_in, a.w_in],
        }
    }

    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

/// For check lines: the op's input and its own parameters (its name is [`PoolParams::name`]).
impl std::fmt::Display for PoolParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [n, c, h, w] = self.input_shape();
        write!(f, "n{n} c{c} {h}x{w}")?;
        let window = |f: &mut std::fmt::Formatter<'_>, p: &PoolWindow| {
            write!(
                f,
                " k{}x{} s{}x{} p{}x{}",
                p.k_h, p.k_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w
            )?;
            if p.ceil_mode {
                write!(f, " ceil")?;
            }
            Ok(())
        };
        match self {
            PoolParams::Max(p) => window(f, p),
            PoolParams::Avg(a) => {
                window(f, &a.window)?;
                if !a.count_include_pad {
                    write!(f, " exclude-pad")?;
                }
                Ok(())
            }
            PoolParams::AdaptiveAvg(a) | PoolParams::AdaptiveMax(a) => {
                write!(f, " ->{}x{}", a.h_out, a.w_out)
            }
        }
    }
}

/// Start and end (exclusive) of adaptive-pooling window `i` along an axis.
pub fn adaptive_window(i: usize, len_in: usize, len_out: usize) -> (usize, usize) {
    let start = i * len_in / len_out;
    let end = ((i + 1) * len_in).div_ceil(len_out);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_rule_matches_pytorch() {
        // googlenet at 224: 112 → 56 with k3 s2 ceil (55 in floor mode).
        assert_eq!(pool_out_len(112, 3, 2, 0, true), 56);
        assert_eq!(pool_out_len(112, 3, 2, 0, false), 55);
        // The last window must start inside the input or its left padding: 5 with k2 s2 p1
        // would give 4 windows in ceil mode, but the 4th starts at 6 - 1 = 5 ≥ 5 + 1 - 1.
        assert_eq!(pool_out_len(5, 2, 2, 1, true), 3);
        assert_eq!(pool_out_len(6, 3, 1, 1, true), 6);
    }

    #[test]
    fn avg_window_divisors() {
        let p = AvgPool2dParams {
            window: PoolWindow {
                n: 1,
                c: 1,
                h_in: 5,
                w_in: 5,
                k_h: 3,
                k_w: 3,
                stride_h: 2,
                stride_w: 2,
                pad_h: 1,
                pad_w: 1,
                ceil_mode: true,
            },
            count_include_pad: true,
        };
        // A corner window covers 2×2 inputs and the padding: divisor 9.
        assert_eq!(p.window(0, 0), (0..2, 0..2, 9));
        let q = AvgPool2dParams {
            count_include_pad: false,
            ..p
        };
        assert_eq!(q.window(0, 0), (0..2, 0..2, 4));
    }
}
