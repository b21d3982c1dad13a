//! One description of each op's shapes and parameters, shared by every backend, one file per
//! op family. All tensors are contiguous and row-major: NCHW, [N, F] for linear layers, or
//! NHWC after a permute (ConvNeXt).

mod activation;
mod binary;
mod conv;
mod layout;
mod norm;
mod pool;
mod squeeze_excitation;

pub use activation::*;
pub use binary::*;
pub use conv::*;
pub use layout::*;
pub use norm::*;
pub use pool::*;
pub use squeeze_excitation::*;

/// Fully connected layer y = x·Wᵀ + b. x: [n, in_f], weight: [out_f, in_f], bias: \[out_f\], y: [n, out_f].
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

/// The fused CAM step: the target's activation A [n, c, h, w] and a second operand (the
/// gradient g [n, c, h, w], or channel weights [n, c] for `CamCombine::Weights`) → the map of
/// `combine`, then the tail every pytorch-grad-cam method shares: ReLU, min-max
/// normalization, bilinear resizing to [out_h, out_w], and (with `renormalize`) min-max
/// normalization again. cam: [n, out_h, out_w].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradCamParams {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub combine: CamCombine,
    /// Normalize again after resizing (a single layer's CAM); off for the per-layer CAMs of
    /// several layers, which are averaged first and normalized once.
    pub renormalize: bool,
}

impl GradCamParams {
    /// Grad-CAM of one layer, normalized after resizing.
    pub fn new(shape: &[usize], out_h: usize, out_w: usize, combine: CamCombine) -> Self {
        GradCamParams {
            n: shape[0],
            c: shape[1],
            h: shape[2],
            w: shape[3],
            out_h,
            out_w,
            combine,
            renormalize: true,
        }
    }

    /// Elements of the second operand.
    pub fn second_len(&self) -> usize {
        match self.combine {
            CamCombine::Weights => self.n * self.c,
            _ => self.n * self.c * self.h * self.w,
        }
    }
}

/// How the fused CAM step makes the map from A and g (pytorch-grad-cam 1.5's formulas;
/// Σ_c over channels, Σ_ij over the layer's pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CamCombine {
    /// Grad-CAM: w_c = mean_ij g; map = Σ_c w_c·A_c.
    Mean,
    /// Grad-CAM++: α = g² / (2g² + Σ_ij A · g³ + 1e-6), 0 where g = 0; w_c = Σ_ij ReLU(g)·α.
    PlusPlus,
    /// XGrad-CAM: w_c = Σ_ij g·A / (Σ_ij A + 1e-7).
    XGrad,
    /// HiResCAM: map = Σ_c g ⊙ A.
    HiRes,
    /// Grad-CAM element-wise: map = Σ_c ReLU(g ⊙ A).
    ElementWise,
    /// LayerCAM: map = Σ_c ReLU(g) ⊙ A.
    Layer,
    /// FEM (gradient-free; g is not read): w_c = mean_ij [A > mean_ij A + 2·std_ij A].
    Fem,
    /// Channel weights computed elsewhere (ScoreCAM, AblationCAM, random), g: [n, c];
    /// with c = 1 and a weight of 1, a map computed elsewhere (EigenCAM).
    Weights,
}

impl CamCombine {
    pub const ALL: [CamCombine; 8] = [
        CamCombine::Mean,
        CamCombine::PlusPlus,
        CamCombine::XGrad,
        CamCombine::HiRes,
        CamCombine::ElementWise,
        CamCombine::Layer,
        CamCombine::Fem,
        CamCombine::Weights,
    ];

    /// The number the GPU kernels switch on.
    pub fn code(self) -> u32 {
        Self::ALL.iter().position(|&c| c == self).expect("listed") as u32
    }
}

/// FEM's threshold: k standard deviations above the mean (pytorch-grad-cam's default k = 2).
pub const FEM_K: f64 = 2.0;
/// Grad-CAM++'s epsilon in α's denominator.
pub const PLUS_PLUS_EPS: f64 = 1e-6;
/// XGrad-CAM's epsilon in the activation sum.
pub const XGRAD_EPS: f64 = 1e-7;

/// ScoreCAM's masked inputs for one image (pytorch-grad-cam's ScoreCAM): channels
/// c0 .. c0 + count of image `image` of the activation A [n, c, h, w], each upsampled to
/// [out_h, out_w] bilinearly with align_corners=True (`nn.UpsamplingBilinear2d`), min-max
/// normalized as (m - min) / (max - min + 1e-8) over the upsampled mask, times the image
/// x [in_c, out_h, out_w] (the mask broadcast over its channels) → [count, in_c, out_h, out_w].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScoreMaskParams {
    /// The image of the activation batch whose channels are the masks.
    pub image: usize,
    /// The first channel, and how many masks (the batch of masked inputs).
    pub c0: usize,
    pub count: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// The image's channels (3 for RGB) and size.
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ScoreMaskParams {
    /// Elements of the activation the op reads from: images 0 ..= image.
    pub fn activation_len(&self) -> usize {
        (self.image + 1) * self.c * self.h * self.w
    }

    /// Elements of the image x.
    pub fn x_len(&self) -> usize {
        self.in_c * self.out_h * self.out_w
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.count * self.x_len()
    }

    /// Why an image of `x_len` and an activation of `activation_len` elements do not fit these
    /// parameters, if they do not (each backend makes it its error).
    pub fn check(&self, x_len: usize, activation_len: usize) -> std::result::Result<(), String> {
        if self.c0 + self.count > self.c || self.h * self.w == 0 || self.out_h * self.out_w == 0 {
            return Err(format!(
                "score_cam_masks {self:?}: channels {}..{} of {}, or an empty size",
                self.c0,
                self.c0 + self.count,
                self.c
            ));
        }
        for (what, len, need) in [
            ("image", x_len, self.x_len()),
            ("activation", activation_len, self.activation_len()),
        ] {
            if len < need {
                return Err(format!(
                    "score_cam_masks {what}: buffer of {len} elements, {self:?} needs {need}"
                ));
            }
        }
        Ok(())
    }
}

/// ScoreCAM's epsilon in its mask normalization.
pub const SCORE_MASK_EPS: f32 = 1e-8;

/// Source coordinate and weights of bilinear sampling with align_corners=True
/// (`nn.UpsamplingBilinear2d`): returns (i0, i1, w1) so that out = in\[i0\]·(1-w1) + in\[i1\]·w1.
pub fn align_corners_source(dst: usize, len_in: usize, len_out: usize) -> (usize, usize, f32) {
    let s = dst as f32 * align_corners_scale(len_in, len_out);
    let i0 = (s as usize).min(len_in - 1);
    let i1 = (i0 + 1).min(len_in - 1);
    (i0, i1, s - i0 as f32)
}

/// (len_in - 1) / (len_out - 1) in f32 (0 for one output pixel): the step of align_corners=True,
/// computed once on the host for the GPU kernels exactly as here.
pub fn align_corners_scale(len_in: usize, len_out: usize) -> f32 {
    if len_out > 1 {
        (len_in - 1) as f32 / (len_out - 1) as f32
    } else {
        0.0
    }
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
/// out = in\[i0\]·(1-w1) + in\[i1\]·w1.
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
