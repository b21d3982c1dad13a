//! Normalizations: eval-mode BatchNorm as a per-channel affine map (also GoogLeNet's
//! `transform_input`), and LayerNorm over one axis.

/// Per-channel affine map y = x·scale\[c\] + shift\[c\]: eval-mode BatchNorm with its statistics
/// folded in. x, y: [n, c, hw], scale, shift: \[c\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelAffineParams {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl ChannelAffineParams {
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// LayerNorm over the middle axis of x viewed as [outer, dim, inner]: for each (o, i),
/// y = (x − mean) / sqrt(var + eps) · weight\[d\] + bias\[d\], with the biased variance, as
/// `F.layer_norm`. nn.LayerNorm on an NHWC tensor is inner = 1; torchvision's LayerNorm2d
/// on NCHW is outer = N, dim = C, inner = H·W. x, y: [outer, dim, inner]; weight, bias: \[dim\].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormParams {
    pub outer: usize,
    pub dim: usize,
    pub inner: usize,
    pub eps: f32,
}

impl LayerNormParams {
    pub fn len(&self) -> usize {
        self.outer * self.dim * self.inner
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
