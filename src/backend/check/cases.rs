//! The table: each op family's cases (odd shapes, strides, padding, batch > 1), its seed, and
//! one tolerance per op and precision, each stated once with its reason. Inputs are uniform in
//! [-1, 1] unless a family says otherwise; the seed starts the family's generator, which draws
//! the cases' inputs in table order.

use super::{Family, Precision, Tol};
use crate::ops::*;

/// The seed of a family's inputs.
pub fn seed(family: Family) -> u64 {
    match family {
        Family::Conv => 11,
        Family::ConvFused => 12,
        Family::Pool => 13,
        Family::Elementwise => 15,
        Family::Linear => 18,
        Family::GradCam => 19,
        Family::ClassSeed => 23,
        Family::ScoreCamMasks => 29,
        Family::SqueezeExcitation => 41,
        Family::Activation => 42,
        Family::Binary => 43,
        Family::StridedCopy => 46,
        Family::LayerNorm => 47,
    }
}

// Tolerances.

/// Convolutions (dense, grouped, the fused epilogue) in FP32: f32 sums of up to 1,260 products
/// in another order than the reference. atol 1e-5 + rtol 1e-4 covers the sums' rounding
/// (≈ √K·2⁻²⁴·Σ|terms|); `terms` 1e-6 covers outputs that cancel to near 0: the CPU's Winograd
/// F(4×4, 3×3) rounds at ~3e-7 of Σ|terms| (its transforms scale by up to 8 before the
/// cancellation), above 1e-5 + 1e-4·|ref| for a 20-channel conv's outputs near 0.03 whose terms
/// sum to ~45.
pub const CONV_FP32: Tol = Tol::new(1e-5, 1e-4).with_terms(1e-6);

/// Convolutions on TF32 tensor cores (CUDA conv v2 and v4; v3's 3xTF32 products are
/// FP32-accurate): each operand keeps 10 of 23 mantissa bits, a relative error of up to 2⁻¹⁰
/// when truncated, so a product is off by up to 2⁻⁹ ≈ 2e-3 of its magnitude; twice that of
/// Σ|terms| leaves room for the FP32 accumulation.
pub const CONV_TF32: Tol = Tol::new(1e-5, 1e-4).with_terms(4e-3);

/// Conv ops (conv2d, conv2d_grad_input, conv2d_fused) at the configuration's precision.
pub fn conv_tol(precision: Precision) -> Tol {
    match precision {
        Precision::Fp32 => CONV_FP32,
        Precision::Tf32Conv => CONV_TF32,
    }
}

/// The fused squeeze-excitation block and its separate ops, in FP32: f32 means of up to 8,827
/// pixels, then sums of up to 300 products in fc1/fc2, in another order than the reference.
pub const SQUEEZE_EXCITATION_FP32: Tol = Tol::new(1e-5, 1e-4);

/// Squeeze-excitation where fc1 and fc2 run as TF32 convs (the separate ops on CUDA conv v2,
/// v4): outputs x·gate lie in [-1, 1]; 1e-2 of that, the bound TF32 convs were held to before
/// the sum-of-terms rule (fc2's error reaches the output through the gate's slope ≤ 1/4).
pub const SQUEEZE_EXCITATION_TF32: Tol = Tol::new(1e-2, 0.0);

pub fn squeeze_excitation_tol(precision: Precision) -> Tol {
    match precision {
        Precision::Fp32 => SQUEEZE_EXCITATION_FP32,
        Precision::Tf32Conv => SQUEEZE_EXCITATION_TF32,
    }
}

/// A selection or a copy: max-pool and adaptive-max-pool values, ReLU and its gradient (dy or
/// 0), strided copies, class seeds (0s and 1s). Every backend gives the reference's f32 value.
pub const SELECTION: Tol = Tol::EXACT;

/// One f32 operation per element (add, the affine map and its gradient, broadcast add/mul
/// forward), or a sum of the few dy that chose an input (max-pool gradients, in the same order
/// as the reference; the inputs have many ties, so a different tie rule fails): the only
/// difference to f64 is a rounding or two.
pub const ONE_OP: Tol = Tol::new(1e-6, 1e-6);

/// Average pools (ceil mode, count_include_pad or not; adaptive): sums of ≤ 16 values and one
/// division.
pub const AVERAGE: Tol = Tol::new(1e-6, 1e-5);

/// The activation table, forward and input gradient: one transcendental (exp, erf, tanh) per
/// element. The WGSL erf is Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7, times |x| ≤ 12 in
/// gelu), exp is within a few ulp on lavapipe.
pub const ACTIVATION: Tol = Tol::new(2e-6, 1e-5);

/// Broadcast add/mul operand gradients: sums of up to 105 products in another order than the
/// CPU's blocks.
pub const BROADCAST_REDUCTION: Tol = Tol::new(1e-5, 1e-5);

/// Linear layers, forward and input gradient: f32 sums of up to 300 products in another order.
pub const LINEAR: Tol = Tol::new(1e-5, 1e-4);

/// LayerNorm: sequential f32 sums over dim ≤ 96 (the CPU sums pairwise), and the backward
/// pass's two means of products.
pub const LAYER_NORM: Tol = Tol::new(2e-5, 1e-4);

/// The fused CAM step, every combine, on outputs in [0, 1]: the GPU kernels sum in f32
/// (per-channel sums over h·w ≤ 72 pixels, then over C ≤ 300 channels), so the error is the f32
/// sums' rounding relative to the map's range. Measured on lavapipe: Mean 4e-7, Grad-CAM++
/// 1.1e-6 (2.5e-6 with |g| < 100 and negative activations), XGrad 1.6e-5 (Σ A near 0 for a
/// channel of mixed-sign activations amplifies the f32 sum's error), HiRes 4e-7, element-wise
/// 1e-6, LayerCAM 5e-7, FEM 7e-7, Weights 3e-7. Grad-CAM++'s α = g² / (2g² + Σ A·g³) has a pole
/// at g = -2/Σ A when Σ A < 0: a g that lands near it would exceed any f32 tolerance; these
/// seeds' do not.
pub const GRAD_CAM: Tol = Tol::new(1e-4, 0.0);

/// ScoreCAM's masked inputs (measured 1.2e-7): a four-tap interpolation, one normalization and
/// one product per element, in the same order as the CPU reference (an f32 one: the min-max
/// normalization of a nearly flat mask would magnify an f64 reference's differences); the
/// shader compiler may fuse multiply-adds.
pub const SCORE_CAM_MASKS: Tol = Tol::new(1e-6, 1e-6);

// Convolutions.

/// Dense convolutions, each checked with and without bias and for its input gradient: strided
/// and padded 3×3, pointwise, the 7×7 stem; several 64×64 tiles with K not a multiple of the
/// tile depth; several 128×128 tiles both ways (CUDA v3/v4), K = 171 and 1,260; an input
/// gradient with 140 input channels, strided; and [`epilogue_convs`].
pub fn dense_convs() -> Vec<Conv2dParams> {
    let dense = Conv2dParams::dense;
    let mut convs = vec![
        dense(2, 3, (11, 9), 5, (3, 3), (2, 2), (1, 1)),
        dense(3, 17, (5, 7), 33, (1, 1), (1, 1), (0, 0)),
        dense(2, 3, (19, 17), 8, (7, 7), (2, 2), (3, 3)),
        dense(2, 37, (13, 15), 70, (3, 3), (1, 1), (1, 1)),
        dense(1, 6, (8, 10), 9, (1, 1), (2, 2), (0, 0)),
        dense(2, 19, (9, 11), 150, (3, 3), (1, 1), (1, 1)),
        dense(2, 140, (7, 5), 20, (3, 3), (2, 2), (1, 1)),
        dense(2, 4, (6, 5), 3, (3, 3), (1, 1), (1, 1)),
    ];
    convs.extend(epilogue_convs());
    convs
}

/// Convolutions over the CPU kernel's paths, which tests/backends.rs also runs with every
/// fused epilogue: batch-parallel (Winograd for the first: 3×3, stride 1, ≥ 16 channels, 42
/// tiles), odd shapes and strides, a 5×5 and a 3×1 kernel, pointwise, several 64×64 GPU tiles.
pub fn epilogue_convs() -> Vec<Conv2dParams> {
    let dense = Conv2dParams::dense;
    vec![
        dense(2, 20, (13, 11), 24, (3, 3), (1, 1), (1, 1)),
        dense(2, 3, (7, 9), 4, (3, 3), (2, 2), (1, 1)),
        dense(3, 2, (5, 6), 3, (1, 1), (1, 1), (0, 0)),
        dense(2, 3, (9, 7), 5, (5, 5), (1, 1), (2, 2)),
        dense(2, 4, (6, 5), 3, (3, 1), (1, 1), (1, 0)),
        dense(2, 3, (5, 7), 2, (1, 1), (2, 2), (0, 0)),
        dense(2, 5, (11, 10), 70, (3, 3), (1, 1), (1, 1)),
        dense(3, 70, (6, 5), 9, (3, 3), (2, 2), (1, 1)),
    ]
}

/// A convolution with groups, dilation and per-side padding (top, left, bottom, right).
#[allow(clippy::too_many_arguments)]
fn general_conv(
    n: usize,
    c_in: usize,
    hw: (usize, usize),
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    (top, left, bottom, right): (usize, usize, usize, usize),
    (dilation_h, dilation_w): (usize, usize),
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        pad_h_end: bottom,
        pad_w_end: right,
        dilation_h,
        dilation_w,
        groups,
        ..Conv2dParams::dense(n, c_in, hw, c_out, k, stride, (top, left))
    }
}

/// Convolutions off the dense path (the "grouped" kernels), each checked like a dense one.
pub fn grouped_convs() -> Vec<Conv2dParams> {
    let c = general_conv;
    vec![
        // depthwise 3×3, stride 1 (MobileNet)
        c(2, 8, (9, 7), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        c(2, 6, (9, 7), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
        // depthwise 5×5 stride 2 with TF "same" asymmetric padding (EfficientNet-style)
        c(2, 6, (11, 10), 6, (5, 5), (2, 2), (1, 2, 2, 1), (1, 1), 6),
        c(2, 5, (11, 10), 5, (5, 5), (2, 2), (1, 2, 2, 1), (1, 1), 5),
        // grouped, dilated
        c(3, 6, (8, 9), 9, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 3),
        c(3, 4, (8, 9), 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2),
        // depthwise with a channel multiplier of 2 and a rectangular kernel, stride 2
        c(2, 5, (10, 9), 10, (3, 1), (2, 2), (1, 0, 1, 0), (1, 1), 5),
        // 3 groups, rectangular kernel, anisotropic stride (ResNeXt / RegNet-like)
        c(2, 6, (7, 8), 9, (3, 1), (1, 2), (1, 0, 1, 0), (1, 1), 3),
        // depthwise dilated 3, channel multiplier 2
        c(2, 5, (10, 9), 10, (3, 3), (1, 1), (3, 3, 3, 3), (3, 3), 5),
        // dense but asymmetric padding (nn.ZeroPad2d before a conv)
        c(2, 3, (7, 6), 4, (3, 3), (2, 2), (0, 0, 1, 1), (1, 1), 1),
        // the tiled kernels (v2): 3×3 tiles of 16×16 with partial edge tiles
        c(2, 8, (37, 35), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        // ConvNeXt's 7×7 on a 7×7 map: 5 planes per workgroup, the last group partial
        c(3, 7, (7, 7), 7, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 7),
        // stride 2, 5×5, odd sizes over several tiles
        c(2, 6, (35, 33), 6, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6),
        // RegNet-like groups of 4 channels over several tiles (v2 stages each channel)
        c(2, 8, (19, 18), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ]
}

/// The conv with its fused epilogue (BatchNorm, then the residual when `.0`, then the
/// activation) against the f64 ops one after another: with and without the residual, ReLU
/// (max(v, 0)) and the activations the families fuse (through the activation table), none.
pub fn conv_fused() -> (Conv2dParams, Vec<(bool, Option<Activation>)>) {
    use Activation::*;
    let p = Conv2dParams::dense(2, 21, (9, 7), 131, (3, 3), (1, 1), (1, 1));
    let epilogues = vec![
        (true, Some(Relu)),
        (false, Some(Relu)),
        (false, None),
        (false, Some(Silu)),
        (true, Some(Hardswish)),
        (false, Some(Relu6)),
        (false, Some(Gelu)),
    ];
    (p, epilogues)
}

/// The largest slope of the activations `conv_fused` applies (hardswish's, at 3): the factor
/// by which an activation can grow the conv's error.
pub const FUSED_ACTIVATION_SLOPE: f64 = 1.5;

// Pooling. Inputs of the ops that keep an argmax lie on a coarse grid (multiples of 0.5 in
// [-1, 1]): many ties, which must go to the first maximum.

/// Every pooling case, of every kind.
pub fn pools() -> Vec<PoolParams> {
    let max = max_pools().into_iter().map(PoolParams::Max);
    let avg = avg_pools().into_iter().map(PoolParams::Avg);
    let adaptive_avg = adaptive_avg_pools()
        .into_iter()
        .map(PoolParams::AdaptiveAvg);
    let adaptive_max = adaptive_max_pools()
        .into_iter()
        .map(PoolParams::AdaptiveMax);
    max.chain(avg)
        .chain(adaptive_avg)
        .chain(adaptive_max)
        .collect()
}

/// A pooling op's tolerances, forward and input gradient.
pub fn pool_tol(p: &PoolParams) -> (Tol, Tol) {
    match p {
        PoolParams::Max(_) | PoolParams::AdaptiveMax(_) => (SELECTION, ONE_OP),
        PoolParams::Avg(_) | PoolParams::AdaptiveAvg(_) => (AVERAGE, AVERAGE),
    }
}

/// Square max-pool windows: kernel k, stride s, padding pad.
fn max_pool(
    n: usize,
    c: usize,
    (h_in, w_in): (usize, usize),
    (k, s, pad): (usize, usize, usize),
    ceil_mode: bool,
) -> MaxPool2dParams {
    MaxPool2dParams {
        n,
        c,
        h_in,
        w_in,
        k_h: k,
        k_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: pad,
        pad_w: pad,
        ceil_mode,
    }
}

/// Values and argmax (checked through the gradient: a wrong index moves dy to another input).
/// The last two have ceil-mode windows that hang over the input's end (googlenet's,
/// squeezenet's pools).
fn max_pools() -> Vec<MaxPool2dParams> {
    vec![
        max_pool(2, 3, (11, 10), (3, 2, 1), false),
        max_pool(3, 2, (9, 7), (2, 2, 0), false),
        max_pool(1, 4, (6, 6), (3, 1, 1), false),
        max_pool(2, 3, (7, 9), (3, 2, 1), false),
        max_pool(3, 2, (8, 8), (2, 2, 0), false),
        max_pool(2, 2, (6, 7), (3, 1, 1), false),
        max_pool(2, 3, (11, 5), (2, 1, 0), false),
        max_pool(2, 3, (8, 11), (3, 2, 0), true),
        max_pool(3, 2, (7, 6), (2, 2, 1), true),
    ]
}

/// Square average-pool windows: kernel k, stride s, padding pad.
fn avg_pool(
    n: usize,
    c: usize,
    (h_in, w_in): (usize, usize),
    (k, s, pad): (usize, usize, usize),
    ceil_mode: bool,
    count_include_pad: bool,
) -> AvgPool2dParams {
    AvgPool2dParams {
        window: max_pool(n, c, (h_in, w_in), (k, s, pad), ceil_mode),
        count_include_pad,
    }
}

/// Ceil mode, with and without count_include_pad.
fn avg_pools() -> Vec<AvgPool2dParams> {
    vec![
        avg_pool(2, 3, (9, 7), (3, 2, 1), true, true),
        avg_pool(2, 3, (8, 9), (3, 1, 1), false, false),
        avg_pool(2, 3, (7, 7), (2, 2, 0), true, true),
        avg_pool(2, 3, (7, 9), (3, 2, 1), false, true),
        avg_pool(2, 3, (7, 9), (3, 2, 1), true, true),
        avg_pool(3, 2, (8, 7), (3, 1, 1), false, false),
        avg_pool(2, 2, (9, 8), (2, 2, 0), true, true),
        avg_pool(2, 3, (6, 5), (3, 2, 1), true, false),
        avg_pool(2, 2, (5, 6), (2, 1, 0), false, true),
    ]
}

fn adaptive(
    n: usize,
    c: usize,
    (h_in, w_in): (usize, usize),
    (h_out, w_out): (usize, usize),
) -> AdaptivePool2dParams {
    AdaptivePool2dParams {
        n,
        c,
        h_in,
        w_in,
        h_out,
        w_out,
    }
}

/// Shrinking, growing (overlapping windows), identity, global.
fn adaptive_avg_pools() -> Vec<AdaptivePool2dParams> {
    vec![
        adaptive(2, 3, (13, 11), (4, 3)),
        adaptive(2, 2, (5, 3), (7, 7)),
        adaptive(1, 3, (7, 7), (7, 7)),
        adaptive(2, 3, (7, 9), (3, 4)),
        adaptive(2, 2, (5, 5), (7, 7)),
        adaptive(3, 2, (6, 6), (1, 1)),
        adaptive(2, 3, (13, 11), (7, 7)),
        adaptive(2, 2, (3, 2), (7, 7)),
    ]
}

/// Shrinking, growing (overlapping windows), global; on the max pools' coarse grid (ties).
fn adaptive_max_pools() -> Vec<AdaptivePool2dParams> {
    vec![
        adaptive(2, 3, (7, 5), (3, 2)),
        adaptive(2, 3, (4, 5), (6, 7)),
        adaptive(2, 2, (4, 5), (6, 7)),
        adaptive(3, 2, (5, 9), (1, 1)),
    ]
}

// Elementwise.

/// Lengths of relu (and its gradient) and add: one element, a workgroup's worth minus one and
/// plus one, odd lengths.
pub const ELEMENTWISE_LENS: [usize; 7] = [1, 3, 2 * 3 * 7 * 5, 255, 257, 1001, 3 * 5 * 7 * 11 + 1];

/// The per-channel affine map (eval BatchNorm) and its input gradient; a 1-pixel plane.
pub fn channel_affines() -> Vec<ChannelAffineParams> {
    [(3, 5, 77), (2, 3, 35), (3, 5, 1), (2, 7, 13)]
        .into_iter()
        .map(|(n, c, hw)| ChannelAffineParams { n, c, hw })
        .collect()
}

/// Inputs of the activation table: every breakpoint exactly (−3, 0, 3, 6, hardtanh's bounds,
/// -0.0, tiny and large values), then `random` values uniform in ±`range`.
pub struct ActivationInputs {
    pub breakpoints: &'static [f32],
    pub random: usize,
    pub range: f32,
}

pub const ACTIVATION_INPUTS: [ActivationInputs; 2] = [
    ActivationInputs {
        breakpoints: &[
            -3.0, 0.0, 3.0, 6.0, -1.5, 2.0, -0.0, 1e-3, -1e-3, 20.0, -20.0,
        ],
        random: 3 * 7 * 5 * 2,
        range: 8.0,
    },
    ActivationInputs {
        breakpoints: &[-3.0, 0.0, 3.0, 6.0, -1.5, 2.0],
        random: 301,
        range: 12.0,
    },
];

/// Activation `act` over `len` elements: hardtanh on (-1.5, 2), leaky_relu slope 0.01, elu
/// alpha 1.3.
pub fn activation(act: Activation, len: usize) -> ActivationParams {
    let (alpha, beta) = match act {
        Activation::Hardtanh => (-1.5, 2.0),
        Activation::LeakyRelu => (0.01, 0.0),
        Activation::Elu => (1.3, 0.0),
        _ => (0.0, 0.0),
    };
    ActivationParams {
        act,
        alpha,
        beta,
        len,
    }
}

/// Broadcast add and mul, forward and the gradient of each operand the engine asks for (not
/// an add's output-shaped one): a squeeze-excitation gate, ConvNeXt's layer scale on NCHW and
/// on NHWC, both sides broadcast, same shapes, a scalar.
pub const BROADCASTS: [(&[usize], &[usize]); 8] = [
    (&[2, 5, 7, 3], &[2, 5, 1, 1]),
    (&[3, 7, 5, 6], &[3, 7, 1, 1]),
    (&[5, 1, 1], &[2, 5, 7, 3]),
    (&[7, 1, 1], &[2, 7, 4, 5]),
    (&[2, 3, 4, 5], &[5]),
    (&[2, 1, 4, 1], &[1, 3, 1, 5]),
    (&[3, 4, 5], &[3, 4, 5]),
    (&[1], &[2, 3, 5]),
];

/// (what, copy, source elements, destination elements) on a [2, 6, 5, 3] tensor: channels 2..5
/// of a concat's output written from a [2, 3, 5, 3] part, a chunk read out of it, NCHW → NHWC,
/// a channel shuffle with 2 groups ([N, 2, 3, H, W] → [N, 3, 2, H, W]).
pub fn strided_copies() -> Vec<(&'static str, StridedCopyParams, usize, usize)> {
    let whole = [2usize, 6, 5, 3];
    let len: usize = whole.iter().product();
    vec![
        (
            "concat part",
            StridedCopyParams::block(&whole, 1, 2, 3, true),
            2 * 3 * 5 * 3,
            len,
        ),
        (
            "chunk",
            StridedCopyParams::block(&whole, 1, 1, 4, false),
            len,
            2 * 4 * 5 * 3,
        ),
        (
            "permute NHWC",
            StridedCopyParams::permute(&whole, &[0, 2, 3, 1]),
            len,
            len,
        ),
        (
            "channel shuffle",
            StridedCopyParams::permute(&[2, 2, 3, 5, 3], &[0, 2, 1, 3, 4]),
            len,
            len,
        ),
    ]
}

/// Linear layers, each with and without bias and for its input gradient: batches below and
/// above the kernels' group of 8 images, one input feature, and channels-last Linears
/// (ConvNeXt: N·H·W rows; the one-invocation-per-output kernel on wgpu, row blocks on the CPU).
pub fn linears() -> Vec<LinearParams> {
    [
        (3, 37, 19),
        (11, 300, 70),
        (9, 65, 5),
        (3, 37, 11),
        (2, 300, 5),
        (5, 1, 3),
        (2 * 7 * 5, 24, 40),
        (2 * 23 * 13, 19, 33),
    ]
    .into_iter()
    .map(|(n, in_f, out_f)| LinearParams { n, in_f, out_f })
    .collect()
}

/// LayerNorm over NHWC channels (nn.LayerNorm, inner 1) and NCHW channels (LayerNorm2d, inner
/// H·W), and one whose inputs are offset by 5 (a mean far from 0).
pub fn layer_norms() -> Vec<(LayerNormParams, f32)> {
    [(2 * 5 * 3, 96, 1, 0.0), (2, 20, 35, 0.0), (3, 7, 9, 5.0)]
        .into_iter()
        .map(|(outer, dim, inner, offset)| {
            let p = LayerNormParams {
                outer,
                dim,
                inner,
                eps: 1e-6,
            };
            (p, offset)
        })
        .collect()
}

/// The squeeze-excitation block (pool, fc1, activation, fc2, gate, multiply), fused and as
/// the separate ops: few channels (threads share a channel's mean), more channels and more
/// hidden units than a block has threads, a 1×1 map, large maps, one image; ReLU (the fused
/// convs' rule) and table rows.
pub fn squeeze_excitations() -> Vec<SqueezeExciteParams> {
    use Activation::*;
    let act = |act, len| ActivationParams {
        act,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    [
        (3, 5, (13, 11), 3, Relu, Sigmoid),
        (3, 5, (7, 9), 3, Relu, Sigmoid),
        (2, 300, (3, 5), 7, Silu, Hardsigmoid),
        (2, 130, (1, 1), 260, Hardswish, Sigmoid),
        (2, 40, (28, 28), 10, Relu, Hardsigmoid),
        (2, 24, (97, 91), 6, Relu, Hardsigmoid),
        (1, 72, (5, 5), 24, Gelu, Sigmoid),
    ]
    .into_iter()
    .map(|(n, c, (h, w), squeeze, a, g)| SqueezeExciteParams {
        n,
        c,
        h,
        w,
        squeeze,
        act: act(a, n * squeeze),
        gate: act(g, n * c),
    })
    .collect()
}

/// The class seed of the backward pass, on logits drawn from {±1, ±0.5, ±0}: many ties (and
/// -0.0 next to 0.0), so a different tie rule fails. A fixed class, the first, a middle and
/// the last rank.
pub fn class_seeds() -> Vec<ClassSeedParams> {
    let mut cases = vec![];
    for (n, k) in [(3, 10), (2, 1000), (3, 7), (2, 300), (5, 1)] {
        let mut picks = vec![
            ClassPick::Fixed(k - 1),
            ClassPick::Rank(0),
            ClassPick::Rank(k / 2),
            ClassPick::Rank(k - 1),
        ];
        if k > 7 {
            picks.extend([ClassPick::Fixed(7), ClassPick::Rank(5)]);
        }
        cases.extend(picks.into_iter().map(|pick| ClassSeedParams { n, k, pick }));
    }
    cases
}

/// How a CAM case's inputs are drawn: activations like a layer's (a quarter exact zeros, the
/// rest in [-0.5, 1), or after a ReLU when `relu`), gradients with exact zeros (Grad-CAM++'s
/// g = 0 branch) in [-1, 1) times `scale`, or [N, C] weights for `Weights`. `constant`: every
/// channel constant over its pixels, so every pixel's map is the same sum in the same order: a
/// constant CAM, normalized with the 1e-7 epsilon alone.
#[derive(Clone, Copy, Debug)]
pub struct CamInputs {
    pub relu: bool,
    pub constant: bool,
    pub scale: f32,
}

/// Every combine, normalized again after resizing and not (as for the per-layer CAMs of
/// several layers): upsampling by odd factors, C above one workgroup's threads (300), same
/// size, a 1×1 map (a constant CAM), downsampling, constant channels, ResNet's 7×7 → 224×224.
/// Then Grad-CAM++ with gradients scaled up (|g| < 1, 10, 100) on activations after a ReLU
/// and with negative values, which reach its pole for more channels.
pub fn grad_cams() -> Vec<(GradCamParams, CamInputs)> {
    let inputs = |relu, constant, scale| CamInputs {
        relu,
        constant,
        scale,
    };
    let layer = inputs(false, false, 1.0);
    let shapes = [
        ([3, 5, 4, 3], (13, 11), layer),
        ([2, 300, 7, 7], (32, 29), layer),
        ([2, 4, 5, 6], (5, 6), layer),
        ([2, 3, 1, 1], (5, 4), layer),
        ([2, 6, 9, 8], (4, 3), layer),
        ([2, 7, 5, 4], (9, 10), inputs(false, true, 1.0)),
        ([3, 13, 5, 7], (29, 31), inputs(true, false, 1.0)),
        ([2, 40, 7, 7], (224, 224), inputs(true, false, 1.0)),
        ([2, 3, 4, 3], (9, 8), inputs(true, true, 1.0)),
    ];
    let mut cases = vec![];
    for combine in CamCombine::ALL {
        for renormalize in [true, false] {
            for (shape, (out_h, out_w), inputs) in shapes {
                let p = GradCamParams {
                    renormalize,
                    ..GradCamParams::new(&shape, out_h, out_w, combine)
                };
                cases.push((p, inputs));
            }
        }
    }
    for relu in [true, false] {
        for scale in [1.0, 10.0, 100.0] {
            for (shape, (out_h, out_w)) in [([3, 5, 4, 3], (13, 11)), ([2, 300, 7, 7], (32, 29))] {
                let p = GradCamParams::new(&shape, out_h, out_w, CamCombine::PlusPlus);
                cases.push((p, inputs(relu, false, scale)));
            }
        }
    }
    cases
}

/// ScoreCAM's masked inputs: odd upsampling of the last image of a batch, a 1×1 map and one
/// output pixel (constant masks: zeros), the same size with C = 300, downsampling, ResNet's
/// 7×7 → 224×224. Activations with zeros and negative values; the first mask's channel is 0
/// (a zero mask).
pub fn score_cam_masks() -> Vec<ScoreMaskParams> {
    [
        (1, 2, 5, 9, 7, 7, 3, 33, 29),
        (0, 0, 4, 4, 1, 1, 3, 5, 4),
        (2, 290, 10, 300, 5, 6, 3, 5, 6),
        (0, 3, 3, 8, 4, 3, 1, 1, 1),
        (0, 0, 3, 3, 9, 8, 3, 4, 3),
        (1, 0, 2, 2, 7, 7, 3, 224, 224),
    ]
    .into_iter()
    .map(
        |(image, c0, count, c, h, w, in_c, out_h, out_w)| ScoreMaskParams {
            image,
            c0,
            count,
            c,
            h,
            w,
            in_c,
            out_h,
            out_w,
        },
    )
    .collect()
}
