//! The backend traits: `Backend`, every op of the engine, forward and input-gradient backward,
//! on device buffers; `TrainBackend`, the extra ops of training (weight and bias gradients,
//! dropout, SGD). `cpu` is the reference implementation; GPU backends implement the same traits
//! and are checked against it (CPU and wgpu train; CUDA implements `Backend` only).

pub mod check;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use crate::error::{Error, Result};
use crate::ops::*;
use crate::storage::Storage;

/// Time spent per kernel, keyed by op kind ("conv2d", "conv2d.backward", …) or kernel name.
pub type Profile = std::collections::BTreeMap<String, (std::time::Duration, usize)>;

/// Convolution kernel variant of the GPU backends. All are kept side by side, tested against
/// the CPU oracle and selectable for benchmarking (`--conv-kernel`, `GRADCAM_CONV_KERNEL`);
/// wgpu has v1 and v2, CUDA all four.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// Plain FP32, one invocation per output (or input-gradient) element: the GPU reference.
    V1,
    /// Tiled implicit GEMM: 64×64 tiles in workgroup memory (wgpu, FP32); TF32 tensor-core
    /// `mma` with FP32 accumulation (CUDA, sm_80+).
    V2,
    /// CUDA, sm_80+: 128×128 tiles, operands prefetched into registers, hoisted index
    /// arithmetic, fused epilogue; products in 3xTF32 (FP32 accuracy on the tensor cores).
    V3,
    /// v3 with plain TF32 products: faster, ~1e-3 relative error.
    V4,
}

impl crate::named::Named for ConvKernel {
    const ALL: &'static [Self] = &[
        ConvKernel::V1,
        ConvKernel::V2,
        ConvKernel::V3,
        ConvKernel::V4,
    ];
    const WHAT: &'static str = "conv kernel";

    fn name(self) -> &'static str {
        self.label()
    }
}

impl ConvKernel {
    pub fn label(self) -> &'static str {
        match self {
            ConvKernel::V1 => "v1",
            ConvKernel::V2 => "v2",
            ConvKernel::V3 => "v3",
            ConvKernel::V4 => "v4",
        }
    }

    /// From `GRADCAM_CONV_KERNEL` (v1 … v4), if set.
    pub fn from_env() -> Result<Option<Self>> {
        use crate::named::Named;
        match std::env::var("GRADCAM_CONV_KERNEL") {
            Err(_) => Ok(None),
            Ok(v) => Self::parse(&v).map(Some).map_err(|_| {
                Error::Usage(format!(
                    "GRADCAM_CONV_KERNEL='{v}' is not a conv kernel; use v1, v2, v3 or v4"
                ))
            }),
        }
    }

    /// Whether the variant runs on tensor cores (CUDA sm_80+).
    pub fn tensor_cores(self) -> bool {
        matches!(self, ConvKernel::V2 | ConvKernel::V3 | ConvKernel::V4)
    }
}

/// What a fused convolution applies to its output, in this order, each step when given: eval
/// BatchNorm v·scale\[c\] + shift\[c\], then the residual added (a ResNet block's identity or
/// downsample branch), then the activation (any row of the table; `len` is the output's).
pub struct ConvEpilogue<'a, Buf> {
    /// (scale, shift), each \[Cout\]; None for a conv followed directly by its activation (VGG).
    pub bn: Option<(&'a Buf, &'a Buf)>,
    /// [N, Cout, Ho, Wo]
    pub residual: Option<&'a Buf>,
    pub act: Option<ActivationParams>,
}

/// [`Backend::conv2d_fused`] as the separate ops one after another: the default, and the
/// fallback of backends whose fused kernel only some conv variants have.
pub fn conv2d_then_epilogue<B: Backend>(
    b: &B,
    p: &Conv2dParams,
    x: &B::Buf,
    w: &B::Buf,
    bias: Option<&B::Buf>,
    e: &ConvEpilogue<'_, B::Buf>,
) -> Result<B::Buf> {
    let y = b.conv2d(p, x, w, bias)?;
    let a = ChannelAffineParams {
        n: p.n,
        c: p.c_out,
        hw: p.h_out() * p.w_out(),
    };
    let mut z = match e.bn {
        Some((scale, shift)) => b.channel_affine(&a, &y, scale, shift)?,
        None => y,
    };
    if let Some(r) = e.residual {
        z = b.add(&z, r, a.len())?;
    }
    match &e.act {
        // `relu`: the table's row (a NaN stays NaN) in its own kernel.
        Some(act) if act.act == Activation::Relu => z = b.relu(&z, a.len())?,
        Some(act) => z = b.activation(act, &z)?,
        None => {}
    }
    Ok(z)
}

/// [`Backend::channel_affine_fused`] as the separate ops one after another (strided copies
/// into the concatenation, the affine map, the activation): the default.
pub fn concat_then_affine<B: Backend>(
    b: &B,
    p: &ChannelAffineParams,
    pieces: &[(&B::Buf, usize)],
    scale: &B::Buf,
    shift: &B::Buf,
    act: Option<&ActivationParams>,
) -> Result<B::Buf> {
    let joined;
    let x = match pieces {
        [(x, _)] => *x,
        _ => {
            let whole = [p.n, p.c, p.hw];
            let mut out = b.alloc(p.len())?;
            let mut start = 0;
            for &(piece, c) in pieces {
                let copy = StridedCopyParams::block(&whole, 1, start, c, true);
                b.strided_copy(&copy, piece, &mut out)?;
                start += c;
            }
            joined = out;
            &joined
        }
    };
    let y = b.channel_affine(p, x, scale, shift)?;
    match act {
        Some(a) => b.activation(a, &y),
        None => Ok(y),
    }
}

/// [`Backend::squeeze_excitation`] as the separate ops one after another (the global pool,
/// fc1 with its activation, fc2 with the gate, the multiply): the default, the same calls the
/// walker makes for an unfused block's nodes. `fc1`, `fc2`: (weight, bias).
pub fn squeeze_excitation_separate<B: Backend>(
    b: &B,
    p: &SqueezeExciteParams,
    x: &B::Buf,
    fc1: (&B::Buf, &B::Buf),
    fc2: (&B::Buf, &B::Buf),
) -> Result<B::Buf> {
    let (s, _) = b.pool(&PoolParams::AdaptiveAvg(p.pool()), x, false)?;
    let with = |act| ConvEpilogue {
        bn: None,
        residual: None,
        act: Some(act),
    };
    let h = b.conv2d_fused(&p.fc1(), &s, fc1.0, Some(fc1.1), &with(p.act))?;
    let g = b.conv2d_fused(&p.fc2(), &h, fc2.0, Some(fc2.1), &with(p.gate))?;
    b.binary(&p.scale(), &g, x)
}

pub trait Backend {
    /// A device buffer of f32.
    type Buf;
    /// A device buffer of u32 (max-pool argmax).
    type Idx;

    fn name(&self) -> String;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// A weight, uploaded once per model: the CPU backend shares it instead of copying.
    fn upload_weight(&self, data: &Storage) -> Result<Self::Buf> {
        self.upload(data)
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;

    /// x: [N, Cin, H, W], w: [Cout, Cin, kh, kw], bias: \[Cout\] → [N, Cout, Ho, Wo].
    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
    ) -> Result<Self::Buf>;
    /// conv2d followed by its epilogue (see [`ConvEpilogue`]) in one call: the conv →
    /// BatchNorm (→ residual add) (→ ReLU) chains of VGG-BN and ResNet, for when their
    /// intermediate values are not needed. Same results as the ops one after another, which is
    /// what this default does; a backend overrides it to apply the epilogue while the conv's
    /// output is still in cache.
    fn conv2d_fused(
        &self,
        p: &Conv2dParams,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        e: &ConvEpilogue<'_, Self::Buf>,
    ) -> Result<Self::Buf>
    where
        Self: Sized,
    {
        conv2d_then_epilogue(self, p, x, w, bias, e)
    }

    /// dy: [N, Cout, Ho, Wo], w → dx: [N, Cin, H, W].
    fn conv2d_grad_input(
        &self,
        p: &Conv2dParams,
        dy: &Self::Buf,
        w: &Self::Buf,
    ) -> Result<Self::Buf>;

    /// Eval-mode BatchNorm as y = x·scale\[c\] + shift\[c\].
    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &Self::Buf,
        scale: &Self::Buf,
        shift: &Self::Buf,
    ) -> Result<Self::Buf>;
    /// act(x·scale\[c\] + shift\[c\]) where x is the concatenation along channels of `pieces`
    /// (each (buffer [N, C_k, H, W], C_k), ΣC_k = p.c; one piece is a plain BatchNorm):
    /// DenseNet's cat → BatchNorm → ReLU as one pass when the intermediate values are not
    /// needed. This default runs the ops one after another; the results must be the same.
    fn channel_affine_fused(
        &self,
        p: &ChannelAffineParams,
        pieces: &[(&Self::Buf, usize)],
        scale: &Self::Buf,
        shift: &Self::Buf,
        act: Option<&ActivationParams>,
    ) -> Result<Self::Buf>
    where
        Self: Sized,
    {
        concat_then_affine(self, p, pieces, scale, shift, act)
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &Self::Buf,
        scale: &Self::Buf,
    ) -> Result<Self::Buf>;

    fn relu(&self, x: &Self::Buf, len: usize) -> Result<Self::Buf>;
    /// dx = dy · \[y > 0\], y being the ReLU's output.
    fn relu_grad_input(&self, y: &Self::Buf, dy: &Self::Buf, len: usize) -> Result<Self::Buf>;

    /// The pooling family ([`PoolParams`]): y, and, where `argmax` is asked and the op keeps
    /// one ([`PoolParams::keeps_argmax`]), the index of each window's first maximum, which its
    /// backward reads. A pass whose backward does not cross the pool asks for none.
    fn pool(
        &self,
        p: &PoolParams,
        x: &Self::Buf,
        argmax: bool,
    ) -> Result<(Self::Buf, Option<Self::Idx>)>;
    /// dx of a pooling op from dy, with the forward's argmax for the ops that keep one
    /// (an error without it).
    fn pool_grad_input(
        &self,
        p: &PoolParams,
        argmax: Option<&Self::Idx>,
        dy: &Self::Buf,
    ) -> Result<Self::Buf>;

    fn add(&self, a: &Self::Buf, b: &Self::Buf, len: usize) -> Result<Self::Buf>;

    /// x: [N, in], w: [out, in], bias: \[out\] → [N, out].
    fn linear(
        &self,
        p: &LinearParams,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
    ) -> Result<Self::Buf>;
    fn linear_grad_input(
        &self,
        p: &LinearParams,
        dy: &Self::Buf,
        w: &Self::Buf,
    ) -> Result<Self::Buf>;
    /// act(linear(x)) in one call: ConvNeXt's Linear → GELU, for when the product's own
    /// output is not needed. This default runs the ops one after another; the results must
    /// be the same.
    fn linear_fused(
        &self,
        p: &LinearParams,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        act: &ActivationParams,
    ) -> Result<Self::Buf> {
        let y = self.linear(p, x, w, bias)?;
        self.activation(act, &y)
    }

    /// A squeeze-excitation block ([`SqueezeExciteParams`]) in one call, for when the values
    /// inside it are not needed: x [N, C, H, W] → x · gate(fc2(act(fc1(mean_hw(x))))); `fc1`,
    /// `fc2`: (weight, bias). This default runs the ops one after another; a backend overrides
    /// it to cut the launches (the results must agree within the ops' tolerances).
    fn squeeze_excitation(
        &self,
        p: &SqueezeExciteParams,
        x: &Self::Buf,
        fc1: (&Self::Buf, &Self::Buf),
        fc2: (&Self::Buf, &Self::Buf),
    ) -> Result<Self::Buf>
    where
        Self: Sized,
    {
        squeeze_excitation_separate(self, p, x, fc1, fc2)
    }

    /// The argmax a pooling op's backward reads (`PoolParams::keeps_argmax`), or the error
    /// of a caller that did not keep it.
    fn argmax<'a>(&self, p: &PoolParams, argmax: Option<&'a Self::Idx>) -> Result<&'a Self::Idx> {
        argmax.ok_or_else(|| Error::Backend {
            backend: self.name(),
            reason: format!("{}.backward needs the forward's argmax", p.name()),
        })
    }

    /// The error of an op this backend has no kernel for: names the op and the backend.
    fn unsupported<T>(&self, op: &str) -> Result<T> {
        Err(Error::Backend {
            backend: self.name(),
            reason: format!("op {op} has no kernel on this backend yet (the cpu backend runs it)"),
        })
    }

    /// A buffer of `len` elements whose contents the caller overwrites (a strided copy's
    /// destination).
    fn alloc(&self, len: usize) -> Result<Self::Buf> {
        let _ = len;
        self.unsupported("alloc")
    }

    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf> {
        let _ = len;
        self.unsupported("zeros")
    }

    /// An activation of the table (`crate::ops::Activation`). Backends without a kernel for a
    /// row run ReLU through `relu` and report the others.
    fn activation(&self, p: &ActivationParams, x: &Self::Buf) -> Result<Self::Buf> {
        match p.act {
            Activation::Relu => self.relu(x, p.len),
            a => self.unsupported(a.name()),
        }
    }
    /// dx = dy · f'(saved), `saved` being the activation's input or output (`Activation::saved`).
    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &Self::Buf,
        dy: &Self::Buf,
    ) -> Result<Self::Buf> {
        match p.act {
            Activation::Relu => self.relu_grad_input(saved, dy, p.len),
            a => self.unsupported(&format!("{}.backward", a.name())),
        }
    }

    /// a ∘ b with broadcasting ([`BinaryParams`]).
    fn binary(&self, p: &BinaryParams, a: &Self::Buf, b: &Self::Buf) -> Result<Self::Buf> {
        match p.op {
            BinaryOp::Add if p.is_same_shape() => self.add(a, b, p.len()),
            op => self.unsupported(&format!("{} with broadcasting", op.name())),
        }
    }
    /// The gradient of operand `operand` (0 = a, 1 = b), shaped like it: dy (times the other
    /// operand for mul), summed over the axes it was broadcast along. An add's gradient of an
    /// operand of the output's shape is dy itself and never reaches the backend.
    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
    ) -> Result<Self::Buf> {
        let _ = (operand, dy, a, b);
        self.unsupported(&format!("{}.backward", p.op.name()))
    }

    /// The layout primitive: copies `p.shape`'s elements from `src` into `dst`
    /// ([`StridedCopyParams`]); concat, slice, channel shuffle and permute are made of it.
    fn strided_copy(
        &self,
        p: &StridedCopyParams,
        src: &Self::Buf,
        dst: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (p, src, dst);
        self.unsupported("strided_copy (concat, slice, shuffle, permute)")
    }

    /// LayerNorm over one axis ([`LayerNormParams`]); weight, bias: \[dim\].
    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
    ) -> Result<Self::Buf> {
        let _ = (p, x, weight, bias);
        self.unsupported("layer_norm")
    }
    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &Self::Buf,
        weight: &Self::Buf,
        dy: &Self::Buf,
    ) -> Result<Self::Buf> {
        let _ = (p, x, weight, dy);
        self.unsupported("layer_norm.backward")
    }

    /// Training-mode dropout, y = x·mask, with the mask as scale factors: mask\[i\] is 0 (dropped:
    /// y\[i\] = 0 exactly, whatever x\[i\]) or the keep scale 1/(1-p). The mask is drawn on the host
    /// and uploaded, so every backend sees the same one. Also the input gradient: dx = dy·mask.
    /// x, mask: \[len\].
    fn dropout(&self, x: &Self::Buf, mask: &Self::Buf, len: usize) -> Result<Self::Buf> {
        let _ = (x, mask, len);
        self.unsupported("dropout (training)")
    }

    /// The fused Grad-CAM step: activation, gradient [N, C, h, w] → normalized CAMs [N, H, W].
    /// One-hot gradients [N, K] of the picked class of each image, from logits [N, K].
    fn class_seed(&self, p: &ClassSeedParams, logits: &Self::Buf) -> Result<Self::Buf>;

    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &Self::Buf,
        gradient: &Self::Buf,
    ) -> Result<Self::Buf>;

    /// ScoreCAM's masked inputs (`ScoreMaskParams`): one image x [in_c, H, W] times `count`
    /// channels of activation [N, C, h, w], upsampled and normalized → [count, in_c, H, W].
    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &Self::Buf,
        activation: &Self::Buf,
    ) -> Result<Self::Buf> {
        let _ = (p, x, activation);
        self.unsupported("score_cam_masks")
    }
}

/// The ops training needs beyond those of Grad-CAM: the weight and bias gradients of conv2d and
/// linear layers, and the SGD update (training-mode dropout is `Backend::dropout`). With
/// `Backend`'s forward and input-gradient ops they make a full training step
/// (`crate::train::executor`); the loss (softmax cross-entropy) is computed on the host from the
/// downloaded logits. Weight gradients are sums over the batch and pixels; every backend sums in
/// a fixed order (no atomics), so training is deterministic on each.
pub trait TrainBackend: Backend {
    /// x: [N, Cin, H, W], dy: [N, Cout, Ho, Wo] → dw: [Cout, Cin, kh, kw].
    fn conv2d_grad_weight(
        &self,
        p: &Conv2dParams,
        x: &Self::Buf,
        dy: &Self::Buf,
    ) -> Result<Self::Buf>;
    /// dy: [N, Cout, Ho, Wo] → db: \[Cout\].
    fn conv2d_grad_bias(&self, p: &Conv2dParams, dy: &Self::Buf) -> Result<Self::Buf>;

    /// x: [N, in], dy: [N, out] → dw: [out, in].
    fn linear_grad_weight(
        &self,
        p: &LinearParams,
        x: &Self::Buf,
        dy: &Self::Buf,
    ) -> Result<Self::Buf>;
    /// dy: [N, out] → db: \[out\].
    fn linear_grad_bias(&self, p: &LinearParams, dy: &Self::Buf) -> Result<Self::Buf>;

    /// One `torch.optim.SGD` step on a parameter tensor of `len` elements, in place and in
    /// PyTorch's order: g = grad + wd·w; with momentum, buf = g on the first step and
    /// buf = momentum·buf + g after; w -= lr·buf. `velocity` is the momentum buffer: None
    /// before the first step, created by it when momentum ≠ 0.
    fn sgd_step(
        &self,
        s: &SgdParams,
        w: &mut Self::Buf,
        grad: &Self::Buf,
        velocity: &mut Option<Self::Buf>,
        len: usize,
    ) -> Result<()>;
}
