//! How a case of each family is run: its inputs drawn, the op called on the backend, the
//! result compared with the reference under the family's tolerance. One function per family,
//! a loop over its table.

use super::cases::{self, CamInputs};
use super::{reference, Checker, Family, Precision};
use crate::backend::cpu::{activation, binary, cam, layer_norm, layout};
use crate::backend::{squeeze_excitation_separate, Backend, ConvEpilogue};
use crate::ops::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn rng(family: Family) -> StdRng {
    StdRng::seed_from_u64(cases::seed(family))
}

fn uniform(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Multiples of 0.5 in [-1, 1]: pooling windows with ties.
fn coarse(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-2i32..=2) as f32 * 0.5)
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn conv_label(p: &Conv2dParams) -> String {
    let mut s = format!(
        "n{} c{}->{} {}x{} k{}x{} s{}",
        p.n, p.c_in, p.c_out, p.h_in, p.w_in, p.k_h, p.k_w, p.stride_h
    );
    if p.stride_w != p.stride_h {
        s += &format!("x{}", p.stride_w);
    }
    if p.is_dense() {
        s += &format!(" p{}", p.pad_h);
        if p.pad_w != p.pad_h {
            s += &format!("x{}", p.pad_w);
        }
    } else {
        let pads = (p.pad_h, p.pad_w, p.pad_h_end, p.pad_w_end);
        s = format!(
            "grouped {s} g{} d{}x{} p{pads:?}",
            p.groups, p.dilation_h, p.dilation_w
        );
    }
    s
}

pub(super) fn conv<B: Backend>(b: &B, precision: Precision, c: &mut Checker) {
    let tol = cases::conv_tol(precision);
    let mut rng = rng(Family::Conv);
    let up = |v: &[f32]| b.upload(v);
    for p in cases::dense_convs().iter().chain(&cases::grouped_convs()) {
        let x = uniform(&mut rng, p.input_len());
        let w = uniform(&mut rng, p.weight_len());
        let bias = uniform(&mut rng, p.c_out);
        let dy = uniform(&mut rng, p.output_len());
        // "grouped conv2d …" for the general path, "conv2d …" for the dense one.
        let label = conv_label(p);
        let (kind, shape) = match label.strip_prefix("grouped ") {
            Some(shape) => ("grouped conv2d", shape),
            None => ("conv2d", &label[..]),
        };
        for with_bias in [true, false] {
            let want = reference::conv2d(p, &x, &w, with_bias.then_some(&bias[..]));
            let out = (|| {
                let (xb, wb, bb) = (up(&x)?, up(&w)?, up(&bias)?);
                b.download(&b.conv2d(p, &xb, &wb, with_bias.then_some(&bb))?)
            })();
            let what = if with_bias { "" } else { " no bias" };
            let name = format!("{kind}{what} {shape}");
            c.check_sum(name, tol, out, &want.value, &want.terms);
        }
        let want = reference::conv2d_grad_input(p, &dy, &w);
        let out = (|| b.download(&b.conv2d_grad_input(p, &up(&dy)?, &up(&w)?)?))();
        let name = format!("{kind}_grad_input {shape}");
        c.check_sum(name, tol, out, &want.value, &want.terms);
    }
}

pub(super) fn conv_fused<B: Backend>(b: &B, precision: Precision, c: &mut Checker) {
    let tol = cases::conv_tol(precision);
    let mut rng = rng(Family::ConvFused);
    let up = |v: &[f32]| b.upload(v);
    let (p, epilogues) = cases::conv_fused();
    for (residual, act) in epilogues {
        let x = uniform(&mut rng, p.input_len());
        let w = uniform(&mut rng, p.weight_len());
        let bias = uniform(&mut rng, p.c_out);
        let scale = uniform(&mut rng, p.c_out);
        let shift = uniform(&mut rng, p.c_out);
        let res = uniform(&mut rng, p.output_len());
        let hw = p.h_out() * p.w_out();
        let conv = reference::conv2d(&p, &x, &w, Some(&bias));
        let (mut want, mut terms) = (conv.value, conv.terms);
        for (i, (v, t)) in want.iter_mut().zip(&mut terms).enumerate() {
            let ch = (i / hw) % p.c_out;
            *v = *v * scale[ch] as f64 + shift[ch] as f64;
            *t = *t * scale[ch].abs() as f64 + shift[ch].abs() as f64;
            if residual {
                *v += res[i] as f64;
                *t += res[i].abs() as f64;
            }
            *v = match act {
                Some(Activation::Relu) => v.max(0.0),
                Some(a) => a.forward(*v, 0.0, 0.0),
                None => *v,
            };
            *t *= cases::FUSED_ACTIVATION_SLOPE;
        }
        let out = (|| {
            let (sb, tb, rb) = (up(&scale)?, up(&shift)?, up(&res)?);
            let e = ConvEpilogue {
                bn: Some((&sb, &tb)),
                residual: residual.then_some(&rb),
                act: act.map(|act| ActivationParams {
                    act,
                    alpha: 0.0,
                    beta: 0.0,
                    len: p.output_len(),
                }),
            };
            b.download(&b.conv2d_fused(&p, &up(&x)?, &up(&w)?, Some(&up(&bias)?), &e)?)
        })();
        let name = format!(
            "conv2d_fused bn{} {} {}",
            if residual { " +res" } else { "" },
            act.map_or("", |a| a.name()),
            conv_label(&p)
        );
        c.check_sum(name, tol, out, &want, &terms);
    }
}

pub(super) fn pool<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::Pool);
    let up = |v: &[f32]| b.upload(v);
    for p in cases::pools() {
        // The ops that keep an argmax pool inputs with many ties, which must go to the first
        // maximum.
        let x = match p.keeps_argmax() {
            true => coarse(&mut rng, p.input_len()),
            false => uniform(&mut rng, p.input_len()),
        };
        let dy = uniform(&mut rng, p.output_len());
        let (want_y, want_dx) = reference::pool(&p, &x, &dy);
        let (forward, backward) = cases::pool_tol(&p);
        let out = (|| b.download(&b.pool(&p, &up(&x)?, false)?.0))();
        c.check(format!("{} {p}", p.name()), forward, out, &want_y);
        // An argmax is checked through the gradient: a wrong index moves dy to another input.
        let out = (|| {
            let (_, argmax) = b.pool(&p, &up(&x)?, true)?;
            b.download(&b.pool_grad_input(&p, argmax.as_ref(), &up(&dy)?)?)
        })();
        let name = format!("{}_grad_input {p}", p.name());
        c.check(name, backward, out, &want_dx);
    }
}

pub(super) fn elementwise<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::Elementwise);
    let up = |v: &[f32]| b.upload(v);
    for len in cases::ELEMENTWISE_LENS {
        let (x, x2, dy) = (
            uniform(&mut rng, len),
            uniform(&mut rng, len),
            uniform(&mut rng, len),
        );
        let relu: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
        let out = (|| b.download(&b.relu(&up(&x)?, len)?))();
        c.check(
            format!("relu len {len}"),
            cases::SELECTION,
            out,
            &f64s(&relu),
        );
        let want: Vec<f64> = relu
            .iter()
            .zip(&dy)
            .map(|(&y, &g)| if y > 0.0 { g as f64 } else { 0.0 })
            .collect();
        let out = (|| b.download(&b.relu_grad_input(&up(&relu)?, &up(&dy)?, len)?))();
        let name = format!("relu_grad_input len {len}");
        c.check(name, cases::SELECTION, out, &want);
        let want: Vec<f64> = x
            .iter()
            .zip(&x2)
            .map(|(&a, &v)| a as f64 + v as f64)
            .collect();
        let out = (|| b.download(&b.add(&up(&x)?, &up(&x2)?, len)?))();
        c.check(format!("add len {len}"), cases::ONE_OP, out, &want);
    }
    for p in cases::channel_affines() {
        let shape = format!("n{} c{} hw{}", p.n, p.c, p.hw);
        let x = uniform(&mut rng, p.len());
        let scale = uniform(&mut rng, p.c);
        let shift = uniform(&mut rng, p.c);
        let channel = |i: usize| i / p.hw % p.c;
        let want: Vec<f64> = (0..p.len())
            .map(|i| x[i] as f64 * scale[channel(i)] as f64 + shift[channel(i)] as f64)
            .collect();
        let out = (|| b.download(&b.channel_affine(&p, &up(&x)?, &up(&scale)?, &up(&shift)?)?))();
        c.check(format!("channel_affine {shape}"), cases::ONE_OP, out, &want);
        let want: Vec<f64> = (0..p.len())
            .map(|i| x[i] as f64 * scale[channel(i)] as f64)
            .collect();
        let out = (|| b.download(&b.channel_affine_grad_input(&p, &up(&x)?, &up(&scale)?)?))();
        let name = format!("channel_affine_grad_input {shape}");
        c.check(name, cases::ONE_OP, out, &want);
    }
}

pub(super) fn activation<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::Activation);
    let up = |v: &[f32]| b.upload(v);
    for inputs in &cases::ACTIVATION_INPUTS {
        let mut x = inputs.breakpoints.to_vec();
        let range = inputs.range;
        x.extend((0..inputs.random).map(|_| rng.random_range(-range..range)));
        let dy = uniform(&mut rng, x.len());
        for &act in Activation::ALL {
            let p = cases::activation(act, x.len());
            let shape = format!("{} len {}", act.name(), x.len());
            let mut want = vec![0f64; x.len()];
            activation::activation_forward(&p, &f64s(&x), &mut want);
            let out = (|| b.download(&b.activation(&p, &up(&x)?)?))();
            // The backward pass reads what the engine saves: the input, or this backend's
            // output (the reference's where the forward failed).
            let saved = match (act.saved(), &out) {
                (Saved::Input, _) => x.clone(),
                (Saved::Output, Ok(y)) if y.len() == x.len() => y.clone(),
                (Saved::Output, _) => want.iter().map(|&v| v as f32).collect(),
            };
            c.check(format!("activation {shape}"), cases::ACTIVATION, out, &want);
            let mut want = vec![0f64; x.len()];
            activation::activation_backward_input(&p, &f64s(&saved), &f64s(&dy), &mut want);
            let out = (|| b.download(&b.activation_grad_input(&p, &up(&saved)?, &up(&dy)?)?))();
            let name = format!("activation_grad_input {shape}");
            c.check(name, cases::ACTIVATION, out, &want);
        }
    }
}

pub(super) fn binary<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::Binary);
    let up = |v: &[f32]| b.upload(v);
    for (sa, sb) in cases::BROADCASTS {
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let (p, _) = BinaryParams::broadcast(op, sa, sb).expect("the table's shapes broadcast");
            let x = uniform(&mut rng, sa.iter().product());
            let y = uniform(&mut rng, sb.iter().product());
            let dy = uniform(&mut rng, p.len());
            let (xf, yf, dyf) = (f64s(&x), f64s(&y), f64s(&dy));
            let shape = format!("{} {sa:?} {sb:?}", op.name());
            let mut want = vec![0f64; p.len()];
            binary::binary_forward(&p, &xf, &yf, &mut want);
            let out = (|| b.download(&b.binary(&p, &up(&x)?, &up(&y)?)?))();
            c.check(format!("binary {shape}"), cases::ONE_OP, out, &want);
            for operand in 0..2 {
                // The engine never asks an add for the gradient of an output-shaped operand.
                if op == BinaryOp::Add && p.operand(operand) == p.out {
                    continue;
                }
                let mut want = vec![0f64; p.operand(operand).iter().product()];
                binary::binary_backward_input(&p, operand, &dyf, &xf, &yf, &mut want);
                let out = (|| {
                    let (xb, yb) = (up(&x)?, up(&y)?);
                    b.download(&b.binary_grad_input(&p, operand, &up(&dy)?, &xb, &yb)?)
                })();
                let name = format!("binary_grad_input {shape} operand {operand}");
                c.check(name, cases::BROADCAST_REDUCTION, out, &want);
            }
        }
    }
}

pub(super) fn strided_copy<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::StridedCopy);
    for (what, p, src_len, dst_len) in cases::strided_copies() {
        let src = uniform(&mut rng, src_len);
        let mut want = vec![0f64; dst_len];
        layout::strided_copy(&p, &f64s(&src), &mut want);
        let out = (|| {
            let mut dst = b.zeros(dst_len)?;
            b.strided_copy(&p, &b.upload(&src)?, &mut dst)?;
            b.download(&dst)
        })();
        c.check(format!("strided_copy {what}"), cases::SELECTION, out, &want);
    }
}

pub(super) fn linear<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::Linear);
    let up = |v: &[f32]| b.upload(v);
    for p in cases::linears() {
        let shape = format!("n{} {}->{}", p.n, p.in_f, p.out_f);
        let x = uniform(&mut rng, p.n * p.in_f);
        let w = uniform(&mut rng, p.out_f * p.in_f);
        let bias = uniform(&mut rng, p.out_f);
        let dy = uniform(&mut rng, p.n * p.out_f);
        for with_bias in [true, false] {
            let (want, _) = reference::linear(&p, &x, &w, with_bias.then_some(&bias[..]), &dy);
            let out = (|| {
                let bb = up(&bias)?;
                b.download(&b.linear(&p, &up(&x)?, &up(&w)?, with_bias.then_some(&bb))?)
            })();
            let what = if with_bias { "" } else { " no bias" };
            c.check(format!("linear {shape}{what}"), cases::LINEAR, out, &want);
        }
        let (_, want) = reference::linear(&p, &x, &w, None, &dy);
        let out = (|| b.download(&b.linear_grad_input(&p, &up(&dy)?, &up(&w)?)?))();
        c.check(
            format!("linear_grad_input {shape}"),
            cases::LINEAR,
            out,
            &want,
        );
    }
}

pub(super) fn layer_norm<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::LayerNorm);
    let up = |v: &[f32]| b.upload(v);
    for (p, offset) in cases::layer_norms() {
        let shape = format!("[{}, {}, {}] offset {offset}", p.outer, p.dim, p.inner);
        let x: Vec<f32> = uniform(&mut rng, p.len())
            .iter()
            .map(|v| v + offset)
            .collect();
        let (w, bias) = (uniform(&mut rng, p.dim), uniform(&mut rng, p.dim));
        let dy = uniform(&mut rng, p.len());
        let (xf, wf) = (f64s(&x), f64s(&w));
        let mut want = vec![0f64; p.len()];
        layer_norm::layer_norm_forward(&p, &xf, &wf, &f64s(&bias), &mut want);
        let out = (|| b.download(&b.layer_norm(&p, &up(&x)?, &up(&w)?, &up(&bias)?)?))();
        c.check(format!("layer_norm {shape}"), cases::LAYER_NORM, out, &want);
        let mut want = vec![0f64; p.len()];
        layer_norm::layer_norm_backward_input(&p, &xf, &wf, &f64s(&dy), &mut want);
        let out = (|| b.download(&b.layer_norm_grad_input(&p, &up(&x)?, &up(&w)?, &up(&dy)?)?))();
        let name = format!("layer_norm_grad_input {shape}");
        c.check(name, cases::LAYER_NORM, out, &want);
    }
}

pub(super) fn squeeze_excitation<B: Backend>(b: &B, precision: Precision, c: &mut Checker) {
    use crate::backend::cpu::squeeze_excitation::squeeze_excitation_forward;
    let tol = cases::squeeze_excitation_tol(precision);
    let mut rng = rng(Family::SqueezeExcitation);
    let up = |v: &[f32]| b.upload(v);
    for p in cases::squeeze_excitations() {
        let (ch, squeeze) = (p.c, p.squeeze);
        let x = uniform(&mut rng, p.len());
        let (w1, b1) = (uniform(&mut rng, squeeze * ch), uniform(&mut rng, squeeze));
        let (w2, b2) = (uniform(&mut rng, ch * squeeze), uniform(&mut rng, ch));
        let mut want = vec![0f64; p.len()];
        let (w1f, b1f, w2f, b2f) = (f64s(&w1), f64s(&b1), f64s(&w2), f64s(&b2));
        squeeze_excitation_forward(&p, &f64s(&x), (&w1f, &b1f), (&w2f, &b2f), &mut want);
        let shape = format!(
            "n{} c{ch} {}x{} squeeze {squeeze} {}/{}",
            p.n,
            p.h,
            p.w,
            p.act.act.name(),
            p.gate.act.name()
        );
        for separate in [false, true] {
            let out = (|| {
                let (xb, w1, b1, w2, b2) = (up(&x)?, up(&w1)?, up(&b1)?, up(&w2)?, up(&b2)?);
                let y = if separate {
                    // The walker's unfused path.
                    squeeze_excitation_separate(b, &p, &xb, (&w1, &b1), (&w2, &b2))?
                } else {
                    b.squeeze_excitation(&p, &xb, (&w1, &b1), (&w2, &b2))?
                };
                b.download(&y)
            })();
            let what = if separate { " (separate ops)" } else { "" };
            c.check(format!("squeeze_excitation {shape}{what}"), tol, out, &want);
        }
    }
}

pub(super) fn class_seed<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::ClassSeed);
    let (mut logits, mut shape) = (vec![], (0, 0));
    for p in cases::class_seeds() {
        // New logits for each shape; its picks share them.
        if (p.n, p.k) != shape {
            shape = (p.n, p.k);
            logits = (0..p.n * p.k)
                .map(|_| [-1.0, -0.5, -0.0, 0.0, 0.5, 1.0][rng.random_range(0..6)])
                .collect();
        }
        let want = reference::class_seed(&p, &logits);
        let out = (|| b.download(&b.class_seed(&p, &b.upload(&logits)?)?))();
        let pick = match p.pick {
            ClassPick::Fixed(k) => format!("fixed {k}"),
            ClassPick::Rank(r) => format!("rank {r}"),
        };
        let name = format!("class_seed n{} k{} {pick}", p.n, p.k);
        c.check(name, cases::SELECTION, out, &want);
    }
}

/// The activations and gradients of a CAM case; see [`CamInputs`].
fn cam_inputs(p: &GradCamParams, inputs: CamInputs, rng: &mut StdRng) -> (Vec<f32>, Vec<f32>) {
    let hw = p.h * p.w;
    let mut value = |lo: f32, zeros: f64| {
        if rng.random_bool(zeros) {
            0.0
        } else {
            rng.random_range(lo..1.0)
        }
    };
    let mut act = Vec::with_capacity(p.n * p.c * hw);
    let mut grad = Vec::with_capacity(p.second_len());
    for _ in 0..p.n * p.c {
        // Constant channels are large, so that the constant map is too (values ≥ 2, whose
        // half-ulp exceeds the 1e-7 of the normalization).
        let (a, g) = (8.0 * value(-0.5, 0.25), value(-1.0, 0.125));
        for _ in 0..hw {
            act.push(if inputs.constant {
                a
            } else {
                value(-0.5, 0.25)
            });
            if p.combine != CamCombine::Weights {
                grad.push(if inputs.constant {
                    g
                } else {
                    value(-1.0, 0.125)
                });
            }
        }
        if p.combine == CamCombine::Weights {
            grad.push(g);
        }
    }
    if inputs.relu {
        act.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    grad.iter_mut().for_each(|v| *v *= inputs.scale);
    (act, grad)
}

pub(super) fn grad_cam<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::GradCam);
    for (p, inputs) in cases::grad_cams() {
        let (a, g) = cam_inputs(&p, inputs, &mut rng);
        let want = reference::grad_cam(&p, &a, &g);
        let out = (|| b.download(&b.grad_cam(&p, &b.upload(&a)?, &b.upload(&g)?)?))();
        let name = format!(
            "grad_cam {:?} n{} c{} {}x{}->{}x{}{}{}{}{}",
            p.combine,
            p.n,
            p.c,
            p.h,
            p.w,
            p.out_h,
            p.out_w,
            if p.renormalize { "" } else { " once" },
            if inputs.constant { " constant" } else { "" },
            if inputs.relu { " after relu" } else { "" },
            if inputs.scale == 1.0 {
                String::new()
            } else {
                format!(" |g| < {}", inputs.scale)
            },
        );
        c.check(name, cases::GRAD_CAM, out, &want);
    }
}

/// The activations of a ScoreCAM case: a quarter exact zeros, the rest in [-0.5, 1), and the
/// first mask's channel all 0.
fn score_activations(p: &ScoreMaskParams, rng: &mut StdRng) -> Vec<f32> {
    let hw = p.h * p.w;
    let mut act: Vec<f32> = (0..p.activation_len())
        .map(|_| {
            if rng.random_bool(0.25) {
                0.0
            } else {
                rng.random_range(-0.5f32..1.0)
            }
        })
        .collect();
    let first = (p.image * p.c + p.c0) * hw;
    act[first..first + hw].fill(0.0);
    act
}

pub(super) fn score_cam_masks<B: Backend>(b: &B, _: Precision, c: &mut Checker) {
    let mut rng = rng(Family::ScoreCamMasks);
    for p in cases::score_cam_masks() {
        let act = score_activations(&p, &mut rng);
        let x = uniform(&mut rng, p.x_len());
        let mut want = vec![0f32; p.output_len()];
        cam::score_cam_masks(&p, &x, &act, &mut want);
        let out = (|| b.download(&b.score_cam_masks(&p, &b.upload(&x)?, &b.upload(&act)?)?))();
        let name = format!(
            "score_cam_masks image {} channels {}..{} of {} {}x{}->{}x{} in_c {}",
            p.image,
            p.c0,
            p.c0 + p.count,
            p.c,
            p.h,
            p.w,
            p.out_h,
            p.out_w,
            p.in_c
        );
        c.check(name, cases::SCORE_CAM_MASKS, out, &f64s(&want));
    }
}
