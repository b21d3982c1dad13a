//! The backend trait: every op of the engine, forward and input-gradient backward, on device
//! buffers. `cpu` is the reference implementation; GPU backends implement the same trait and
//! are checked against it.

pub mod cpu;
pub mod cuda;

use crate::error::Result;
use crate::ops::*;

pub trait Backend {
    /// A device buffer of f32.
    type Buf;
    /// A device buffer of u32 (max-pool argmax).
    type Idx;

    fn name(&self) -> String;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;

    /// x: [N, Cin, H, W], w: [Cout, Cin, kh, kw], bias: [Cout] → [N, Cout, Ho, Wo].
    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
    ) -> Result<Self::Buf>;
    /// dy: [N, Cout, Ho, Wo], w → dx: [N, Cin, H, W].
    fn conv2d_grad_input(
        &self,
        p: &Conv2dParams,
        dy: &Self::Buf,
        w: &Self::Buf,
    ) -> Result<Self::Buf>;

    /// Eval-mode BatchNorm as y = x·scale[c] + shift[c].
    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &Self::Buf,
        scale: &Self::Buf,
        shift: &Self::Buf,
    ) -> Result<Self::Buf>;
    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &Self::Buf,
        scale: &Self::Buf,
    ) -> Result<Self::Buf>;

    fn relu(&self, x: &Self::Buf, len: usize) -> Result<Self::Buf>;
    /// dx = dy · [y > 0], y being the ReLU's output.
    fn relu_grad_input(&self, y: &Self::Buf, dy: &Self::Buf, len: usize) -> Result<Self::Buf>;

    fn max_pool2d(&self, p: &MaxPool2dParams, x: &Self::Buf) -> Result<(Self::Buf, Self::Idx)>;
    fn max_pool2d_grad_input(
        &self,
        p: &MaxPool2dParams,
        argmax: &Self::Idx,
        dy: &Self::Buf,
    ) -> Result<Self::Buf>;

    fn adaptive_avg_pool2d(&self, p: &AdaptiveAvgPool2dParams, x: &Self::Buf) -> Result<Self::Buf>;
    fn adaptive_avg_pool2d_grad_input(
        &self,
        p: &AdaptiveAvgPool2dParams,
        dy: &Self::Buf,
    ) -> Result<Self::Buf>;

    fn add(&self, a: &Self::Buf, b: &Self::Buf, len: usize) -> Result<Self::Buf>;
    /// acc += x, for gradients that reach a value along several paths.
    fn add_assign(&self, acc: &mut Self::Buf, x: &Self::Buf, len: usize) -> Result<()>;

    /// x: [N, in], w: [out, in], bias: [out] → [N, out].
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

    /// The fused Grad-CAM step: activation, gradient [N, C, h, w] → normalized CAMs [N, H, W].
    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &Self::Buf,
        gradient: &Self::Buf,
    ) -> Result<Self::Buf>;
}
