//! One description of each op's shapes and parameters, shared by every backend.
//! All tensors are contiguous, row-major, NCHW (or [N, F] for linear layers).

/// 2-D convolution without groups or dilation (all that VGG, ResNet and the seed CNN use).
/// x: [n, c_in, h_in, w_in], weight: [c_out, c_in, k_h, k_w], bias: [c_out], y: [n, c_out, h_out, w_out].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub n: usize,
    pub c_in: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_out: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl Conv2dParams {
    pub fn h_out(&self) -> usize {
        (self.h_in + 2 * self.pad_h - self.k_h) / self.stride_h + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w_in + 2 * self.pad_w - self.k_w) / self.stride_w + 1
    }
    /// Rows of the im2col matrix: c_in · k_h · k_w.
    pub fn k_len(&self) -> usize {
        self.c_in * self.k_h * self.k_w
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.h_out() * self.w_out()
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.k_len()
    }
    /// True when the convolution is a plain matrix product over channels.
    pub fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_h == 0
            && self.pad_w == 0
    }
}

/// Max pooling with implicit -inf padding, floor mode, like `nn.MaxPool2d(ceil_mode=False)`.
/// x: [n, c, h_in, w_in], y and argmax: [n, c, h_out, w_out]; argmax holds the flat index
/// (iy * w_in + ix) of the first maximum of each window in row-major window order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool2dParams {
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
}

impl MaxPool2dParams {
    pub fn h_out(&self) -> usize {
        (self.h_in + 2 * self.pad_h - self.k_h) / self.stride_h + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w_in + 2 * self.pad_w - self.k_w) / self.stride_w + 1
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.h_out() * self.w_out()
    }
}

/// `nn.AdaptiveAvgPool2d`: output cell (i, j) averages input rows
/// floor(i·h_in/h_out) .. ceil((i+1)·h_in/h_out), and likewise for columns.
/// x: [n, c, h_in, w_in], y: [n, c, h_out, w_out].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptiveAvgPool2dParams {
    pub n: usize,
    pub c: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl AdaptiveAvgPool2dParams {
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h_in * self.w_in
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.h_out * self.w_out
    }
}

/// Start and end (exclusive) of adaptive-pooling window `i` along an axis.
pub fn adaptive_window(i: usize, len_in: usize, len_out: usize) -> (usize, usize) {
    let start = i * len_in / len_out;
    let end = ((i + 1) * len_in).div_ceil(len_out);
    (start, end)
}

/// Per-channel affine map y = x·scale[c] + shift[c]: eval-mode BatchNorm with its statistics
/// folded in. x, y: [n, c, hw], scale, shift: [c].
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

/// Fully connected layer y = x·Wᵀ + b. x: [n, in_f], weight: [out_f, in_f], bias: [out_f], y: [n, out_f].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearParams {
    pub n: usize,
    pub in_f: usize,
    pub out_f: usize,
}

/// The hyper-parameters of `torch.optim.SGD` that this project supports (dampening 0,
/// nesterov off, the defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// The fused Grad-CAM step. activation and gradient: [n, c, h, w]; cam: [n, out_h, out_w].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradCamParams {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// Which class of each image seeds a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassPick {
    /// The same class for every image.
    Fixed(usize),
    /// The class at this rank of each image's logits (0 = the top prediction), in the order of
    /// [`ranks_before`].
    Rank(usize),
}

/// The gradient that starts a backward pass: d(Σ_i logit[i, class_i]) / d logits, a one-hot
/// row per image, as pytorch-grad-cam's ClassifierOutputTarget. Computed on the device from
/// the logits there, so the backward pass follows the forward pass without a host round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassSeedParams {
    /// Images.
    pub n: usize,
    /// Classes.
    pub k: usize,
    pub pick: ClassPick,
}

/// Whether logit `a` (class `ia`) ranks before logit `b` (class `ib`): larger first, ties to
/// the lower class index (numpy's argmax picks the first maximum), NaN last. A strict total
/// order, so every backend finds the same class at each rank.
pub fn ranks_before(a: f32, ia: usize, b: f32, ib: usize) -> bool {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a > b || (a == b && ia < ib),
        (nan_a, nan_b) => nan_b && (!nan_a || ia < ib),
    }
}

/// `ranks_before` as an ordering of the class indices of logits `v`, for sorting.
pub fn rank_cmp(v: &[f32], a: usize, b: usize) -> std::cmp::Ordering {
    if ranks_before(v[a], a, v[b], b) {
        std::cmp::Ordering::Less
    } else if a == b {
        std::cmp::Ordering::Equal
    } else {
        std::cmp::Ordering::Greater
    }
}

/// The epsilon pytorch-grad-cam adds to the maximum when it normalizes a CAM.
pub const CAM_EPS: f32 = 1e-7;

/// Source coordinate and weights of bilinear sampling with half-pixel centers
/// (PyTorch `align_corners=False`, OpenCV `INTER_LINEAR`): returns (i0, i1, w1) so that
/// out = in[i0]·(1-w1) + in[i1]·w1.
pub fn bilinear_source(dst: usize, len_in: usize, len_out: usize) -> (usize, usize, f32) {
    let scale = len_in as f32 / len_out as f32;
    let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src as usize).min(len_in - 1);
    let i1 = (i0 + 1).min(len_in - 1);
    let w1 = if i0 == len_in - 1 {
        0.0
    } else {
        src - i0 as f32
    };
    (i0, i1, w1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order_is_strict_and_total() {
        let v = [
            0.5,
            f32::NAN,
            1.0,
            -0.0,
            0.0,
            1.0,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        // Larger first, ties to the lower index (-0.0 == 0.0), NaN after -inf.
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| rank_cmp(&v, a, b));
        assert_eq!(idx, [2, 5, 0, 3, 4, 6, 1, 7]);
        for (i, &x) in v.iter().enumerate() {
            assert!(!ranks_before(x, i, x, i), "irreflexive at {i}");
        }
    }
}
