//! Engine behaviour beyond numeric parity: the backward pass stops at the target layer,
//! results are deterministic and independent of batching, degenerate CAMs stay finite.

use gradcam::internal::backend::cpu::{cam::grad_cam, CpuBackend};
use gradcam::internal::engine::Engine;
use gradcam::internal::model::Model;
use gradcam::internal::ops::{CamCombine, GradCamParams};
use gradcam::internal::tensor::Tensor;

mod common;

fn engine(fixture: &str) -> Engine<CpuBackend> {
    let path = common::fixture(fixture).join("model.safetensors");
    Engine::new(CpuBackend { poison: true }, Model::load(&path).unwrap()).unwrap()
}

fn input(shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape,
        (0..n)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect(),
    )
}

#[test]
fn backward_pass_stops_at_the_target_layer() {
    let mut e = engine("vgg11_bn_narrow");
    e.enable_profile();
    let x = input(vec![2, 3, 64, 48]);
    e.explain(&x, None, None).unwrap();
    let p = e.take_profile();
    assert!(
        !p.contains_key("conv2d.backward"),
        "default target is after the last conv: {p:?}"
    );
    assert_eq!(p["linear.backward"].1, 3);
    // Every conv → BatchNorm → ReLU whose inner values nothing reads runs fused.
    assert_eq!(
        p["conv2d+batch_norm+relu"].1, 8,
        "the forward pass runs every conv, fused: {p:?}"
    );
    assert!(!p.contains_key("batch_norm"), "{p:?}");

    // features.8 is the 3rd of 8 convs: the backward pass crosses the 5 convs after it.
    e.explain(&x, Some("features.8"), None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["conv2d.backward"].1, 5, "{p:?}");
    assert_eq!(p["batch_norm.backward"].1, 6, "{p:?}");
    // features.8 (a conv output) is kept as the target, so its BatchNorm runs without it
    // (fused with its ReLU).
    assert_eq!(p["conv2d"].1, 1, "{p:?}");
    assert_eq!(p["batch_norm+relu"].1, 1, "{p:?}");
    assert_eq!(p["conv2d+batch_norm+relu"].1, 7, "{p:?}");
}

#[test]
fn conv_then_relu_runs_fused_without_batch_norm() {
    // AlexNet's (and VGG's) convs have a bias and no BatchNorm: each conv → ReLU is one call.
    let mut e = engine("families/alexnet");
    e.enable_profile();
    e.explain(&input(vec![2, 3, 96, 96]), None, None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["conv2d+relu"].1, 5, "{p:?}");
    assert!(!p.contains_key("conv2d"), "{p:?}");
}

#[test]
fn dense_layers_run_concat_batch_norm_relu_fused() {
    // DenseNet (blocks 2, 3, 2, 2): each dense layer but a block's first, and each of the 3
    // transitions, starts with cat → norm → relu: one call. A block's first layer reads one
    // value: norm → relu. norm5's output is the default target, kept: cat → norm5, then relu.
    let mut e = engine("families/densenet121");
    e.enable_profile();
    let x = input(vec![2, 3, 80, 64]);
    e.explain(&x, None, None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["cat+batch_norm+relu"].1, 5 + 3, "{p:?}");
    assert_eq!(p["batch_norm+relu"].1, 4, "{p:?}");
    assert_eq!(p["cat+batch_norm"].1, 1, "{p:?}");
    assert!(
        !p.contains_key("cat") && !p.contains_key("batch_norm"),
        "{p:?}"
    );
    // The second block's output (a concat) is a target: kept, so it runs on its own, and the
    // transition after it fuses only its norm → relu; norm5's output, no longer the target,
    // joins its cat and the functional relu.
    e.explain(&x, Some("features.denseblock2"), None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["cat"].1, 1, "{p:?}");
    assert_eq!(p["batch_norm+relu"].1, 4 + 1, "{p:?}");
    assert_eq!(p["cat+batch_norm+relu"].1, 5 + 2 + 1, "{p:?}");
}

#[test]
fn convnext_linear_then_gelu_runs_fused() {
    // ConvNeXt (blocks 1, 1, 2, 1): each block's first Linear → GELU is one call.
    let mut e = engine("families/convnext_tiny");
    e.enable_profile();
    e.explain(&input(vec![2, 3, 64, 64]), None, None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["linear+gelu"].1, 5, "{p:?}");
    assert!(!p.contains_key("gelu"), "{p:?}");
}

#[test]
fn squeeze_excitation_blocks_run_fused() {
    // MobileNetV3-Large: 8 of its 15 blocks (features.4-6, 11-15) have a squeeze-excitation
    // layer; each is one call when no backward pass crosses it.
    let mut e = engine("families/mobilenet_v3_large");
    e.enable_profile();
    let x = input(vec![2, 3, 64, 64]);
    e.explain(&x, None, None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["squeeze_excitation"].1, 8, "{p:?}");
    assert!(!p.contains_key("mul"), "{p:?}");
    // Target features.4.block: the backward pass crosses the 7 SE layers after it, which run
    // as their separate ops (their gates are kept); block 4's own runs fused.
    e.explain(&x, Some("features.4.block"), None).unwrap();
    let p = e.take_profile();
    assert_eq!(p["squeeze_excitation"].1, 1, "{p:?}");
    assert_eq!(p["mul"].1, 7, "{p:?}");
    assert_eq!(p["mul.backward"].1, 7 * 2, "{p:?}");
}

#[test]
fn residual_gradients_from_both_branches_are_summed() {
    // Target layer1: its output feeds layer2.0's main branch and its downsample branch.
    let mut e = engine("resnet_basic_narrow");
    e.enable_profile();
    e.explain(&input(vec![2, 3, 64, 48]), Some("layer1"), None)
        .unwrap();
    let p = e.take_profile();
    assert!(p.contains_key("add.backward"), "{p:?}");
}

#[test]
fn results_are_deterministic_and_independent_of_batching() {
    let e = engine("resnet_bottleneck_narrow");
    let x = input(vec![3, 3, 40, 56]);
    let a = e.explain(&x, Some("layer3"), Some(2)).unwrap();
    let b = e.explain(&x, Some("layer3"), Some(2)).unwrap();
    assert_eq!(a.cams.data, b.cams.data, "bitwise identical runs");
    assert_eq!(a.logits.data, b.logits.data);
    let per_image = 3 * 40 * 56;
    for i in 0..3 {
        let xi = Tensor::new(
            vec![1, 3, 40, 56],
            x.data[i * per_image..(i + 1) * per_image].to_vec(),
        );
        let one = e.explain(&xi, Some("layer3"), Some(2)).unwrap();
        let cam = &a.cams.data[i * 40 * 56..(i + 1) * 40 * 56];
        let diff = one
            .cams
            .data
            .iter()
            .zip(cam)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= 1e-5,
            "image {i}: batch vs single CAM differ by {diff}"
        );
    }
}

#[test]
fn degenerate_cams_are_zero_not_nan() {
    let p = GradCamParams {
        n: 2,
        c: 3,
        h: 2,
        w: 3,
        out_h: 5,
        out_w: 7,
        combine: CamCombine::Mean,
        renormalize: true,
    };
    let act = vec![1.0f32; 36];
    // Image 0: all-negative weights (ReLU zeroes the CAM); image 1: a constant CAM.
    let grad: Vec<f32> = (0..36).map(|i| if i < 18 { -1.0 } else { 0.5 }).collect();
    let mut cam = vec![f32::NAN; 70];
    grad_cam(&p, &act, &grad, &mut cam);
    assert!(cam.iter().all(|&v| v == 0.0), "{cam:?}");
}

#[test]
fn cam_upsampling_uses_half_pixel_centers() {
    // A 1×2 CAM [0, 1] upsampled to width 4 with align_corners=False: source x = (i+0.5)/2-0.5
    // = -0.25, 0.25, 0.75, 1.25 → clamped weights 0, 0.25, 0.75, 1.
    let p = GradCamParams {
        n: 1,
        c: 1,
        h: 1,
        w: 2,
        out_h: 1,
        out_w: 4,
        combine: CamCombine::Mean,
        renormalize: true,
    };
    let mut cam = vec![f32::NAN; 4];
    grad_cam(&p, &[0.0, 1.0], &[1.0, 1.0], &mut cam);
    let expected = [0.0, 0.25, 0.75, 1.0];
    for (c, e) in cam.iter().zip(expected) {
        assert!((c - e).abs() < 1e-6, "{cam:?}");
    }
}
