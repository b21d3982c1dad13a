//! The methods made of many forward passes on perturbed inputs, run in batches of
//! `--batch-size` perturbed inputs. Each returns the logits of every perturbed input, so
//! that the class ranks of one request share them.
//! - ScoreCAM (pytorch-grad-cam): the input times each channel of the layer, upsampled
//!   (bilinear, align_corners=True, as `nn.UpsamplingBilinear2d`) and min-max normalized
//!   (+1e-8); constant channels, whose masks are all 0, share one pass.
//! - AblationCAM (pytorch-grad-cam): the network above the layer only, on the image's
//!   activation with one channel ablated per batch element: set to 0 when the activation's
//!   minimum is 0, else to that minimum − 1e7. (pytorch-grad-cam lowers the value by another
//!   1e7 for each earlier element of its batch of 32, an artefact of taking the minimum of the
//!   batch it is editing; we ablate every channel to the same value.)
//! - Occlusion (kazuto1011): a patch centred on every `stride`-th pixel, clipped at the
//!   border, filled with `fill`. kazuto1011 pads the image by patch/2 and runs the network on
//!   the padded image, which a network with a fixed input size cannot take, and its grid is
//!   shifted by one stride; we occlude the image itself, patches centred on (0, 0),
//!   (0, stride), …
//! - Integrated gradients (Captum, its default Gauss–Legendre rule): zero baseline,
//!   x ⊙ Σ_k w_k ∂score(α_k x)/∂x.
//! - SmoothGrad (Captum's NoiseTunnel, smoothgrad): the mean of a method's maps over inputs
//!   with Gaussian noise of standard deviation `noise` (in network-input units).

use super::methods::{MethodOptions, SMOOTHABLE};
use super::{Engine, Method};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::graph::op::ReluRule;
use crate::model::graph::walk::{self, Keep, Scope, Values};
use crate::model::graph::{Plan, ValueId};
use crate::ops::{ScoreMaskParams, StridedCopyParams};
use crate::tensor::Tensor;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::rc::Rc;

/// Occlusion's grid [gh, gw] and, per image, the logits [gh·gw, K] of its occluded copies.
pub struct Occlusion {
    pub grid: (usize, usize),
    pub logits: Vec<Vec<f32>>,
}

/// Stops a long perturbation loop at SIGINT/SIGTERM.
fn check_interrupt() -> Result<()> {
    match crate::interrupt::requested() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

impl<B: Backend> Engine<B> {
    /// Logits of `count` perturbed copies of one image, `make(j, out)` writing copy j.
    fn perturbed_logits(
        &self,
        x: &Tensor,
        count: usize,
        batch: usize,
        make: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Result<Vec<f32>> {
        let per: usize = x.shape[1..].iter().product();
        let mut logits = Vec::new();
        for start in (0..count).step_by(batch) {
            check_interrupt()?;
            let b = batch.min(count - start);
            let mut data = vec![0f32; b * per];
            data.par_chunks_mut(per)
                .enumerate()
                .for_each(|(j, out)| make(start + j, out));
            let mut shape = x.shape.clone();
            shape[0] = b;
            logits.extend(self.forward(&Tensor::new(shape, data))?.data);
        }
        Ok(logits)
    }

    /// ScoreCAM's masked inputs of every image, made on the device (`score_cam_masks`) from
    /// the layer's activation `act_buf` [N, C, h, w] (`act`: its host copy): per image, logits
    /// [C, K]. A constant channel (a dead ReLU's) normalizes to a zero mask, so all of them
    /// share one forward pass of the zero input; batches are runs of consecutive other
    /// channels.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn scorecam_logits(
        &self,
        x: &Tensor,
        act: &[f32],
        act_buf: &B::Buf,
        shape: &[usize],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        let (in_c, out_h, out_w) = (x.shape[1], x.shape[2], x.shape[3]);
        let per = in_c * out_h * out_w;
        let k = self.model.num_classes;
        let mut all = Vec::with_capacity(x.shape[0]);
        for i in 0..x.shape[0] {
            let channel = |ch: usize| &act[(i * c + ch) * h * w..][..h * w];
            let live: Vec<bool> = (0..c)
                .map(|ch| channel(ch).iter().any(|&v| v != channel(ch)[0]))
                .collect();
            let xi = self.backend.upload(&x.data[i * per..(i + 1) * per])?;
            let mut logits = vec![0f32; c * k];
            let mut c0 = 0;
            while c0 < c {
                if !live[c0] {
                    c0 += 1;
                    continue;
                }
                check_interrupt()?;
                let count = (c0..c.min(c0 + batch)).take_while(|&ch| live[ch]).count();
                let p = ScoreMaskParams {
                    image: i,
                    c0,
                    count,
                    c,
                    h,
                    w,
                    in_c,
                    out_h,
                    out_w,
                };
                let masked = self.timed("score_cam_masks", || {
                    self.backend.score_cam_masks(&p, &xi, act_buf)
                })?;
                let l = self.forward_buf(masked, &[count, in_c, out_h, out_w])?;
                logits[c0 * k..(c0 + count) * k].copy_from_slice(&l.data);
                c0 += count;
            }
            if live.contains(&false) {
                let zero = self.backend.zeros(per)?;
                let l = self.forward_buf(zero, &[1, in_c, out_h, out_w])?;
                for ch in (0..c).filter(|&ch| !live[ch]) {
                    logits[ch * k..(ch + 1) * k].copy_from_slice(&l.data);
                }
            }
            all.push(logits);
        }
        Ok(all)
    }

    /// AblationCAM: per image, the logits [C, K] of the network above layer `v` with each
    /// channel ablated in turn.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ablation_logits(
        &self,
        x: &Tensor,
        plan: &Plan,
        fw: &Values<B>,
        v: ValueId,
        act: &[f32],
        scope: &Scope,
        outside: &[ValueId],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let g = &self.model.graph;
        let n = x.shape[0];
        let (c, hw) = (plan.shapes[v][1], plan.shapes[v][2] * plan.shapes[v][3]);
        let per = c * hw;
        let be = &self.backend;
        let keep = Keep::for_scopes(g, &[], &[g.output]);
        let mut all = Vec::with_capacity(n);
        for i in 0..n {
            let a = &act[i * per..(i + 1) * per];
            let min = a.iter().copied().fold(f32::INFINITY, f32::min);
            let ablated = if min == 0.0 { 0.0 } else { min - 1e7 };
            let constant = be.upload(&vec![ablated; hw])?;
            let mut logits = Vec::with_capacity(c * self.model.num_classes);
            for c0 in (0..c).step_by(batch) {
                check_interrupt()?;
                let b = batch.min(c - c0);
                let mut shape = x.shape.clone();
                shape[0] = b;
                let plan_b = g.plan(&shape)?;
                // Image i's copy of every value the upper network reads, b times.
                let repeat = |u: ValueId| -> Result<B::Buf> {
                    let len = plan.len(u) / n;
                    let mut dst = be.alloc(b * len)?;
                    let p = StridedCopyParams::new(&[b, len], i * len, &[0, 1], 0, &[len, 1]);
                    be.strided_copy(&p, fw.values[u].as_deref().expect("kept"), &mut dst)?;
                    Ok(dst)
                };
                let mut values: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
                for &u in outside {
                    values[u] = Some(Rc::new(repeat(u)?));
                }
                // Copy j has channel c0 + j ablated: one strided copy along the diagonal.
                let mut target = repeat(v)?;
                let p = StridedCopyParams::new(&[b, hw], 0, &[0, 1], c0 * hw, &[per + hw, 1]);
                be.strided_copy(&p, &constant, &mut target)?;
                values[v] = Some(Rc::new(target));
                let out = walk::forward_from(&self.ctx(), &plan_b, values, scope, &keep)?;
                logits.extend(self.logits(&out, &plan_b)?.data);
            }
            all.push(logits);
        }
        Ok(all)
    }

    pub(super) fn occlusion_logits(&self, x: &Tensor, o: &MethodOptions) -> Result<Occlusion> {
        let (ch, h, w) = (x.shape[1], x.shape[2], x.shape[3]);
        let grid = (h.div_ceil(o.stride), w.div_ceil(o.stride));
        let half = o.patch / 2;
        let per = ch * h * w;
        let logits = (0..x.shape[0])
            .map(|i| {
                let xi = &x.data[i * per..(i + 1) * per];
                self.perturbed_logits(x, grid.0 * grid.1, o.batch_size, |j, out| {
                    out.copy_from_slice(xi);
                    let (cy, cx) = ((j / grid.1) * o.stride, (j % grid.1) * o.stride);
                    let (y0, x0) = (cy.saturating_sub(half), cx.saturating_sub(half));
                    let (y1, x1) = ((cy + o.patch - half).min(h), (cx + o.patch - half).min(w));
                    for plane in out.chunks_mut(h * w) {
                        for row in plane[y0 * w..y1 * w].chunks_mut(w) {
                            row[x0..x1].fill(o.fill);
                        }
                    }
                })
            })
            .collect::<Result<_>>()?;
        Ok(Occlusion { grid, logits })
    }

    /// Integrated gradients [N, C, H, W] for per-image `classes`.
    pub(super) fn integrated_gradients(
        &self,
        x: &Tensor,
        classes: &[usize],
        o: &MethodOptions,
    ) -> Result<Tensor> {
        let (alphas, weights) = gauss_legendre(o.steps);
        let n = x.shape[0];
        let per = x.len() / n.max(1);
        let mut total = vec![0f64; x.len()];
        // Rows are (image, step) pairs, `batch_size` per pass.
        let rows: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (0..o.steps).map(move |s| (i, s)))
            .collect();
        for chunk in rows.chunks(o.batch_size) {
            check_interrupt()?;
            let mut data = Vec::with_capacity(chunk.len() * per);
            for &(i, s) in chunk {
                data.extend(
                    x.data[i * per..(i + 1) * per]
                        .iter()
                        .map(|v| v * alphas[s] as f32),
                );
            }
            let mut shape = x.shape.clone();
            shape[0] = chunk.len();
            let cls: Vec<usize> = chunk.iter().map(|&(i, _)| classes[i]).collect();
            let grad =
                self.input_gradient(&Tensor::new(shape, data), &cls, o.score, ReluRule::Gradient)?;
            for (&(i, s), g) in chunk.iter().zip(grad.data.chunks(per)) {
                let t = &mut total[i * per..(i + 1) * per];
                t.iter_mut()
                    .zip(g)
                    .for_each(|(t, &g)| *t += weights[s] * g as f64);
            }
        }
        let data = total
            .iter()
            .zip(&x.data)
            .map(|(t, &v)| (t * v as f64) as f32)
            .collect();
        Ok(Tensor::new(x.shape.clone(), data))
    }

    /// SmoothGrad over method `m` (one of `SMOOTHABLE`) for per-image `classes`.
    pub(super) fn smooth_grad(
        &self,
        x: &Tensor,
        classes: &[usize],
        o: &MethodOptions,
        m: Method,
    ) -> Result<Tensor> {
        debug_assert!(SMOOTHABLE.contains(&m));
        let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
        let mut sum = vec![0f64; x.len()];
        for _ in 0..o.smooth {
            check_interrupt()?;
            let mut noisy = x.clone();
            for v in noisy.data.iter_mut() {
                let z: f32 = StandardNormal.sample(&mut rng);
                *v += o.noise * z;
            }
            let map = match m {
                Method::IntegratedGradients => self.integrated_gradients(&noisy, classes, o)?,
                Method::GuidedBackprop => {
                    self.input_gradient(&noisy, classes, o.score, ReluRule::Guided)?
                }
                _ => self.input_gradient(&noisy, classes, o.score, ReluRule::Gradient)?,
            };
            sum.iter_mut()
                .zip(&map.data)
                .for_each(|(s, &v)| *s += v as f64);
        }
        let data = sum.iter().map(|s| (s / o.smooth as f64) as f32).collect();
        Ok(Tensor::new(x.shape.clone(), data))
    }
}

/// Captum's Gauss–Legendre rule on [0, 1]: the points α_k (ascending) and weights w_k
/// (summing to 1), from numpy's `leggauss` on [−1, 1] mapped by α = (1 + t)/2, w = w_t/2.
/// The roots of P_n by Newton's method from Chebyshev guesses, in f64.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut t = vec![0f64; n];
    let mut wt = vec![0f64; n];
    for i in 0..n {
        let mut x = -(std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(x) and P_n'(x) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 1 { x } else { p1 };
            let pm = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * pn - pm) / (x * x - 1.0);
            let dx = pn / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        t[i] = x;
        wt[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    let alphas = t.iter().map(|v| 0.5 * (1.0 + v)).collect();
    let weights = wt.iter().map(|v| 0.5 * v).collect();
    (alphas, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_numpy() {
        // numpy.polynomial.legendre.leggauss(3): ±√(3/5), 0; weights 5/9, 8/9, 5/9.
        let (a, w) = gauss_legendre(3);
        let r = (0.6f64).sqrt();
        for (got, want) in a.iter().zip([0.5 * (1.0 - r), 0.5, 0.5 * (1.0 + r)]) {
            assert!((got - want).abs() < 1e-14, "{a:?}");
        }
        for (got, want) in w.iter().zip([5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0]) {
            assert!((got - want).abs() < 1e-14, "{w:?}");
        }
        for n in [1, 2, 7, 50, 201] {
            let (a, w) = gauss_legendre(n);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "n = {n}");
            assert!(a.windows(2).all(|p| p[0] < p[1]), "n = {n}");
            // Exact for polynomials of degree 2n − 1: ∫₀¹ α^(2n−1) = 1/(2n).
            let m = (2 * n - 1) as i32;
            let q: f64 = a.iter().zip(&w).map(|(a, w)| w * a.powi(m)).sum();
            assert!((q - 1.0 / (2 * n) as f64).abs() < 1e-10, "n = {n}: {q}");
        }
    }
}
