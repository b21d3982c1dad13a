//! Every attribution method against its reference (scripts/make_method_fixtures.py): the
//! pytorch-grad-cam CAMs (two layers each, several layers, softmax targets, the second class,
//! eigen_smooth, aug_smooth), FullGrad, Captum's integrated gradients, and PyTorch
//! re-implementations of kazuto1011's saliency, guided backpropagation, deconvnet and
//! occlusion, on seed-cnn, a narrow ResNet and a narrow VGG11-BN.
//!
//! Tolerances:
//! - CAMs (normalized to [0, 1]): max abs ≤ 1e-3, the parity tolerance of tests/parity.rs
//!   (f32 sums in another order, OpenCV's bilinear weights in fixed point). The measured
//!   differences are printed; ScoreCAM's softmax over near-equal scores is no worse here.
//! - Gradient maps and integrated gradients: max abs ≤ 1e-4 × the largest magnitude (f32
//!   sums through a dozen layers, as tests/images.rs's guided backpropagation).
//! - Occlusion (logit differences): max abs ≤ 1e-4 × the largest |logit|.
//! - The same tolerances on wgpu: its kernels are checked against the CPU backend to ~1e-5
//!   (tests/backends.rs), far inside them.
//! - EigenCAM and Eigen-Grad-CAM: against pytorch-grad-cam with the projection's sign fixed
//!   (the engine's rule); against pytorch-grad-cam as it is, per image, either equal or its
//!   reference's sign differs (counted and printed).

use gradcam::internal::backend::Backend;
use gradcam::internal::engine::{Classes, Engine, MapKind, Method, MethodOptions, Request, Score};
use gradcam::internal::model::Model;
use gradcam::internal::tensor::Tensor;
use safetensors::SafeTensors;

mod common;
use common::fixture_tensor as tensor;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

fn method(name: &str) -> Method {
    use gradcam::Named;
    Method::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs one manifest case; returns the engine's map.
fn run<B: Backend>(e: &Engine<B>, x: &Tensor, logits: &Tensor, case: &serde_json::Value) -> Tensor {
    let m = method(case["method"].as_str().unwrap());
    let layers: Vec<String> = case["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    let classes: Vec<usize> = case["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    // The fixture's classes are each image's top-1 or top-2 class.
    let k = logits.shape[1];
    let ranked: Vec<Vec<usize>> = logits
        .data
        .chunks(k)
        .map(gradcam::internal::engine::ranked)
        .collect();
    let rank = (0..2)
        .find(|&r| classes.iter().zip(&ranked).all(|(c, order)| order[r] == *c))
        .expect("classes are ranks 1 or 2");
    let mut o = MethodOptions {
        eigen_smooth: case["eigen_smooth"].as_bool().unwrap_or(false),
        aug_smooth: case["aug_smooth"].as_bool().unwrap_or(false),
        ..MethodOptions::default()
    };
    if case["target"] == "softmax" {
        o.score = Score::Softmax;
    }
    if let Some(s) = case["steps"].as_u64() {
        o.steps = s as usize;
    }
    if let (Some(p), Some(s)) = (case["patch"].as_u64(), case["stride"].as_u64()) {
        o.patch = p as usize;
        o.stride = s as usize;
    }
    let req = Request {
        methods: &[m],
        layers: &layers,
        classes: Classes::TopK(rank + 1),
        options: &o,
    };
    let mut a = e
        .attribute(x, &req)
        .unwrap_or_else(|err| panic!("{case}: {err}"));
    let t = a.targets.remove(rank);
    assert_eq!(t.classes, classes, "{case}");
    t.maps.into_iter().next().unwrap().data
}

/// `repeats`: whether to run the cases whose backend work is another case's, repeated (the
/// integrated-gradients case with 50 steps runs the 8-step case's kernels 50 times; its own
/// part, the path's weighting, is host code that the CPU run checks). On lavapipe those three
/// cases took 127 of the wgpu run's 291 s.
fn methods_match_references<B: Backend>(make: impl Fn() -> B, repeats: bool) {
    let mut checked = 0;
    for name in ["seed_cnn", "resnet_basic_narrow", "vgg11_bn_narrow"] {
        let dir = common::fixture("methods").join(name);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let x = tensor(&st, "input");
        let logits = tensor(&st, "logits");
        let model = Model::load(common::fixture(name).join("model.safetensors")).unwrap();
        let e = Engine::new(make(), model).unwrap();
        let mut flips = 0;
        for case in manifest["cases"].as_array().unwrap() {
            let key = case["key"].as_str().unwrap();
            let m = method(case["method"].as_str().unwrap());
            if !repeats && case["steps"].as_u64().is_some_and(|s| s > 8) {
                continue;
            }
            let want = tensor(&st, key);
            let start = std::time::Instant::now();
            let got = run(&e, &x, &logits, case);
            let took = start.elapsed();
            assert_eq!(got.shape, want.shape, "{name} {key}");
            let n = got.shape[0];
            let per = got.len() / n;
            let scale = want.data.iter().fold(0f32, |s, v| s.max(v.abs()));
            let (tol, what) = match m.kind() {
                MapKind::Cam => (1e-3, "abs".to_string()),
                MapKind::Gradient => (1e-4 * scale, format!("1e-4 × max {scale:.2e}")),
                MapKind::Signed => {
                    let l = logits.data.iter().fold(0f32, |s, v| s.max(v.abs()));
                    (1e-4 * l, format!("1e-4 × max logit {l:.2e}"))
                }
            };
            if case["pgc_sign"].as_bool() == Some(true) {
                // pytorch-grad-cam's own sign: per image equal, or its sign was the other one.
                let fixed = tensor(&st, key.trim_end_matches(".pgc"));
                for i in 0..n {
                    let r = i * per..(i + 1) * per;
                    let d = max_abs(&got.data[r.clone()], &want.data[r.clone()]);
                    if d > tol {
                        let sign_differs = max_abs(&fixed.data[r.clone()], &want.data[r]) > tol;
                        assert!(
                            sign_differs,
                            "{name} {key}[{i}]: {d:.2e} with the same sign"
                        );
                        flips += 1;
                    }
                }
                continue;
            }
            let d = max_abs(&got.data, &want.data);
            eprintln!("{name} {key}: max abs diff {d:.2e} ({what}), {took:.2?}");
            assert!(d <= tol, "{name} {key}: {d:.2e} > {tol:.2e}");
            checked += 1;
        }
        eprintln!(
            "{name}: pytorch-grad-cam's SVD sign differed from the fixed sign on {flips} maps"
        );
    }
    assert!(checked >= 120, "{checked} cases");
}

#[test]
fn cpu_methods_match_references() {
    methods_match_references(common::cpu, true);
}

/// The same cases on wgpu (lavapipe in CI): the fused CAM step of every combine, the strided
/// copies of AblationCAM and the backward passes run in WGSL; the host parts are shared.
#[test]
fn wgpu_methods_match_references() {
    methods_match_references(common::wgpu, false);
}

/// The random CAM is seeded: the same seed gives the same map, another seed another.
#[test]
fn random_cam_is_seeded() {
    let model = Model::load(common::fixture("seed_cnn").join("model.safetensors")).unwrap();
    let e = Engine::new(common::cpu(), model).unwrap();
    let bytes = std::fs::read(common::fixture("methods/seed_cnn/expected.safetensors")).unwrap();
    let x = tensor(&SafeTensors::deserialize(&bytes).unwrap(), "input");
    let cam = |seed| {
        let o = MethodOptions {
            seed,
            ..MethodOptions::default()
        };
        let req = Request {
            methods: &[Method::Random],
            layers: &[],
            classes: Classes::TopK(1),
            options: &o,
        };
        e.attribute(&x, &req)
            .unwrap()
            .targets
            .remove(0)
            .maps
            .remove(0)
            .data
    };
    let (a, b, c) = (cam(1), cam(1), cam(2));
    assert_eq!(a.data, b.data);
    assert_ne!(a.data, c.data);
    assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// SmoothGrad with no noise is the plain map; with noise it is the mean of noisy maps and
/// differs from it.
#[test]
fn smoothgrad_without_noise_is_the_plain_map() {
    let model = Model::load(common::fixture("seed_cnn").join("model.safetensors")).unwrap();
    let e = Engine::new(common::cpu(), model).unwrap();
    let bytes = std::fs::read(common::fixture("methods/seed_cnn/expected.safetensors")).unwrap();
    let x = tensor(&SafeTensors::deserialize(&bytes).unwrap(), "input");
    let map = |smooth, noise| {
        let o = MethodOptions {
            smooth,
            noise,
            steps: 4,
            ..MethodOptions::default()
        };
        let req = Request {
            methods: &[Method::Saliency, Method::IntegratedGradients],
            layers: &[],
            classes: Classes::TopK(1),
            options: &o,
        };
        let mut t = e.attribute(&x, &req).unwrap().targets.remove(0);
        (t.maps.remove(0).data, t.maps.remove(0).data)
    };
    let (plain_s, plain_ig) = map(0, 0.0);
    let (s, ig) = map(3, 0.0);
    assert!(max_abs(&plain_s.data, &s.data) <= 1e-6);
    assert!(max_abs(&plain_ig.data, &ig.data) <= 1e-6);
    let (noisy, _) = map(3, 0.5);
    assert!(max_abs(&plain_s.data, &noisy.data) > 1e-4);
    assert!(noisy.data.iter().all(|v| v.is_finite()));
}

/// Several methods in one request give each method's own map, as when run alone.
#[test]
fn methods_together_match_methods_alone() {
    let model =
        Model::load(common::fixture("resnet_basic_narrow").join("model.safetensors")).unwrap();
    let e = Engine::new(common::cpu(), model).unwrap();
    let bytes = std::fs::read(common::fixture(
        "methods/resnet_basic_narrow/expected.safetensors",
    ))
    .unwrap();
    let x = tensor(&SafeTensors::deserialize(&bytes).unwrap(), "input");
    let o = MethodOptions::default();
    let all = [
        Method::Gradcam,
        Method::GradcamPlusPlus,
        Method::Fullgrad,
        Method::Saliency,
        Method::GuidedGradcam,
        Method::Deconvnet,
        Method::Ablationcam,
    ];
    let run = |ms: &[Method]| {
        let req = Request {
            methods: ms,
            layers: &[],
            classes: Classes::TopK(2),
            options: &o,
        };
        e.attribute(&x, &req).unwrap()
    };
    let together = run(&all);
    for (i, &m) in all.iter().enumerate() {
        let alone = run(&[m]);
        for (t, a) in together.targets.iter().zip(&alone.targets) {
            assert_eq!(t.maps[i].method, m);
            assert_eq!(t.maps[i].data.data, a.maps[0].data.data, "{}", m.name());
        }
    }
}

/// Requests that make no sense are one clear error each.
#[test]
fn bad_requests_are_errors() {
    let model = Model::load(common::fixture("seed_cnn").join("model.safetensors")).unwrap();
    let e = Engine::new(common::cpu(), model).unwrap();
    let x = Tensor::new(vec![1, 3, 32, 32], vec![0.1; 3 * 32 * 32]);
    let check = |ms: &[Method], o: MethodOptions, layers: &[String], want: &str| {
        let req = Request {
            methods: ms,
            layers,
            classes: Classes::TopK(1),
            options: &o,
        };
        let err = e.attribute(&x, &req).err().expect("an error").to_string();
        assert!(err.contains(want), "{err}");
    };
    let d = MethodOptions::default;
    check(&[], d(), &[], "no `method`");
    check(&[Method::Gradcam, Method::Gradcam], d(), &[], "twice");
    let aug = MethodOptions {
        aug_smooth: true,
        ..d()
    };
    check(
        &[Method::Gradcam, Method::Saliency],
        aug,
        &[],
        "`aug_smooth`",
    );
    let eig = MethodOptions {
        eigen_smooth: true,
        ..d()
    };
    check(&[Method::Fullgrad], eig, &[], "fullgrad");
    let smooth = MethodOptions { smooth: 2, ..d() };
    check(&[Method::Gradcam], smooth, &[], "`smooth`");
    check(&[Method::Gradcam], d(), &["fc2".into()], "fc2");
    check(&[Method::Scorecam], d(), &["nope".into()], "nope");
}
