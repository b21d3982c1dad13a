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
pub mod scratch;
pub mod simd;
pub mod squeeze_excitation;
pub mod training;
pub mod weight_grad;
pub mod winograd;

use super::{Backend, ConvEpilogue, TrainBackend};
use crate::error::Result;
use crate::ops::*;
use crate::storage::{Derived, Storage, RECYCLER};

/// The CPU backend. Every kernel writes every element of its output, which is a recycled
/// buffer holding an earlier op's values ([`RECYCLER`]); with `poison` it starts as NaN
/// instead, so a kernel that fails to write an element is caught by the tests.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    pub poison: bool,
}

impl CpuBackend {
    fn out(&self, len: usize) -> Vec<f32> {
        let mut v = RECYCLER.take(len);
        if self.poison {
            v.fill(f32::NAN);
        }
        v
    }
}

/// Winograd's filters for `p` when it applies, kept with the weight: computed once per model.
fn winograd_filters<'w>(p: &Conv2dParams, w: &'w Storage) -> Option<&'w [f32]> {
    winograd::applies(p).then(|| w.derived(Derived::Winograd, |w| winograd::filters(p, w)))
}

impl Backend for CpuBackend {
    type Buf = Storage;
    type Idx = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn upload(&self, data: &[f32]) -> Result<Storage> {
        Ok(data.to_vec().into())
    }

    fn upload_weight(&self, data: &Storage) -> Result<Storage> {
        Ok(data.clone())
    }

    fn download(&self, buf: &Storage) -> Result<Vec<f32>> {
        Ok(buf.to_vec())
    }

    fn conv2d(
        &self,
        p: &Conv2dParams,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
    ) -> Result<Storage> {
        let mut y = self.out(p.output_len());
        let b = bias.map(|b| &b[..]);
        if p.is_dense() {
            conv::conv2d_forward_with(p, x, w, winograd_filters(p, w), b, None, &mut y);
        } else {
            grouped_conv::conv2d_forward(p, x, w, b, &mut y);
        }
        Ok(y.into())
    }

    fn conv2d_fused(
        &self,
        p: &Conv2dParams,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        e: &ConvEpilogue<'_, Storage>,
    ) -> Result<Storage> {
        if !p.is_dense() {
            return super::conv2d_then_epilogue(self, p, x, w, bias, e);
        }
        let mut y = self.out(p.output_len());
        let epi = epilogue::Epilogue {
            bn: e.bn.map(|(s, t)| (&s[..], &t[..])),
            residual: e.residual.map(|r| &r[..]),
            act: e.act,
        };
        let b = bias.map(|b| &b[..]);
        conv::conv2d_forward_with(p, x, w, winograd_filters(p, w), b, Some(epi), &mut y);
        Ok(y.into())
    }

    fn conv2d_grad_input(&self, p: &Conv2dParams, dy: &Storage, w: &Storage) -> Result<Storage> {
        let mut dx = self.out(p.input_len());
        if p.is_dense() {
            let u = winograd::backward_as_forward(p).map(|_| {
                w.derived(Derived::WinogradTransposed, |w| {
                    winograd::backward_filters(p, w)
                })
            });
            conv::conv2d_backward_input_with(p, dy, w, u, &mut dx);
        } else {
            grouped_conv::conv2d_backward_input(p, dy, w, &mut dx);
        }
        Ok(dx.into())
    }

    fn channel_affine(
        &self,
        p: &ChannelAffineParams,
        x: &Storage,
        scale: &Storage,
        shift: &Storage,
    ) -> Result<Storage> {
        let mut y = self.out(p.len());
        elementwise::channel_affine_forward(p, x, scale, shift, &mut y);
        Ok(y.into())
    }

    fn channel_affine_fused(
        &self,
        p: &ChannelAffineParams,
        pieces: &[(&Storage, usize)],
        scale: &Storage,
        shift: &Storage,
        act: Option<&ActivationParams>,
    ) -> Result<Storage> {
        let mut y = self.out(p.len());
        let pieces: Vec<(&[f32], usize)> = pieces
            .iter()
            .map(|&(x, c)| (&x[..p.n * c * p.hw], c))
            .collect();
        elementwise::concat_affine_forward(p, &pieces, scale, shift, act, &mut y);
        Ok(y.into())
    }

    fn channel_affine_grad_input(
        &self,
        p: &ChannelAffineParams,
        dy: &Storage,
        scale: &Storage,
    ) -> Result<Storage> {
        let mut dx = self.out(p.len());
        elementwise::channel_affine_backward_input(p, dy, scale, &mut dx);
        Ok(dx.into())
    }

    fn relu(&self, x: &Storage, len: usize) -> Result<Storage> {
        let mut y = self.out(len);
        elementwise::relu_forward(&x[..len], &mut y);
        Ok(y.into())
    }

    fn relu_grad_input(&self, y: &Storage, dy: &Storage, len: usize) -> Result<Storage> {
        let mut dx = self.out(len);
        elementwise::relu_backward_input(&y[..len], &dy[..len], &mut dx);
        Ok(dx.into())
    }

    fn pool(
        &self,
        p: &PoolParams,
        x: &Storage,
        argmax: bool,
    ) -> Result<(Storage, Option<Vec<u32>>)> {
        let mut y = self.out(p.output_len());
        let mut idx = (argmax && p.keeps_argmax()).then(|| vec![u32::MAX; p.output_len()]);
        pool::forward(p, x, &mut y, idx.as_deref_mut());
        Ok((y.into(), idx))
    }

    fn pool_grad_input(
        &self,
        p: &PoolParams,
        argmax: Option<&Vec<u32>>,
        dy: &Storage,
    ) -> Result<Storage> {
        let argmax = match p.keeps_argmax() {
            true => Some(self.argmax(p, argmax)?.as_slice()),
            false => None,
        };
        let mut dx = self.out(p.input_len());
        pool::backward_input(p, argmax, dy, &mut dx);
        Ok(dx.into())
    }

    fn add(&self, a: &Storage, b: &Storage, len: usize) -> Result<Storage> {
        let mut y = self.out(len);
        elementwise::add(&a[..len], &b[..len], &mut y);
        Ok(y.into())
    }

    fn linear(
        &self,
        p: &LinearParams,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
    ) -> Result<Storage> {
        let mut y = self.out(p.n * p.out_f);
        linear::linear_forward(p, x, w, bias.map(|b| &b[..]), &mut y);
        Ok(y.into())
    }

    fn linear_fused(
        &self,
        p: &LinearParams,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        act: &ActivationParams,
    ) -> Result<Storage> {
        let mut y = self.out(p.n * p.out_f);
        linear::linear_forward_fused(p, x, w, bias.map(|b| &b[..]), Some(act), &mut y);
        Ok(y.into())
    }

    fn linear_grad_input(&self, p: &LinearParams, dy: &Storage, w: &Storage) -> Result<Storage> {
        let mut dx = self.out(p.n * p.in_f);
        linear::linear_backward_input(p, dy, w, &mut dx);
        Ok(dx.into())
    }

    fn alloc(&self, len: usize) -> Result<Storage> {
        Ok(self.out(len).into())
    }

    fn zeros(&self, len: usize) -> Result<Storage> {
        Ok(vec![0.0; len].into())
    }

    fn activation(&self, p: &ActivationParams, x: &Storage) -> Result<Storage> {
        let mut y = self.out(p.len);
        activation::activation_forward(p, &x[..p.len], &mut y);
        Ok(y.into())
    }

    fn activation_grad_input(
        &self,
        p: &ActivationParams,
        saved: &Storage,
        dy: &Storage,
    ) -> Result<Storage> {
        let mut dx = self.out(p.len);
        activation::activation_backward_input(p, &saved[..p.len], &dy[..p.len], &mut dx);
        Ok(dx.into())
    }

    fn binary(&self, p: &BinaryParams, a: &Storage, b: &Storage) -> Result<Storage> {
        let mut y = self.out(p.len());
        binary::binary_forward(p, a, b, &mut y);
        Ok(y.into())
    }

    fn binary_grad_input(
        &self,
        p: &BinaryParams,
        operand: usize,
        dy: &Storage,
        a: &Storage,
        b: &Storage,
    ) -> Result<Storage> {
        let mut dx = self.out(p.operand(operand).iter().product());
        binary::binary_backward_input(p, operand, dy, a, b, &mut dx);
        Ok(dx.into())
    }

    fn strided_copy(&self, p: &StridedCopyParams, src: &Storage, dst: &mut Storage) -> Result<()> {
        layout::strided_copy(p, src, dst.make_mut());
        Ok(())
    }

    fn layer_norm(
        &self,
        p: &LayerNormParams,
        x: &Storage,
        weight: &Storage,
        bias: &Storage,
    ) -> Result<Storage> {
        let mut y = self.out(p.len());
        layer_norm::layer_norm_forward(p, x, weight, bias, &mut y);
        Ok(y.into())
    }

    fn layer_norm_grad_input(
        &self,
        p: &LayerNormParams,
        x: &Storage,
        weight: &Storage,
        dy: &Storage,
    ) -> Result<Storage> {
        let mut dx = self.out(p.len());
        layer_norm::layer_norm_backward_input(p, x, weight, dy, &mut dx);
        Ok(dx.into())
    }

    fn dropout(&self, x: &Storage, mask: &Storage, len: usize) -> Result<Storage> {
        let mut y = self.out(len);
        training::dropout_scaled(&x[..len], &mask[..len], &mut y);
        Ok(y.into())
    }

    fn class_seed(&self, p: &ClassSeedParams, logits: &Storage) -> Result<Storage> {
        let mut seed = self.out(p.n * p.k);
        cam::class_seed(p, logits, &mut seed);
        Ok(seed.into())
    }

    fn grad_cam(
        &self,
        p: &GradCamParams,
        activation: &Storage,
        gradient: &Storage,
    ) -> Result<Storage> {
        let mut cam = self.out(p.n * p.out_h * p.out_w);
        cam::grad_cam(p, activation, gradient, &mut cam);
        Ok(cam.into())
    }

    fn score_cam_masks(
        &self,
        p: &ScoreMaskParams,
        x: &Storage,
        activation: &Storage,
    ) -> Result<Storage> {
        p.check(x.len(), activation.len())
            .map_err(|reason| crate::error::Error::Backend {
                backend: self.name(),
                reason,
            })?;
        let mut out = self.out(p.output_len());
        cam::score_cam_masks(p, x, activation, &mut out);
        Ok(out.into())
    }
}

impl TrainBackend for CpuBackend {
    fn conv2d_grad_weight(&self, p: &Conv2dParams, x: &Storage, dy: &Storage) -> Result<Storage> {
        let mut dw = self.out(p.weight_len());
        if p.is_dense() {
            weight_grad::conv2d_backward_weight(p, x, dy, &mut dw);
        } else {
            grouped_conv::conv2d_backward_weight(p, x, dy, &mut dw);
        }
        Ok(dw.into())
    }

    fn conv2d_grad_bias(&self, p: &Conv2dParams, dy: &Storage) -> Result<Storage> {
        let mut db = self.out(p.c_out);
        weight_grad::conv2d_backward_bias(p, dy, &mut db);
        Ok(db.into())
    }

    fn linear_grad_weight(&self, p: &LinearParams, x: &Storage, dy: &Storage) -> Result<Storage> {
        let mut dw = self.out(p.out_f * p.in_f);
        weight_grad::linear_backward_weight(p, x, dy, &mut dw);
        Ok(dw.into())
    }

    fn linear_grad_bias(&self, p: &LinearParams, dy: &Storage) -> Result<Storage> {
        let mut db = self.out(p.out_f);
        weight_grad::linear_backward_bias(p, dy, &mut db);
        Ok(db.into())
    }

    fn sgd_step(
        &self,
        s: &SgdParams,
        w: &mut Storage,
        grad: &Storage,
        velocity: &mut Option<Storage>,
        len: usize,
    ) -> Result<()> {
        // training::sgd_step's "no buffer yet" is an empty vector.
        let mut v = velocity.take().map(Storage::into_vec).unwrap_or_default();
        training::sgd_step(s, &mut w.make_mut()[..len], &grad[..len], &mut v);
        if !v.is_empty() {
            *velocity = Some(v.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn conv(c_in: usize, c_out: usize) -> Conv2dParams {
        Conv2dParams::dense(2, c_in, (13, 11), c_out, (3, 3), (1, 1), (1, 1))
    }

    /// A fused conv → BatchNorm (→ add) → activation, and conv → activation, give the bits of
    /// the separate ops, for every row of the activation table, on the Winograd path (3×3) and
    /// the im2col path (1×1, stride 2), with and without a residual.
    #[test]
    fn fused_epilogue_matches_the_separate_ops() {
        use crate::backend::{conv2d_then_epilogue, ConvEpilogue};
        use crate::ops::{Activation, ActivationParams};
        let mut rng = StdRng::seed_from_u64(5);
        let mut r = |n: usize, s: f32| -> Storage {
            Storage::from(
                (0..n)
                    .map(|_| rng.random_range(-s..s))
                    .collect::<Vec<f32>>(),
            )
        };
        let be = CpuBackend { poison: true };
        let strided = Conv2dParams::dense(2, 9, (13, 11), 21, (1, 1), (2, 2), (0, 0));
        for p in [conv(7, 19), strided] {
            let (x, w, bias) = (
                r(p.input_len(), 1.0),
                r(p.weight_len(), 1.0),
                r(p.c_out, 1.0),
            );
            let (scale, shift, res) = (r(p.c_out, 3.0), r(p.c_out, 3.0), r(p.output_len(), 3.0));
            for &act in Activation::ALL {
                let bn = Some((&scale, &shift));
                for (bn, residual) in [(bn, None), (bn, Some(&res)), (None, None)] {
                    let e = ConvEpilogue {
                        bn,
                        residual,
                        act: Some(ActivationParams {
                            act,
                            alpha: 0.125,
                            beta: 0.875,
                            len: p.output_len(),
                        }),
                    };
                    let fused = be.conv2d_fused(&p, &x, &w, Some(&bias), &e).unwrap();
                    let apart = conv2d_then_epilogue(&be, &p, &x, &w, Some(&bias), &e).unwrap();
                    let same = fused
                        .iter()
                        .zip(apart.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    let (b, r) = (bn.is_some(), residual.is_some());
                    assert!(same, "{} batch norm {b} residual {r}", act.name());
                }
            }
        }
    }

    /// The Winograd filters kept with a weight give the bits of the uncached kernels, call
    /// after call, and are recomputed once the weight is written (a training step).
    #[test]
    fn kept_winograd_filters_follow_their_weight() {
        let p = conv(17, 19);
        assert!(winograd::applies(&p) && winograd::backward_as_forward(&p).is_some());
        let mut rng = StdRng::seed_from_u64(11);
        let mut r =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, dy) = (r(p.input_len()), r(p.output_len()));
        let be = CpuBackend { poison: true };
        let mut w = Storage::from(r(p.weight_len()));
        let (xs, dys) = (Storage::from(x.clone()), Storage::from(dy.clone()));
        let want = |w: &[f32]| {
            let mut y = vec![f32::NAN; p.output_len()];
            conv::conv2d_forward(&p, &x, w, None, &mut y);
            let mut dx = vec![f32::NAN; p.input_len()];
            conv::conv2d_backward_input(&p, &dy, w, &mut dx);
            (y, dx)
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for step in 0..3 {
            let (y, dx) = want(&w);
            for _ in 0..2 {
                assert_eq!(
                    bits(&be.conv2d(&p, &xs, &w, None).unwrap()),
                    bits(&y),
                    "step {step}"
                );
                let got = be.conv2d_grad_input(&p, &dys, &w).unwrap();
                assert_eq!(bits(&got), bits(&dx), "step {step}");
            }
            w.make_mut().iter_mut().for_each(|v| *v = -0.5 * *v + 0.25);
        }
    }
}
