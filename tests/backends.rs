//! Every op of the Backend trait on every backend. The op-check table of
//! `gradcam::internal::backend::check` (its cases, f64 references and tolerances, the ones `gradcam
//! selftest` runs; src/backend/check/cases.rs gives each tolerance's reason) as one test per op
//! family and backend, then the checks that are not table cases: fused calls exactly equal to
//! the separate ops, NaN through every ReLU path, the dispatch and binding limits, bind-group
//! reuse, out-of-range parameters, the CPU's exact zeros of constant maps.
//!
//! `on_backends!(body: arms)` makes one test `body::arm` per arm, calling `body(&backend,
//! precision)`: `cpu`, `wgpu` (lavapipe in CI), `wgpu_v1` (its naive conv kernels), `cuda` (its
//! default conv kernel) and `cuda_v1` … `cuda_v4`. Every backend poisons its outputs with NaN.
//! The CUDA arms run where a CUDA device opens and otherwise print that they skipped.

mod common;

use gradcam::internal::backend::check::{cases, Family, Precision};
use gradcam::internal::backend::cpu::cam;
use gradcam::internal::backend::{concat_then_affine, Backend, ConvEpilogue};
use gradcam::internal::ops::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// `on_backends!(body: arms)`: the test `body::arm` for each arm. `on_backends!(body = family;
/// arms)` first defines `body` as that family's table.
macro_rules! on_backends {
    ($body:ident = $family:expr; $($arm:ident),+ $(,)?) => {
        fn $body<B: Backend>(be: &B, precision: Precision) {
            check_family(be, $family, precision);
        }
        on_backends!($body: $($arm),+);
    };
    ($body:ident: $($arm:ident),+ $(,)?) => {
        mod $body {
            $(
                #[test]
                fn $arm() {
                    if let Some((be, precision)) = super::arm::$arm() {
                        super::$body(&be, precision);
                    }
                }
            )+
        }
    };
}

/// The backends of `on_backends!`, each with the precision it convolves in; None, after a line
/// saying why, where no CUDA device opens or it lacks a conv variant's tensor cores.
mod arm {
    use super::common;
    use gradcam::internal::backend::check::Precision;
    use gradcam::internal::backend::cpu::CpuBackend;
    use gradcam::internal::backend::cuda::{self, CudaBackend};
    use gradcam::internal::backend::wgpu::WgpuBackend;
    use gradcam::internal::backend::ConvKernel;

    pub fn cpu() -> Option<(CpuBackend, Precision)> {
        Some((common::cpu(), Precision::Fp32))
    }

    pub fn wgpu() -> Option<(WgpuBackend, Precision)> {
        Some((common::wgpu(), Precision::Fp32))
    }

    pub fn wgpu_v1() -> Option<(WgpuBackend, Precision)> {
        Some((common::wgpu_v1(), Precision::Fp32))
    }

    pub fn cuda() -> Option<(CudaBackend, Precision)> {
        open_cuda(None)
    }

    pub fn cuda_v1() -> Option<(CudaBackend, Precision)> {
        open_cuda(Some(ConvKernel::V1))
    }

    pub fn cuda_v2() -> Option<(CudaBackend, Precision)> {
        open_cuda(Some(ConvKernel::V2))
    }

    pub fn cuda_v3() -> Option<(CudaBackend, Precision)> {
        open_cuda(Some(ConvKernel::V3))
    }

    pub fn cuda_v4() -> Option<(CudaBackend, Precision)> {
        open_cuda(Some(ConvKernel::V4))
    }

    fn open_cuda(conv: Option<ConvKernel>) -> Option<(CudaBackend, Precision)> {
        if !cuda::is_available() {
            eprintln!("skipped: no CUDA device");
            return None;
        }
        let mut be = match CudaBackend::new(0, conv) {
            Ok(be) => be,
            Err(e) if conv.is_some_and(ConvKernel::tensor_cores) => {
                eprintln!("skipped: {e}");
                return None;
            }
            Err(e) => panic!("{e}"),
        };
        be.poison = true;
        let precision = Precision::of_conv(be.conv_kernel());
        Some((be, precision))
    }
}

/// A family's table on `be`: prints every line, fails with the lines that failed.
fn check_family<B: Backend>(be: &B, family: Family, precision: Precision) {
    let lines = family.check(be, precision);
    for l in &lines {
        println!("{} {l}", be.name());
    }
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| !l.ok)
        .map(|l| l.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} {family:?}: {} of {} checks failed:\n{}",
        be.name(),
        failed.len(),
        lines.len(),
        failed.join("\n")
    );
}

// The table: conv kernels on every conv variant (the separate squeeze-excitation ops run
// convs), the rest on each backend's default.
on_backends!(conv = Family::Conv; cpu, wgpu, wgpu_v1, cuda_v1, cuda_v2, cuda_v3, cuda_v4);
on_backends!(conv_fused = Family::ConvFused;
    cpu, wgpu, wgpu_v1, cuda_v1, cuda_v2, cuda_v3, cuda_v4);
on_backends!(squeeze_excitation = Family::SqueezeExcitation;
    cpu, wgpu, wgpu_v1, cuda_v1, cuda_v2, cuda_v3, cuda_v4);
on_backends!(pool = Family::Pool; cpu, wgpu, cuda);
on_backends!(elementwise = Family::Elementwise; cpu, wgpu, cuda);
on_backends!(activation = Family::Activation; cpu, wgpu, cuda);
on_backends!(binary = Family::Binary; cpu, wgpu, cuda);
on_backends!(strided_copy = Family::StridedCopy; cpu, wgpu, cuda);
on_backends!(linear = Family::Linear; cpu, wgpu, cuda);
on_backends!(layer_norm = Family::LayerNorm; cpu, wgpu, cuda);
on_backends!(class_seed = Family::ClassSeed; cpu, wgpu, cuda);
on_backends!(grad_cam = Family::GradCam; cpu, wgpu, cuda);
on_backends!(score_cam_masks = Family::ScoreCamMasks; cpu, wgpu, cuda);

/// The conv table's two lists take the paths they are named for.
#[test]
fn conv_cases_are_dense_and_grouped_as_listed() {
    for p in cases::dense_convs() {
        assert!(p.is_dense(), "{p:?}");
    }
    for p in cases::grouped_convs() {
        assert!(!p.is_dense() && p.fits(), "{p:?}");
    }
}

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The same f32 values, bit for bit.
#[track_caller]
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

/// The fused conv → BatchNorm (→ add) (→ ReLU) call gives exactly what the ops give one after
/// another (same f32 operations in the same order), on every path of the CPU kernel: the
/// table's `epilogue_convs`, and one image with its pixel blocks in parallel (64×64 output),
/// 3×3 and pointwise.
fn conv2d_fused_is_the_separate_ops<B: Backend>(be: &B, _: Precision) {
    let mut rng = StdRng::seed_from_u64(29);
    let mut cases = cases::epilogue_convs();
    cases.push(Conv2dParams::dense(
        1,
        3,
        (64, 64),
        5,
        (3, 3),
        (1, 1),
        (1, 1),
    ));
    cases.push(Conv2dParams::dense(
        1,
        8,
        (64, 64),
        5,
        (1, 1),
        (1, 1),
        (0, 0),
    ));
    for p in cases {
        let up = |v: &[f32]| be.upload(v).unwrap();
        let (x, w, b) = (
            up(&random(p.input_len(), &mut rng)),
            up(&random(p.weight_len(), &mut rng)),
            up(&random(p.c_out, &mut rng)),
        );
        let (scale, shift) = (
            up(&random(p.c_out, &mut rng)),
            up(&random(p.c_out, &mut rng)),
        );
        let a = ChannelAffineParams {
            n: p.n,
            c: p.c_out,
            hw: p.h_out() * p.w_out(),
        };
        let residual = up(&random(p.output_len(), &mut rng));
        // No activation, ReLU (in the GPU fused kernels), and two the GPUs run after them.
        let acts = [
            None,
            Some(Activation::Relu),
            Some(Activation::Silu),
            Some(Activation::Hardswish),
        ];
        // (BatchNorm, add): a conv → activation without BatchNorm is VGG's.
        let cases = [(true, false), (true, true), (false, false)];
        for (bn, add, act) in cases
            .into_iter()
            .flat_map(|(bn, add)| acts.map(|a| (bn, add, a)))
        {
            let act = act.map(|act| ActivationParams {
                act,
                alpha: 0.0,
                beta: 0.0,
                len: a.len(),
            });
            let y = be.conv2d(&p, &x, &w, Some(&b)).unwrap();
            let mut want = if bn {
                be.channel_affine(&a, &y, &scale, &shift).unwrap()
            } else {
                y
            };
            if add {
                want = be.add(&want, &residual, a.len()).unwrap();
            }
            match act {
                Some(act) if act.act == Activation::Relu => want = be.relu(&want, a.len()).unwrap(),
                Some(act) => want = be.activation(&act, &want).unwrap(),
                None => {}
            }
            let want = be.download(&want).unwrap();
            let e = ConvEpilogue {
                bn: bn.then_some((&scale, &shift)),
                residual: add.then_some(&residual),
                act,
            };
            let got = be.conv2d_fused(&p, &x, &w, Some(&b), &e).unwrap();
            let name = act.map_or("none", |a| a.act.name());
            let what = format!(
                "{} conv2d_fused {p:?} bn {bn} add {add} act {name}",
                be.name()
            );
            assert_same(&what, &be.download(&got).unwrap(), &want);
        }
    }
}

on_backends!(conv2d_fused_is_the_separate_ops: cpu, wgpu);

/// The fused (concat →) BatchNorm (→ activation) call gives exactly what the ops give one
/// after another: one piece and several of odd widths, tiny planes (grouped into one job) and
/// larger ones, every activation of the table and none.
fn channel_affine_fused<B: Backend>(be: &B, _: Precision) {
    let mut rng = StdRng::seed_from_u64(31);
    for (n, widths, hw) in [
        (2, vec![5], 35),
        (3, vec![3, 1, 6], 49),
        (2, vec![7, 2], 1),
        (2, vec![4, 9], 97 * 91),
    ] {
        let c = widths.iter().sum();
        let p = ChannelAffineParams { n, c, hw };
        let pieces: Vec<B::Buf> = widths
            .iter()
            .map(|&w| be.upload(&random(n * w * hw, &mut rng)).unwrap())
            .collect();
        let pieces: Vec<(&B::Buf, usize)> = pieces.iter().zip(widths.iter().copied()).collect();
        let scale = be.upload(&random(c, &mut rng)).unwrap();
        let shift = be.upload(&random(c, &mut rng)).unwrap();
        let acts = Activation::ALL.iter().map(|&act| {
            Some(ActivationParams {
                act,
                alpha: 0.125,
                beta: 0.875,
                len: p.len(),
            })
        });
        for act in acts.chain([None]) {
            let fused = be
                .channel_affine_fused(&p, &pieces, &scale, &shift, act.as_ref())
                .unwrap();
            let apart = concat_then_affine(be, &p, &pieces, &scale, &shift, act.as_ref()).unwrap();
            let (fused, apart) = (be.download(&fused).unwrap(), be.download(&apart).unwrap());
            let name = act.map_or("none", |a| a.act.name());
            assert_eq!(fused.len(), p.len());
            let same = fused
                .iter()
                .zip(&apart)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{} channel_affine_fused {p:?} widths {widths:?} act {name}",
                be.name()
            );
        }
    }
}

on_backends!(channel_affine_fused: cpu, wgpu);

/// The fused linear → activation call gives exactly what the ops give one after another, for
/// every activation of the table, on a short product and on one the CPU splits into row
/// blocks.
fn linear_fused<B: Backend>(be: &B, _: Precision) {
    let mut rng = StdRng::seed_from_u64(37);
    for (n, in_f, out_f) in [(5, 21, 13), (2 * 23 * 13, 19, 33)] {
        let p = LinearParams { n, in_f, out_f };
        let x = be.upload(&random(n * in_f, &mut rng)).unwrap();
        let w = be.upload(&random(out_f * in_f, &mut rng)).unwrap();
        let b = be.upload(&random(out_f, &mut rng)).unwrap();
        for &act in Activation::ALL {
            let a = ActivationParams {
                act,
                alpha: 0.125,
                beta: 0.875,
                len: n * out_f,
            };
            let fused = be.linear_fused(&p, &x, &w, Some(&b), &a).unwrap();
            let apart = be.linear(&p, &x, &w, Some(&b)).unwrap();
            let apart = be.activation(&a, &apart).unwrap();
            let (fused, apart) = (be.download(&fused).unwrap(), be.download(&apart).unwrap());
            let same = fused.len() == apart.len()
                && fused
                    .iter()
                    .zip(&apart)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} linear_fused {p:?} act {}", be.name(), act.name());
        }
    }
}

on_backends!(linear_fused: cpu, wgpu);

/// Every ReLU path keeps a NaN, as PyTorch does (a NaN turned into 0 would hide an overflow
/// from the non-finite checks on logits and CAMs): the ReLU kernel, the table's row, the fused
/// conv epilogue (with and without BatchNorm), and the squeeze-excitation block.
fn relu_keeps_nan<B: Backend>(be: &B, _: Precision) {
    let relu = |len| ActivationParams {
        act: Activation::Relu,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    let x = [1.0, f32::NAN, -2.0, 0.0, 3.0];
    let xb = be.upload(&x).unwrap();
    let plain = be.download(&be.relu(&xb, 5).unwrap()).unwrap();
    let row = be.download(&be.activation(&relu(5), &xb).unwrap()).unwrap();
    for (what, y) in [("relu", plain), ("activation relu", row)] {
        let want = [1.0, f32::NAN, 0.0, 0.0, 3.0];
        let same = y
            .iter()
            .zip(want)
            .all(|(a, b)| a == &b || a.is_nan() && b.is_nan());
        assert!(same, "{} {what}: {y:?}", be.name());
    }
    // A 1×1 conv over 2 images of 3×3 pixels, pixel 4 of image 1 NaN in every channel: its
    // outputs are NaN after the epilogue, and only they.
    let p = Conv2dParams::dense(2, 3, (3, 3), 4, (1, 1), (1, 1), (0, 0));
    let mut rng = StdRng::seed_from_u64(43);
    let mut x = random(p.input_len(), &mut rng);
    (0..3).for_each(|c| x[(3 + c) * 9 + 4] = f32::NAN);
    let up = |v: &[f32]| be.upload(v).unwrap();
    let (xb, w, bias) = (up(&x), up(&random(12, &mut rng)), up(&random(4, &mut rng)));
    let (scale, shift) = (up(&random(4, &mut rng)), up(&random(4, &mut rng)));
    for bn in [None, Some((&scale, &shift))] {
        let e = ConvEpilogue {
            bn,
            residual: None,
            act: Some(relu(p.output_len())),
        };
        let y = be
            .download(&be.conv2d_fused(&p, &xb, &w, Some(&bias), &e).unwrap())
            .unwrap();
        for (i, v) in y.iter().enumerate() {
            let poisoned = i / 36 == 1 && i % 9 == 4;
            assert_eq!(
                v.is_nan(),
                poisoned,
                "{} conv2d_fused bn {} [{i}] = {v}",
                be.name(),
                bn.is_some()
            );
        }
    }
    // Squeeze-excitation: a NaN pixel makes its image's means, hence all its outputs, NaN.
    let p = SqueezeExciteParams {
        n: 2,
        c: 3,
        h: 3,
        w: 3,
        squeeze: 2,
        act: relu(4),
        gate: ActivationParams {
            act: Activation::Sigmoid,
            ..relu(6)
        },
    };
    let (w1, b1, w2, b2) = (
        up(&random(6, &mut rng)),
        up(&random(2, &mut rng)),
        up(&random(6, &mut rng)),
        up(&random(3, &mut rng)),
    );
    let y = be
        .squeeze_excitation(&p, &xb, (&w1, &b1), (&w2, &b2))
        .unwrap();
    let y = be.download(&y).unwrap();
    assert!(
        y[..27].iter().all(|v| v.is_finite()),
        "{} squeeze_excitation image 0: {y:?}",
        be.name()
    );
    assert!(
        y[27..].iter().all(|v| v.is_nan()),
        "{} squeeze_excitation image 1: {y:?}",
        be.name()
    );
}

on_backends!(relu_keeps_nan: cpu, wgpu);

/// More elements than 65,535 workgroups of 256 hold: the dispatch must fold into 2-D and
/// still write every element exactly once.
fn relu_past_the_dispatch_limit<B: Backend>(be: &B, _: Precision) {
    let len = 256 * 65_535 + 1000;
    let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 3.0).collect();
    let got = be
        .download(&be.relu(&be.upload(&x).unwrap(), len).unwrap())
        .unwrap();
    assert_eq!(got.len(), len);
    for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
        assert!(g == v.max(0.0), "{}: element {i} is {g}", be.name());
    }
}

on_backends!(relu_past_the_dispatch_limit: cpu, wgpu);

/// ScoreCAM channels past the last one are an error, not a read past the buffer.
fn score_cam_masks_past_the_last_channel<B: Backend>(be: &B, _: Precision) {
    let p = ScoreMaskParams {
        image: 0,
        c0: 3,
        count: 2,
        c: 4,
        h: 2,
        w: 2,
        in_c: 3,
        out_h: 4,
        out_w: 4,
    };
    let err = be
        .score_cam_masks(
            &p,
            &be.upload(&[0.0; 48]).unwrap(),
            &be.upload(&[0.0; 16]).unwrap(),
        )
        .err()
        .expect("channels 3..5 of 4");
    assert!(err.to_string().contains("channels 3..5 of 4"), "{err}");
}

on_backends!(score_cam_masks_past_the_last_channel: cpu, wgpu);

/// The CPU's CAM of a constant map is exactly 0 (normalized with the 1e-7 epsilon alone, before
/// resizing): channels constant over their pixels, every pixel's map the same sum in the same
/// order; and a 1×1 layer. Every combine, normalized again after resizing and not.
#[test]
fn cpu_grad_cam_of_a_constant_map_is_zero() {
    let mut rng = StdRng::seed_from_u64(19);
    for combine in CamCombine::ALL {
        for renormalize in [true, false] {
            for (shape, (out_h, out_w)) in [([2, 7, 5, 4], (9, 10)), ([2, 3, 1, 1], (5, 4))] {
                let p = GradCamParams {
                    renormalize,
                    ..GradCamParams::new(&shape, out_h, out_w, combine)
                };
                let hw = p.h * p.w;
                let (mut act, mut grad) = (vec![], vec![]);
                for _ in 0..p.n * p.c {
                    // Large channels, so that the constant map is too.
                    let (a, g) = (
                        8.0 * rng.random_range(-0.5f32..1.0),
                        rng.random_range(-1.0..1.0),
                    );
                    act.extend(std::iter::repeat_n(a, hw));
                    let g_len = if combine == CamCombine::Weights {
                        1
                    } else {
                        hw
                    };
                    grad.extend(std::iter::repeat_n(g, g_len));
                }
                let mut cam = vec![0f32; p.n * out_h * out_w];
                cam::grad_cam(&p, &act, &grad, &mut cam);
                assert!(cam.iter().all(|&v| v == 0.0), "{p:?}: {cam:?}");
            }
        }
    }
}

/// The CPU's ScoreCAM mask of an all-zero channel is exactly 0, on every case of the table.
#[test]
fn cpu_score_cam_mask_of_a_zero_channel_is_zero() {
    let mut rng = StdRng::seed_from_u64(29);
    for p in cases::score_cam_masks() {
        let hw = p.h * p.w;
        let mut act = random(p.activation_len(), &mut rng);
        let first = (p.image * p.c + p.c0) * hw;
        act[first..first + hw].fill(0.0);
        let x = random(p.x_len(), &mut rng);
        let mut masked = vec![0f32; p.output_len()];
        cam::score_cam_masks(&p, &x, &act, &mut masked);
        assert!(masked[..p.x_len()].iter().all(|&v| v == 0.0), "{p:?}");
    }
}

/// Pipelines, uniform buffers and bind groups are made for the first batch of a shape only:
/// the buffer pool then holds what a batch needs and hands out the same buffers again, so the
/// second identical batch creates no bind group (and gives the same result).
#[test]
fn wgpu_second_batch_reuses_every_bind_group() {
    use gradcam::internal::engine::Engine;
    use gradcam::internal::model::Model;
    use gradcam::internal::tensor::Tensor;
    let model = Model::load(common::fixture("seed_cnn/model.safetensors")).unwrap();
    let mut be = common::wgpu();
    be.poison = false; // a poisoning fill is a dispatch of its own
    let engine = Engine::new(be, model).unwrap();
    let mut rng = StdRng::seed_from_u64(31);
    let x = Tensor::new(vec![3, 3, 32, 32], random(3 * 3 * 32 * 32, &mut rng));
    let first = engine.explain(&x, None, None).unwrap();
    let created = engine.backend.bind_groups_created();
    let second = engine.explain(&x, None, None).unwrap();
    assert_eq!(engine.backend.bind_groups_created(), created);
    assert_eq!(first.cams.data, second.cams.data);
    assert_eq!(first.logits.data, second.logits.data);
}

/// A tensor larger than one storage binding, given to an op that binds it whole, is one error
/// that names the tensor and the limit (lavapipe's limit is 128 MiB; adapters with more than
/// 512 MiB skip the check).
#[test]
fn wgpu_tensor_past_the_binding_limit_is_named() {
    let be = common::wgpu();
    let max = be.max_binding_bytes();
    if max > 512 << 20 {
        println!("binding limit {max} bytes: nothing to check here");
        return;
    }
    let len = (max / 4) as usize + 64;
    let x = be.upload(&vec![0.5; len]).unwrap();
    let p = ActivationParams {
        act: Activation::Silu,
        alpha: 0.0,
        beta: 0.0,
        len,
    };
    let msg = be.activation(&p, &x).unwrap_err().to_string();
    assert!(
        msg.contains("silu input") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}
