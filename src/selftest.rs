//! `gradcam selftest`: every kernel of a backend against naive direct loops in f64, on seeded
//! random inputs with odd shapes, strides, padding and batch > 1. Generic over [`Backend`], so
//! each backend (cpu, cuda, wgpu, …) gets the same checks; backends are created with output
//! poisoning on, so an element a kernel fails to write shows up as NaN.
//!
//! The references are written independently of the CPU backend (plain loops, no im2col, no
//! GEMM), so `selftest --backend cpu` checks the oracle itself rather than comparing it with
//! itself. Errors are max |out - ref| / max(1, max |ref|): relative for large outputs (deep
//! convolutions), absolute for small ones.

use crate::backend::Backend;
use crate::ops::*;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Tolerances of one backend configuration.
#[derive(Clone, Copy, Debug)]
pub struct Tolerances {
    /// Convolutions: accumulation of many products (and TF32 rounding on tensor cores).
    pub conv: f64,
    /// Linear layers.
    pub linear: f64,
    /// Exact or nearly exact ops: elementwise, pooling.
    pub exact: f64,
    /// The fused Grad-CAM step, whose outputs lie in [0, 1].
    pub cam: f64,
}

impl Tolerances {
    /// FP32 kernels.
    pub const FP32: Self = Self {
        conv: 1e-4,
        linear: 1e-4,
        exact: 1e-6,
        cam: 1e-4,
    };
    /// Convolutions on TF32 tensor cores (10-bit mantissa inputs, FP32 accumulation).
    pub const TF32_CONV: Self = Self {
        conv: 1e-2,
        ..Self::FP32
    };

    /// A GPU backend with conv kernel `k`: TF32 tolerances for the plain TF32 variants (v2,
    /// v4), FP32 for the others (v3's 3xTF32 products are FP32-accurate).
    pub fn for_conv(k: crate::backend::ConvKernel) -> Self {
        use crate::backend::ConvKernel::*;
        match k {
            V1 | V3 => Self::FP32,
            V2 | V4 => Self::TF32_CONV,
        }
    }
}

/// One checked kernel and shape.
#[derive(Clone, Debug)]
pub struct Line {
    pub kernel: String,
    pub max_err: f64,
    pub tol: f64,
    pub ok: bool,
    /// Why it failed when the backend returned an error instead of a result.
    pub note: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:4}  {:58} max err {:9.2e}  tol {:7.1e}",
            if self.ok { "ok" } else { "FAIL" },
            self.kernel,
            self.max_err,
            self.tol
        )?;
        if !self.note.is_empty() {
            write!(f, "  ({})", self.note)?;
        }
        Ok(())
    }
}

/// Scaled max error; NaN or a length mismatch counts as infinite.
fn error(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let scale = reference.iter().fold(1f64, |m, v| m.max(v.abs()));
    out.iter().zip(reference).fold(0f64, |m, (&o, &r)| {
        let d = (o as f64 - r).abs() / scale;
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    })
}

struct Checker {
    lines: Vec<Line>,
}

impl Checker {
    fn check(
        &mut self,
        kernel: String,
        tol: f64,
        result: crate::Result<Vec<f32>>,
        reference: &[f64],
    ) {
        let (max_err, note) = match result {
            Ok(out) => (error(&out, reference), String::new()),
            Err(e) => (f64::INFINITY, e.to_string()),
        };
        self.lines.push(Line {
            kernel,
            ok: max_err <= tol,
            max_err,
            tol,
            note,
        });
    }
}

fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// Values on a coarse grid, so max-pool windows contain ties.
fn coarse(rng: &mut StdRng, n: usize) -> Vec<f32> {
    randn(rng, n)
        .into_iter()
        .map(|v| (v * 2.0).round() / 2.0)
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Runs every check with FP32 tolerances.
pub fn run<B: Backend>(b: &B) -> Vec<Line> {
    run_with(b, Tolerances::FP32)
}

/// Runs every check on `b`; one line per kernel and shape.
pub fn run_with<B: Backend>(b: &B, tol: Tolerances) -> Vec<Line> {
    let mut c = Checker { lines: vec![] };
    let mut rng = StdRng::seed_from_u64(0x5e1f_7e57);
    let up = |v: &[f32]| b.upload(v);

    // Convolutions: strided and padded 3x3, pointwise, 7x7 stem, and one spanning several
    // 64x64 tiles with K not a multiple of the tile depth.
    let convs = [
        (2, 3, 11, 9, 5, 3, 3, 2, 2, 1, 1),
        (3, 17, 5, 7, 33, 1, 1, 1, 1, 0, 0),
        (2, 3, 19, 17, 8, 7, 7, 2, 2, 3, 3),
        (2, 37, 13, 15, 70, 3, 3, 1, 1, 1, 1),
        (1, 6, 8, 10, 9, 1, 1, 2, 2, 0, 0),
        // Several 128x128 tiles in both directions (CUDA v3/v4), K = 171 and 1350 (not multiples
        // of 32), and an input gradient with 140 input channels, strided.
        (2, 19, 9, 11, 150, 3, 3, 1, 1, 1, 1),
        (2, 140, 7, 5, 20, 3, 3, 2, 2, 1, 1),
    ];
    for (n, c_in, h_in, w_in, c_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w) in convs {
        let p = Conv2dParams {
            n,
            c_in,
            h_in,
            w_in,
            c_out,
            k_h,
            k_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            pad_h_end: pad_h,
            pad_w_end: pad_w,
            dilation_h: 1,
            dilation_w: 1,
            groups: 1,
        };
        let shape =
            format!("n{n} c{c_in}->{c_out} {h_in}x{w_in} k{k_h}x{k_w} s{stride_h} p{pad_h}");
        let x = randn(&mut rng, p.input_len());
        let w = randn(&mut rng, p.weight_len());
        let bias = randn(&mut rng, c_out);
        let dy = randn(&mut rng, p.output_len());
        let reference = conv_ref(&p, &x, &w, &bias);
        let out = (|| {
            let (xb, wb, bb) = (up(&x)?, up(&w)?, up(&bias)?);
            b.download(&b.conv2d(&p, &xb, &wb, Some(&bb))?)
        })();
        c.check(format!("conv2d {shape}"), tol.conv, out, &reference);
        let reference = conv_bwd_ref(&p, &dy, &w);
        let out = (|| b.download(&b.conv2d_grad_input(&p, &up(&dy)?, &up(&w)?)?))();
        c.check(
            format!("conv2d_grad_input {shape}"),
            tol.conv,
            out,
            &reference,
        );
    }
    // Without bias.
    {
        let p = conv3x3(2, 4, 6, 5, 3);
        let x = randn(&mut rng, p.input_len());
        let w = randn(&mut rng, p.weight_len());
        let reference = conv_ref(&p, &x, &w, &vec![0.0; p.c_out]);
        let out = (|| b.download(&b.conv2d(&p, &up(&x)?, &up(&w)?, None)?))();
        c.check(
            "conv2d no bias n2 c4->3 6x5 k3x3 s1 p1".into(),
            tol.conv,
            out,
            &reference,
        );
    }

    // Conv with its fused epilogue (BatchNorm, then residual, then the activation), against the
    // f64 ops one after another; with and without the residual, ReLU and the activations the
    // families fuse (ReLU as max(v, 0), the others through the activation table).
    let acts = [
        (true, Some(Activation::Relu)),
        (false, Some(Activation::Relu)),
        (false, None),
        (false, Some(Activation::Silu)),
        (true, Some(Activation::Hardswish)),
        (false, Some(Activation::Relu6)),
        (false, Some(Activation::Gelu)),
    ];
    for (residual, act) in acts {
        let p = conv3x3(2, 21, 9, 7, 131);
        let x = randn(&mut rng, p.input_len());
        let w = randn(&mut rng, p.weight_len());
        let bias = randn(&mut rng, p.c_out);
        let scale = randn(&mut rng, p.c_out);
        let shift = randn(&mut rng, p.c_out);
        let res = randn(&mut rng, p.output_len());
        let hw = p.h_out() * p.w_out();
        let mut reference = conv_ref(&p, &x, &w, &bias);
        for (i, v) in reference.iter_mut().enumerate() {
            let ch = (i / hw) % p.c_out;
            *v = *v * scale[ch] as f64 + shift[ch] as f64;
            if residual {
                *v += res[i] as f64;
            }
            *v = match act {
                Some(Activation::Relu) => v.max(0.0),
                Some(a) => a.forward(*v, 0.0, 0.0),
                None => *v,
            };
        }
        let out = (|| {
            let (sb, tb, rb) = (up(&scale)?, up(&shift)?, up(&res)?);
            let e = crate::backend::ConvEpilogue {
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
        c.check(
            format!(
                "conv2d_fused bn{} {}",
                if residual { " +res" } else { "" },
                act.map_or("", |a| a.name())
            ),
            tol.conv,
            out,
            &reference,
        );
    }

    // Max pooling with ties, and its gather backward.
    for (n, ch, h_in, w_in, k, s, pad) in [
        (2, 3, 11, 10, 3, 2, 1),
        (3, 2, 9, 7, 2, 2, 0),
        (1, 4, 6, 6, 3, 1, 1),
    ] {
        let p = MaxPool2dParams {
            n,
            c: ch,
            h_in,
            w_in,
            k_h: k,
            k_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: pad,
            pad_w: pad,
            ceil_mode: false,
        };
        let shape = format!("n{n} c{ch} {h_in}x{w_in} k{k} s{s} p{pad}");
        let x = coarse(&mut rng, p.input_len());
        let dy = randn(&mut rng, p.output_len());
        let (ry, ridx) = max_pool_ref(&p, &x);
        let res = (|| {
            let (y, idx) = b.max_pool2d(&p, &up(&x)?)?;
            let dx = b.max_pool2d_grad_input(&p, &idx, &up(&dy)?)?;
            Ok((b.download(&y)?, b.download(&dx)?, idx))
        })();
        match res {
            Ok((y, dx, _)) => {
                c.check(format!("max_pool2d {shape}"), tol.exact, Ok(y), &ry);
                let mut rdx = vec![0f64; p.input_len()];
                let (plane_in, plane_out) = (h_in * w_in, p.h_out() * p.w_out());
                for (o, &i) in ridx.iter().enumerate() {
                    rdx[o / plane_out * plane_in + i as usize] += dy[o] as f64;
                }
                // The argmax (ties to the first maximum) is checked through the gradient: a
                // wrong index moves dy to another element.
                c.check(
                    format!("max_pool2d_grad_input (argmax, ties) {shape}"),
                    tol.exact,
                    Ok(dx),
                    &rdx,
                );
            }
            Err(e) => c.check(format!("max_pool2d {shape}"), tol.exact, Err(e), &ry),
        }
    }

    // Adaptive average pooling: downsampling, upsampling (overlapping windows), identity.
    for (n, ch, h_in, w_in, h_out, w_out) in
        [(2, 3, 13, 11, 4, 3), (2, 2, 5, 3, 7, 7), (1, 3, 7, 7, 7, 7)]
    {
        let p = AdaptivePool2dParams {
            n,
            c: ch,
            h_in,
            w_in,
            h_out,
            w_out,
        };
        let shape = format!("n{n} c{ch} {h_in}x{w_in}->{h_out}x{w_out}");
        let x = randn(&mut rng, p.input_len());
        let dy = randn(&mut rng, p.output_len());
        let (ry, rdx) = adaptive_ref(&p, &x, &dy);
        let out = (|| b.download(&b.adaptive_avg_pool2d(&p, &up(&x)?)?))();
        c.check(format!("adaptive_avg_pool2d {shape}"), tol.exact, out, &ry);
        let out = (|| b.download(&b.adaptive_avg_pool2d_grad_input(&p, &up(&dy)?)?))();
        c.check(
            format!("adaptive_avg_pool2d_grad_input {shape}"),
            tol.exact,
            out,
            &rdx,
        );
    }

    // Elementwise.
    let len = 3 * 5 * 7 * 11 + 1;
    let x = randn(&mut rng, len);
    let y2 = randn(&mut rng, len);
    let dy = randn(&mut rng, len);
    let relu: Vec<f64> = x.iter().map(|&v| (v as f64).max(0.0)).collect();
    c.check(
        format!("relu len {len}"),
        tol.exact,
        (|| b.download(&b.relu(&up(&x)?, len)?))(),
        &relu,
    );
    let relu_f32: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
    let rdx: Vec<f64> = relu_f32
        .iter()
        .zip(&dy)
        .map(|(&y, &g)| if y > 0.0 { g as f64 } else { 0.0 })
        .collect();
    let out = (|| b.download(&b.relu_grad_input(&up(&relu_f32)?, &up(&dy)?, len)?))();
    c.check(format!("relu_grad_input len {len}"), tol.exact, out, &rdx);
    let sum: Vec<f64> = x
        .iter()
        .zip(&y2)
        .map(|(&a, &v)| a as f64 + v as f64)
        .collect();
    let out = (|| b.download(&b.add(&up(&x)?, &up(&y2)?, len)?))();
    c.check(format!("add len {len}"), tol.exact, out, &sum);
    let p = ChannelAffineParams {
        n: 3,
        c: 5,
        hw: 7 * 11,
    };
    let xa = randn(&mut rng, p.len());
    let scale = randn(&mut rng, p.c);
    let shift = randn(&mut rng, p.c);
    let ry: Vec<f64> = (0..p.len())
        .map(|i| {
            let ch = i / p.hw % p.c;
            xa[i] as f64 * scale[ch] as f64 + shift[ch] as f64
        })
        .collect();
    let out = (|| b.download(&b.channel_affine(&p, &up(&xa)?, &up(&scale)?, &up(&shift)?)?))();
    c.check("channel_affine n3 c5 hw77".into(), tol.exact, out, &ry);
    let rdx: Vec<f64> = (0..p.len())
        .map(|i| xa[i] as f64 * scale[i / p.hw % p.c] as f64)
        .collect();
    let out = (|| b.download(&b.channel_affine_grad_input(&p, &up(&xa)?, &up(&scale)?)?))();
    c.check(
        "channel_affine_grad_input n3 c5 hw77".into(),
        tol.exact,
        out,
        &rdx,
    );

    // Linear layers: batch below and above the kernels' group of 8 images, with and without bias.
    for (n, in_f, out_f, with_bias) in [(3, 37, 19, true), (11, 300, 70, true), (9, 65, 5, false)] {
        let p = LinearParams { n, in_f, out_f };
        let shape = format!(
            "n{n} {in_f}->{out_f}{}",
            if with_bias { "" } else { " no bias" }
        );
        let x = randn(&mut rng, n * in_f);
        let w = randn(&mut rng, out_f * in_f);
        let bias = if with_bias {
            randn(&mut rng, out_f)
        } else {
            vec![0.0; out_f]
        };
        let dy = randn(&mut rng, n * out_f);
        let mut ry = vec![0f64; n * out_f];
        let mut rdx = vec![0f64; n * in_f];
        for i in 0..n {
            for o in 0..out_f {
                let mut s = bias[o] as f64;
                for k in 0..in_f {
                    s += x[i * in_f + k] as f64 * w[o * in_f + k] as f64;
                    rdx[i * in_f + k] += dy[i * out_f + o] as f64 * w[o * in_f + k] as f64;
                }
                ry[i * out_f + o] = s;
            }
        }
        let out = (|| {
            let bb = up(&bias)?;
            b.download(&b.linear(&p, &up(&x)?, &up(&w)?, with_bias.then_some(&bb))?)
        })();
        c.check(format!("linear {shape}"), tol.linear, out, &ry);
        let out = (|| b.download(&b.linear_grad_input(&p, &up(&dy)?, &up(&w)?)?))();
        c.check(format!("linear_grad_input {shape}"), tol.linear, out, &rdx);
    }

    // The class seed of the backward pass, on logits with ties: a fixed class, the top class,
    // and a middle rank. Reference: a stable sort by descending logit (ties keep the lower
    // class first).
    for (n, k) in [(3, 10), (2, 1000)] {
        // `+ 0.0` turns -0.0 into 0.0, which total_cmp would order apart.
        let logits: Vec<f32> = coarse(&mut rng, n * k).iter().map(|v| v + 0.0).collect();
        for (label, pick) in [
            ("fixed 7", ClassPick::Fixed(7)),
            ("rank 0", ClassPick::Rank(0)),
            ("rank 5", ClassPick::Rank(5)),
        ] {
            let mut reference = vec![0f64; n * k];
            for (i, row) in logits.chunks(k).enumerate() {
                let class = match pick {
                    ClassPick::Fixed(c) => c,
                    ClassPick::Rank(r) => {
                        let mut order: Vec<usize> = (0..k).collect();
                        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                        order[r]
                    }
                };
                reference[i * k + class] = 1.0;
            }
            let p = ClassSeedParams { n, k, pick };
            let out = (|| b.download(&b.class_seed(&p, &up(&logits)?)?))();
            c.check(
                format!("class_seed n{n} k{k} {label}"),
                0.0,
                out,
                &reference,
            );
        }
    }

    op_families(b, &mut c, &mut rng, tol);
    squeeze_excitation(b, &mut c, &mut rng, tol);

    // The fused CAM step, every combine: odd sizes, ResNet's 7x7 -> 224x224 (not normalized
    // again, as for the per-layer CAMs of several layers), and a constant CAM (the 1e-7
    // epsilon path). Activations after a ReLU, as at the usual target layers (Grad-CAM++'s
    // weights have a pole where Σ A < 0, which f32 kernels cannot follow).
    for combine in CamCombine::ALL {
        for (n, ch, h, w, out_h, out_w, constant) in [
            (3, 13, 5, 7, 29, 31, false),
            (2, 40, 7, 7, 224, 224, false),
            (2, 3, 4, 3, 9, 8, true),
        ] {
            let p = GradCamParams {
                renormalize: out_h != 224,
                ..GradCamParams::new(&[n, ch, h, w], out_h, out_w, combine)
            };
            let shape = format!(
                "n{n} c{ch} {h}x{w}->{out_h}x{out_w}{}{}",
                if p.renormalize { "" } else { " once" },
                if constant { " constant" } else { "" }
            );
            let (len, g_len) = (n * ch * h * w, p.second_len());
            let (a, g) = if constant {
                (vec![0.5; len], vec![1.0; g_len])
            } else {
                let a = randn(&mut rng, len).iter().map(|v| v.max(0.0)).collect();
                (a, randn(&mut rng, g_len))
            };
            let reference = cam_ref(&p, &a, &g);
            let out = (|| b.download(&b.grad_cam(&p, &up(&a)?, &up(&g)?)?))();
            c.check(
                format!("grad_cam {combine:?} {shape}"),
                tol.cam,
                out,
                &reference,
            );
        }
    }
    c.lines
}

/// The ops of the torchvision families (grouped / depthwise / dilated convs with asymmetric
/// padding, the activation table, broadcast binary ops, average and adaptive max pooling,
/// the strided copy, LayerNorm), forward and input gradient, against the CPU backend's
/// kernels run in f64 (each checked against f64 finite differences in tests/op_gradcheck.rs
/// and against PyTorch in the parity fixtures). Tolerances: `conv` for convolutions;
/// `exact` for copies, pooling and one-operation forwards; 1e-5 for the activations (one
/// transcendental each; WGSL's erf is a 1.5e-7 approximation); `linear` for the sums of the
/// broadcast reductions and LayerNorm.
fn op_families<B: Backend>(b: &B, c: &mut Checker, rng: &mut StdRng, tol: Tolerances) {
    use crate::backend::cpu::{activation, binary, grouped_conv, layer_norm, layout, pool};
    let up = |v: &[f32]| b.upload(v);
    const ACT_TOL: f64 = 1e-5;

    // (n, c_in, (h, w), c_out, (kh, kw), stride, (top, left, bottom, right), dilation, groups)
    let convs = [
        (2, 8, (9, 7), 8, (3, 3), 1, (1, 1, 1, 1), 1, 8),
        (2, 6, (11, 10), 6, (5, 5), 2, (1, 2, 2, 1), 1, 6),
        (3, 6, (8, 9), 9, (3, 3), 1, (2, 2, 2, 2), 2, 3),
        (2, 5, (10, 9), 10, (3, 1), 2, (1, 0, 1, 0), 1, 5),
        (2, 3, (7, 6), 4, (3, 3), 2, (0, 0, 1, 1), 1, 1),
        // the tiled v2 over several tiles, and 5 small planes per block
        (2, 8, (37, 35), 8, (3, 3), 1, (1, 1, 1, 1), 1, 8),
        (3, 7, (7, 7), 7, (7, 7), 1, (3, 3, 3, 3), 1, 7),
    ];
    for (n, c_in, (h_in, w_in), c_out, (k_h, k_w), s, pads, d, groups) in convs {
        let p = Conv2dParams {
            n,
            c_in,
            h_in,
            w_in,
            c_out,
            k_h,
            k_w,
            stride_h: s,
            stride_w: s,
            pad_h: pads.0,
            pad_w: pads.1,
            pad_h_end: pads.2,
            pad_w_end: pads.3,
            dilation_h: d,
            dilation_w: d,
            groups,
        };
        let shape = format!(
            "n{n} c{c_in}->{c_out} g{groups} {h_in}x{w_in} k{k_h}x{k_w} s{s} d{d} p{pads:?}"
        );
        let (x, w, bias) = (
            randn(rng, p.input_len()),
            randn(rng, p.weight_len()),
            randn(rng, c_out),
        );
        let dy = randn(rng, p.output_len());
        let mut reference = vec![0f64; p.output_len()];
        grouped_conv::conv2d_forward(&p, &f64s(&x), &f64s(&w), Some(&f64s(&bias)), &mut reference);
        let out = (|| b.download(&b.conv2d(&p, &up(&x)?, &up(&w)?, Some(&up(&bias)?))?))();
        c.check(format!("grouped conv2d {shape}"), tol.conv, out, &reference);
        let mut reference = vec![0f64; p.input_len()];
        grouped_conv::conv2d_backward_input(&p, &f64s(&dy), &f64s(&w), &mut reference);
        let out = (|| b.download(&b.conv2d_grad_input(&p, &up(&dy)?, &up(&w)?)?))();
        c.check(
            format!("grouped conv2d_grad_input {shape}"),
            tol.conv,
            out,
            &reference,
        );
    }

    // Every activation of the table, its breakpoints included.
    let mut x: Vec<f32> = vec![-3.0, 0.0, 3.0, 6.0, -1.5, 2.0];
    x.extend(randn(rng, 301).iter().map(|v| v * 3.0));
    let dy = randn(rng, x.len());
    for &act in Activation::ALL {
        let (alpha, beta) = match act {
            Activation::Hardtanh => (-1.5, 2.0),
            Activation::LeakyRelu => (0.01, 0.0),
            Activation::Elu => (1.3, 0.0),
            _ => (0.0, 0.0),
        };
        let p = ActivationParams {
            act,
            alpha,
            beta,
            len: x.len(),
        };
        let mut y = vec![0f64; x.len()];
        activation::activation_forward(&p, &f64s(&x), &mut y);
        let out = (|| b.download(&b.activation(&p, &up(&x)?)?))();
        c.check(format!("activation {}", act.name()), ACT_TOL, out, &y);
        let saved: Vec<f32> = match act.saved() {
            Saved::Input => x.clone(),
            Saved::Output => y.iter().map(|&v| v as f32).collect(),
        };
        let mut reference = vec![0f64; x.len()];
        activation::activation_backward_input(&p, &f64s(&saved), &f64s(&dy), &mut reference);
        let out = (|| b.download(&b.activation_grad_input(&p, &up(&saved)?, &up(&dy)?)?))();
        c.check(
            format!("activation_grad_input {}", act.name()),
            ACT_TOL,
            out,
            &reference,
        );
    }

    // Broadcast add and mul: a squeeze-excitation gate, a layer scale, both sides broadcast.
    let shapes: [(&[usize], &[usize]); 3] = [
        (&[3, 7, 5, 6], &[3, 7, 1, 1]),
        (&[7, 1, 1], &[2, 7, 4, 5]),
        (&[2, 1, 4, 1], &[1, 3, 1, 5]),
    ];
    for (sa, sb) in shapes {
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let Some((p, _)) = BinaryParams::broadcast(op, sa, sb) else {
                continue;
            };
            let (a, bv) = (
                randn(rng, sa.iter().product()),
                randn(rng, sb.iter().product()),
            );
            let dy = randn(rng, p.len());
            let shape = format!("{} {sa:?} {sb:?}", op.name());
            let mut reference = vec![0f64; p.len()];
            binary::binary_forward(&p, &f64s(&a), &f64s(&bv), &mut reference);
            let out = (|| b.download(&b.binary(&p, &up(&a)?, &up(&bv)?)?))();
            c.check(format!("binary {shape}"), tol.exact, out, &reference);
            for operand in 0..2 {
                if op == BinaryOp::Add && p.operand(operand) == p.out {
                    continue;
                }
                let mut reference = vec![0f64; p.operand(operand).iter().product()];
                let (af, bf, gf) = (f64s(&a), f64s(&bv), f64s(&dy));
                binary::binary_backward_input(&p, operand, &gf, &af, &bf, &mut reference);
                let out = (|| {
                    b.download(&b.binary_grad_input(&p, operand, &up(&dy)?, &up(&a)?, &up(&bv)?)?)
                })();
                c.check(
                    format!("binary_grad_input {shape} operand {operand}"),
                    tol.linear,
                    out,
                    &reference,
                );
            }
        }
    }

    // Average pooling: ceil mode, with and without count_include_pad.
    for (h, w, k, s, pad, ceil_mode, count_include_pad) in [
        (9, 7, 3, 2, 1, true, true),
        (8, 9, 3, 1, 1, false, false),
        (7, 7, 2, 2, 0, true, true),
    ] {
        let p = AvgPool2dParams {
            window: PoolWindow {
                n: 2,
                c: 3,
                h_in: h,
                w_in: w,
                k_h: k,
                k_w: k,
                stride_h: s,
                stride_w: s,
                pad_h: pad,
                pad_w: pad,
                ceil_mode,
            },
            count_include_pad,
        };
        let shape = format!("{h}x{w} k{k} s{s} p{pad} ceil {ceil_mode} cip {count_include_pad}");
        let x = randn(rng, p.window.input_len());
        let dy = randn(rng, p.window.output_len());
        let mut reference = vec![0f64; p.window.output_len()];
        pool::avg_pool2d_forward(&p, &f64s(&x), &mut reference);
        let out = (|| b.download(&b.avg_pool2d(&p, &up(&x)?)?))();
        c.check(format!("avg_pool2d {shape}"), tol.exact, out, &reference);
        let mut reference = vec![0f64; p.window.input_len()];
        pool::avg_pool2d_backward_input(&p, &f64s(&dy), &mut reference);
        let out = (|| b.download(&b.avg_pool2d_grad_input(&p, &up(&dy)?)?))();
        c.check(
            format!("avg_pool2d_grad_input {shape}"),
            tol.exact,
            out,
            &reference,
        );
    }

    // Adaptive max pooling, shrinking and growing, on a coarse grid (ties).
    for (h_in, w_in, h_out, w_out) in [(7, 5, 3, 2), (4, 5, 6, 7)] {
        let p = AdaptivePool2dParams {
            n: 2,
            c: 3,
            h_in,
            w_in,
            h_out,
            w_out,
        };
        let shape = format!("{h_in}x{w_in}->{h_out}x{w_out}");
        let x = coarse(rng, p.input_len());
        let dy = randn(rng, p.output_len());
        let mut y = vec![0f64; p.output_len()];
        let mut idx = vec![0u32; p.output_len()];
        pool::adaptive_max_pool2d_forward(&p, &f64s(&x), &mut y, &mut idx);
        let mut dx = vec![0f64; p.input_len()];
        pool::adaptive_max_pool2d_backward_input(&p, &idx, &f64s(&dy), &mut dx);
        let out = (|| b.download(&b.adaptive_max_pool2d(&p, &up(&x)?)?.0))();
        c.check(format!("adaptive_max_pool2d {shape}"), tol.exact, out, &y);
        let out = (|| {
            let (_, argmax) = b.adaptive_max_pool2d(&p, &up(&x)?)?;
            b.download(&b.adaptive_max_pool2d_grad_input(&p, &argmax, &up(&dy)?)?)
        })();
        c.check(
            format!("adaptive_max_pool2d_grad_input {shape}"),
            tol.exact,
            out,
            &dx,
        );
    }

    // Strided copies: a concat part, a chunk, NCHW → NHWC, a channel shuffle.
    let whole = [2usize, 6, 5, 3];
    let len: usize = whole.iter().product();
    for (what, p, src_len, dst_len) in [
        (
            "concat part",
            StridedCopyParams::block(&whole, 1, 2, 3, true),
            len / 2,
            len,
        ),
        (
            "chunk",
            StridedCopyParams::block(&whole, 1, 1, 4, false),
            len,
            len / 6 * 4,
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
    ] {
        let src = randn(rng, src_len);
        let mut reference = vec![0f64; dst_len];
        layout::strided_copy(&p, &f64s(&src), &mut reference);
        let out = (|| {
            let mut dst = b.zeros(dst_len)?;
            b.strided_copy(&p, &up(&src)?, &mut dst)?;
            b.download(&dst)
        })();
        c.check(format!("strided_copy {what}"), 0.0, out, &reference);
    }

    // LayerNorm over NHWC channels (inner 1) and NCHW channels (LayerNorm2d).
    for (outer, dim, inner) in [(30, 96, 1), (2, 20, 35)] {
        let p = LayerNormParams {
            outer,
            dim,
            inner,
            eps: 1e-6,
        };
        let shape = format!("[{outer}, {dim}, {inner}]");
        let (x, w, bias) = (randn(rng, p.len()), randn(rng, dim), randn(rng, dim));
        let dy = randn(rng, p.len());
        let (xf, wf) = (f64s(&x), f64s(&w));
        let mut reference = vec![0f64; p.len()];
        layer_norm::layer_norm_forward(&p, &xf, &wf, &f64s(&bias), &mut reference);
        let out = (|| b.download(&b.layer_norm(&p, &up(&x)?, &up(&w)?, &up(&bias)?)?))();
        c.check(format!("layer_norm {shape}"), tol.linear, out, &reference);
        let mut reference = vec![0f64; p.len()];
        layer_norm::layer_norm_backward_input(&p, &xf, &wf, &f64s(&dy), &mut reference);
        let out = (|| b.download(&b.layer_norm_grad_input(&p, &up(&x)?, &up(&w)?, &up(&dy)?)?))();
        c.check(
            format!("layer_norm_grad_input {shape}"),
            tol.linear,
            out,
            &reference,
        );
    }
}

/// The fused squeeze-excitation block (pool, fc1, activation, fc2, gate, multiply) against
/// the CPU kernels in f64: few channels (threads share a channel's mean), more channels and
/// more hidden units than a block has threads, a 1×1 map.
fn squeeze_excitation<B: Backend>(b: &B, c: &mut Checker, rng: &mut StdRng, tol: Tolerances) {
    use crate::backend::cpu::squeeze_excitation::squeeze_excitation_forward;
    use Activation::*;
    let up = |v: &[f32]| b.upload(v);
    let cases = [
        (3, 5, (13, 11), 3, Relu, Sigmoid),
        (2, 300, (3, 5), 7, Silu, Hardsigmoid),
        (2, 130, (1, 1), 260, Hardswish, Sigmoid),
        (2, 40, (28, 28), 10, Relu, Hardsigmoid),
    ];
    for (n, ch, (h, w), squeeze, act, gate) in cases {
        let a = |act, len| ActivationParams {
            act,
            alpha: 0.0,
            beta: 0.0,
            len,
        };
        let p = SqueezeExciteParams {
            n,
            c: ch,
            h,
            w,
            squeeze,
            act: a(act, n * squeeze),
            gate: a(gate, n * ch),
        };
        let x = randn(rng, p.len());
        let (w1, b1) = (randn(rng, squeeze * ch), randn(rng, squeeze));
        let (w2, b2) = (randn(rng, ch * squeeze), randn(rng, ch));
        let mut reference = vec![0f64; p.len()];
        let (w1f, b1f, w2f, b2f) = (f64s(&w1), f64s(&b1), f64s(&w2), f64s(&b2));
        squeeze_excitation_forward(&p, &f64s(&x), (&w1f, &b1f), (&w2f, &b2f), &mut reference);
        let out = (|| {
            let (w1, b1, w2, b2) = (up(&w1)?, up(&b1)?, up(&w2)?, up(&b2)?);
            b.download(&b.squeeze_excitation(&p, &up(&x)?, (&w1, &b1), (&w2, &b2))?)
        })();
        let name = format!(
            "squeeze_excitation n{n} c{ch} {h}x{w} squeeze {squeeze} {}/{}",
            act.name(),
            gate.name()
        );
        c.check(name, tol.conv, out, &reference);
    }
}

/// A 3×3 convolution, stride 1, padding 1.
fn conv3x3(n: usize, c_in: usize, h_in: usize, w_in: usize, c_out: usize) -> Conv2dParams {
    Conv2dParams {
        n,
        c_in,
        h_in,
        w_in,
        c_out,
        k_h: 3,
        k_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_h: 1,
        pad_w: 1,
        pad_h_end: 1,
        pad_w_end: 1,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    }
}

fn conv_ref(p: &Conv2dParams, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut y = vec![0f64; p.output_len()];
    for i in 0..p.n {
        for co in 0..p.c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = bias[co] as f64;
                    for ci in 0..p.c_in {
                        for ky in 0..p.k_h {
                            for kx in 0..p.k_w {
                                let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                                let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= p.h_in as isize
                                    || ix >= p.w_in as isize
                                {
                                    continue;
                                }
                                let xv = x[((i * p.c_in + ci) * p.h_in + iy as usize) * p.w_in
                                    + ix as usize];
                                let wv = w[((co * p.c_in + ci) * p.k_h + ky) * p.k_w + kx];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((i * p.c_out + co) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    y
}

/// The adjoint of `conv_ref`, as a scatter (the kernels under test gather).
fn conv_bwd_ref(p: &Conv2dParams, dy: &[f32], w: &[f32]) -> Vec<f64> {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut dx = vec![0f64; p.input_len()];
    for i in 0..p.n {
        for co in 0..p.c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = dy[((i * p.c_out + co) * ho + oy) * wo + ox] as f64;
                    for ci in 0..p.c_in {
                        for ky in 0..p.k_h {
                            for kx in 0..p.k_w {
                                let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                                let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= p.h_in as isize
                                    || ix >= p.w_in as isize
                                {
                                    continue;
                                }
                                let wv = w[((co * p.c_in + ci) * p.k_h + ky) * p.k_w + kx] as f64;
                                dx[((i * p.c_in + ci) * p.h_in + iy as usize) * p.w_in
                                    + ix as usize] += g * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Values and argmax (first maximum in row-major window order).
fn max_pool_ref(p: &MaxPool2dParams, x: &[f32]) -> (Vec<f64>, Vec<u32>) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut y = vec![0f64; p.output_len()];
    let mut idx = vec![0u32; p.output_len()];
    for plane in 0..p.n * p.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best: Option<(f32, usize)> = None;
                for ky in 0..p.k_h {
                    for kx in 0..p.k_w {
                        let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                        let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                        if iy < 0 || ix < 0 || iy >= p.h_in as isize || ix >= p.w_in as isize {
                            continue;
                        }
                        let i = iy as usize * p.w_in + ix as usize;
                        let v = x[plane * p.h_in * p.w_in + i];
                        if best.is_none_or(|(b, _)| v > b) {
                            best = Some((v, i));
                        }
                    }
                }
                let (v, i) = best.expect("every window overlaps the input");
                y[(plane * ho + oy) * wo + ox] = v as f64;
                idx[(plane * ho + oy) * wo + ox] = i as u32;
            }
        }
    }
    (y, idx)
}

fn adaptive_ref(p: &AdaptivePool2dParams, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; p.output_len()];
    let mut dx = vec![0f64; p.input_len()];
    for plane in 0..p.n * p.c {
        for oy in 0..p.h_out {
            let (y0, y1) = adaptive_window(oy, p.h_in, p.h_out);
            for ox in 0..p.w_out {
                let (x0, x1) = adaptive_window(ox, p.w_in, p.w_out);
                let count = ((y1 - y0) * (x1 - x0)) as f64;
                let o = (plane * p.h_out + oy) * p.w_out + ox;
                let mut s = 0f64;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let i = (plane * p.h_in + iy) * p.w_in + ix;
                        s += x[i] as f64;
                        dx[i] += dy[o] as f64 / count;
                    }
                }
                y[o] = s / count;
            }
        }
    }
    (y, dx)
}

fn normalize_ref(v: &mut [f64]) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().map(|&x| x - lo).fold(0f64, f64::max);
    for x in v.iter_mut() {
        *x = (*x - lo) / (hi + CAM_EPS as f64);
    }
}

/// The map of one image before the ReLU, straight from pytorch-grad-cam 1.5's formulas.
/// a: [c, hw]; g: [c, hw], or [c] weights for `Weights`.
fn cam_map_ref(how: CamCombine, c: usize, hw: usize, a: &[f32], g: &[f32]) -> Vec<f64> {
    let mut map = vec![0f64; hw];
    for ch in 0..c {
        let a = f64s(&a[ch * hw..(ch + 1) * hw]);
        let g = if how == CamCombine::Weights {
            vec![g[ch] as f64]
        } else {
            f64s(&g[ch * hw..(ch + 1) * hw])
        };
        let n = hw as f64;
        let sum_a: f64 = a.iter().sum();
        let weight = match how {
            CamCombine::Mean => g.iter().sum::<f64>() / n,
            CamCombine::PlusPlus => g
                .iter()
                .map(|&gv| {
                    let alpha = if gv == 0.0 {
                        0.0
                    } else {
                        gv.powi(2) / (2.0 * gv.powi(2) + sum_a * gv.powi(3) + PLUS_PLUS_EPS)
                    };
                    gv.max(0.0) * alpha
                })
                .sum(),
            CamCombine::XGrad => {
                a.iter().zip(&g).map(|(av, gv)| av * gv).sum::<f64>() / (sum_a + XGRAD_EPS)
            }
            CamCombine::Fem => {
                let mean = sum_a / n;
                let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                a.iter().filter(|&&v| v > mean + FEM_K * std).count() as f64 / n
            }
            CamCombine::Weights => g[0],
            CamCombine::HiRes | CamCombine::ElementWise | CamCombine::Layer => {
                for (i, m) in map.iter_mut().enumerate() {
                    let ga = g[i] * a[i];
                    *m += match how {
                        CamCombine::HiRes => ga,
                        CamCombine::ElementWise => ga.max(0.0),
                        _ => g[i].max(0.0) * a[i],
                    };
                }
                continue;
            }
        };
        for (m, v) in map.iter_mut().zip(&a) {
            *m += weight * v;
        }
    }
    map
}

fn cam_ref(p: &GradCamParams, a: &[f32], g: &[f32]) -> Vec<f64> {
    let hw = p.h * p.w;
    let g_len = p.second_len() / p.n;
    let mut out = vec![];
    for i in 0..p.n {
        let a = &a[i * p.c * hw..(i + 1) * p.c * hw];
        let g = &g[i * g_len..(i + 1) * g_len];
        let mut small = cam_map_ref(p.combine, p.c, hw, a, g);
        small.iter_mut().for_each(|v| *v = v.max(0.0));
        normalize_ref(&mut small);
        let mut cam = vec![0f64; p.out_h * p.out_w];
        for y in 0..p.out_h {
            let (y0, y1, wy) = bilinear_source(y, p.h, p.out_h);
            for x in 0..p.out_w {
                let (x0, x1, wx) = bilinear_source(x, p.w, p.out_w);
                let (wx, wy) = (wx as f64, wy as f64);
                let at = |yy: usize, xx: usize| small[yy * p.w + xx];
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                cam[y * p.out_w + x] = top * (1.0 - wy) + bottom * wy;
            }
        }
        if p.renormalize {
            normalize_ref(&mut cam);
        }
        out.extend(cam);
    }
    out
}
