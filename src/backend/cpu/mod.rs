//! The pure-Rust CPU backend: the correctness oracle for every other backend, and a fast
//! engine in its own right (im2col + a BLIS-style matrix product, threads via rayon).
//! Kernels are generic over f32/f64 so that their backward passes can be checked against
//! finite differences in f64.

pub mod activation;
pub mod binary;
pub mod cam;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod grouped_conv;
pub mod layer_norm;
pub mod layout;
pub mod linear;
pub mod matmul;
mod pages;
pub mod pool;
pub mod real;
pub mod simd;
pub mod training;
pub mod weight_grad;
pub mod winograd;

use super::{Backend, ConvEpilogue, TrainBackend};
use crate::error::Result;
use crate::ops::*;

/// The CPU backend. With `poison`, every output buffer starts as NaN, so a kernel that fails to
/// write an element is caught by the tests.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    pub poison: bool,
}

impl CpuBackend {
    fn out(&self, len: usize) -> Vec<f32> {
        vec![if self.poison { f32::NAN } else { 0.0 }; len]
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let mut y = self.out(p.output_len());
        let b = bias.map(|b| b.as_slice());
        if p.is_dense() {
            conv::conv2d_forward(p, x, w, b, &mut y);
        } else {
            grouped_conv::conv2d_forward(p, x, w, b, &mut y);
        }
        Ok(y)
    }

    fn conv2d_fused(
        &self,
        p: &Conv2dParams,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        e: &ConvEpilogue<'_, Vec<f32>>,
    ) -> Result<Vec<f32>> {
        if !p.is_dense() {
            return super::conv2d_then_epilogue(self, p, x, w, bias, e);
        }
        let mut y = self.out(p.output_len());
        let epi = epilogue::Epilogue {
            scale: e.scale,
            shift: e.shift,
            residual: e.residual.map(|r| r.as_slice()),
            relu: e.relu,
        };
        let b = bias.map(|b| b.as_slice());
        conv::conv2d_forward_fused(p, x, w, b, Some(epi), &mut y);
        Ok(y)
    }

    fn conv2d_grad_input(&self, p: &Conv2dParams, dy: &Vec<f32>, w: &Vec<f32>) -> Result<Vec<f32>> {
        let mut dx = self.out(p.input_len());
        if p.is_dense() {
            conv::conv2d_backward_input(p, dy, w, &mut dx);
        } else {
            grouped_conv::conv2d_backward_input(p, dy, w, &mut dx);
        }
        Ok(dx)
    }

    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        shift: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut y = self.out(p.len());
        elementwise::channel_affine_forward(p, x, scale, shift, &mut y);
        Ok(y)
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &Vec<f32>,
        scale: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.len());
        elementwise::channel_affine_backward_input(p, dy, scale, &mut dx);
        Ok(dx)
    }

    fn relu(&self, x: &Vec<f32>, len: usize) -> Result<Vec<f32>> {
        let mut y = self.out(len);
        elementwise::relu_forward(&x[..len], &mut y);
        Ok(y)
    }

    fn relu_grad_input(&self, y: &Vec<f32>, dy: &Vec<f32>, len: usize) -> Result<Vec<f32>> {
        let mut dx = self.out(len);
        elementwise::relu_backward_input(&y[..len], &dy[..len], &mut dx);
        Ok(dx)
    }

    fn max_pool2d(&self, p: &MaxPool2dParams, x: &Vec<f32>) -> Result<(Vec<f32>, Vec<u32>)> {
        let mut y = self.out(p.output_len());
        let mut idx = vec![u32::MAX; p.output_len()];
        pool::max_pool2d_forward(p, x, &mut y, &mut idx);
        Ok((y, idx))
    }

    fn max_pool2d_grad_input(
        &self,
        p: &MaxPool2dParams,
        argmax: &Vec<u32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.input_len());
        pool::max_pool2d_backward_input(p, argmax, dy, &mut dx);
        Ok(dx)
    }

    fn adaptive_avg_pool2d(&self, p: &AdaptivePool2dParams, x: &Vec<f32>) -> Result<Vec<f32>> {
        let mut y = self.out(p.output_len());
        pool::adaptive_avg_pool2d_forward(p, x, &mut y);
        Ok(y)
    }

    fn adaptive_avg_pool2d_grad_input(
        &self,
        p: &AdaptivePool2dParams,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.input_len());
        pool::adaptive_avg_pool2d_backward_input(p, dy, &mut dx);
        Ok(dx)
    }

    fn add(&self, a: &Vec<f32>, b: &Vec<f32>, len: usize) -> Result<Vec<f32>> {
        let mut y = self.out(len);
        elementwise::add(&a[..len], &b[..len], &mut y);
        Ok(y)
    }

    fn linear(
        &self,
        p: &LinearParams,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let mut y = self.out(p.n * p.out_f);
        linear::linear_forward(p, x, w, bias.map(|b| b.as_slice()), &mut y);
        Ok(y)
    }

    fn linear_grad_input(&self, p: &LinearParams, dy: &Vec<f32>, w: &Vec<f32>) -> Result<Vec<f32>> {
        let mut dx = self.out(p.n * p.in_f);
        linear::linear_backward_input(p, dy, w, &mut dx);
        Ok(dx)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(self.out(len))
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn activation(&self, p: &ActivationParams, x: &Vec<f32>) -> Result<Vec<f32>> {
        let mut y = self.out(p.len);
        activation::activation_forward(p, &x[..p.len], &mut y);
        Ok(y)
    }

    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &Vec<f32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.len);
        activation::activation_backward_input(p, &saved[..p.len], &dy[..p.len], &mut dx);
        Ok(dx)
    }

    fn binary(&self, p: &BinaryParams, a: &Vec<f32>, b: &Vec<f32>) -> Result<Vec<f32>> {
        let mut y = self.out(p.len());
        binary::binary_forward(p, a, b, &mut y);
        Ok(y)
    }

    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.operand(operand).iter().product());
        binary::binary_backward_input(p, operand, dy, a, b, &mut dx);
        Ok(dx)
    }

    fn avg_pool2d(&self, p: &AvgPool2dParams, x: &Vec<f32>) -> Result<Vec<f32>> {
        let mut y = self.out(p.output_len());
        pool::avg_pool2d_forward(p, x, &mut y);
        Ok(y)
    }

    fn avg_pool2d_grad_input(&self, p: &AvgPool2dParams, dy: &Vec<f32>) -> Result<Vec<f32>> {
        let mut dx = self.out(p.input_len());
        pool::avg_pool2d_backward_input(p, dy, &mut dx);
        Ok(dx)
    }

    fn adaptive_max_pool2d(
        &self,
        p: &AdaptivePool2dParams,
        x: &Vec<f32>,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let mut y = self.out(p.output_len());
        let mut idx = vec![u32::MAX; p.output_len()];
        pool::adaptive_max_pool2d_forward(p, x, &mut y, &mut idx);
        Ok((y, idx))
    }

    fn adaptive_max_pool2d_grad_input(
        &self,
        p: &AdaptivePool2dParams,
        argmax: &Vec<u32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.input_len());
        pool::adaptive_max_pool2d_backward_input(p, argmax, dy, &mut dx);
        Ok(dx)
    }

    fn strided_copy(
        &self,
        p: &StridedCopyParams,
        src: &Vec<f32>,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        layout::strided_copy(p, src, dst);
        Ok(())
    }

    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut y = self.out(p.len());
        layer_norm::layer_norm_forward(p, x, weight, bias, &mut y);
        Ok(y)
    }

    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dx = self.out(p.len());
        layer_norm::layer_norm_backward_input(p, x, weight, dy, &mut dx);
        Ok(dx)
    }

    fn dropout(&self, x: &Vec<f32>, mask: &Vec<f32>, len: usize) -> Result<Vec<f32>> {
        let mut y = self.out(len);
        training::dropout_scaled(&x[..len], &mask[..len], &mut y);
        Ok(y)
    }

    fn class_seed(&self, p: &ClassSeedParams, logits: &Vec<f32>) -> Result<Vec<f32>> {
        let mut seed = self.out(p.n * p.k);
        cam::class_seed(p, logits, &mut seed);
        Ok(seed)
    }

    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &Vec<f32>,
        gradient: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut cam = self.out(p.n * p.out_h * p.out_w);
        cam::grad_cam(p, activation, gradient, &mut cam);
        Ok(cam)
    }

    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &Vec<f32>,
        activation: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        p.check(x.len(), activation.len())
            .map_err(|reason| crate::error::Error::Backend {
                backend: self.name(),
                reason,
            })?;
        let mut out = self.out(p.output_len());
        cam::score_cam_masks(p, x, activation, &mut out);
        Ok(out)
    }
}

impl TrainBackend for CpuBackend {
    fn conv2d_grad_weight(
        &self,
        p: &Conv2dParams,
        x: &Vec<f32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dw = self.out(p.weight_len());
        if p.is_dense() {
            weight_grad::conv2d_backward_weight(p, x, dy, &mut dw);
        } else {
            grouped_conv::conv2d_backward_weight(p, x, dy, &mut dw);
        }
        Ok(dw)
    }

    fn conv2d_grad_bias(&self, p: &Conv2dParams, dy: &Vec<f32>) -> Result<Vec<f32>> {
        let mut db = self.out(p.c_out);
        weight_grad::conv2d_backward_bias(p, dy, &mut db);
        Ok(db)
    }

    fn linear_grad_weight(
        &self,
        p: &LinearParams,
        x: &Vec<f32>,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        let mut dw = self.out(p.out_f * p.in_f);
        weight_grad::linear_backward_weight(p, x, dy, &mut dw);
        Ok(dw)
    }

    fn linear_grad_bias(&self, p: &LinearParams, dy: &Vec<f32>) -> Result<Vec<f32>> {
        let mut db = self.out(p.out_f);
        weight_grad::linear_backward_bias(p, dy, &mut db);
        Ok(db)
    }

    fn sgd_step(
        &self,
        s: &SgdParams,
        w: &mut Vec<f32>,
        grad: &Vec<f32>,
        velocity: &mut Option<Vec<f32>>,
        len: usize,
    ) -> Result<()> {
        // training::sgd_step's "no buffer yet" is an empty vector.
        let mut v = velocity.take().unwrap_or_default();
        training::sgd_step(s, &mut w[..len], &grad[..len], &mut v);
        if !v.is_empty() {
            *velocity = Some(v);
        }
        Ok(())
    }
}
