//! The library API: an `Explainer` gives what the engine gives, bit for bit, from any number of
//! threads, on the CPU and on wgpu; bad input is an error, and a non-finite image is named
//! and withheld while the rest of its batch is explained.

mod common;

use gradcam::internal::engine::{Classes, Engine, Request};
use gradcam::{BackendKind, Explainer, Explanation, Method, MethodOptions, Model, Targets, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Arc;

fn weights() -> std::path::PathBuf {
    common::fixture("resnet_basic_narrow/model.safetensors")
}

fn input(n: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let (h, w) = (37, 45);
    let data = (0..n * 3 * h * w)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Tensor::new(vec![n, 3, h, w], data)
}

const METHODS: [Method; 3] = [Method::Gradcam, Method::GradcamPlusPlus, Method::Eigencam];

fn explainer(backend: BackendKind) -> Explainer {
    Explainer::builder(Model::load(weights()).unwrap())
        .backend(backend)
        .methods(&METHODS)
        .layers(["layer3", "layer4"])
        .build()
        .unwrap()
}

#[track_caller]
fn assert_same(what: &str, a: &Explanation, b: &Explanation) {
    common::assert_bits_eq(&format!("{what}: logits"), &a.logits.data, &b.logits.data);
    assert_eq!(a.classes, b.classes, "{what}: classes");
    common::assert_bits_eq(
        &format!("{what}: probabilities"),
        &a.probabilities,
        &b.probabilities,
    );
    assert_eq!(a.maps.len(), b.maps.len());
    for (ma, mb) in a.maps.iter().zip(&b.maps) {
        assert_eq!(ma.method, mb.method);
        let what = format!("{what}: {}", ma.method.name());
        common::assert_bits_eq(&what, &ma.data.data, &mb.data.data);
    }
}

/// The explainer's maps are the engine's, bit for bit (same backend, same request).
#[test]
fn explainer_gives_the_engines_results() {
    let x = input(3, 1);
    let e = explainer(BackendKind::Cpu)
        .explain(&x, Targets::Top)
        .unwrap();
    let engine = Engine::new(common::cpu(), Model::load(weights()).unwrap()).unwrap();
    let layers = ["layer3".to_string(), "layer4".to_string()];
    let options = MethodOptions::default();
    let a = engine
        .attribute(
            &x,
            &Request {
                methods: &METHODS,
                layers: &layers,
                classes: Classes::TopK(1),
                options: &options,
            },
        )
        .unwrap();
    let t = &a.targets[0];
    common::assert_bits_eq("logits", &e.logits.data, &a.logits.data);
    assert_eq!(e.classes, t.classes);
    for (m, want) in e.maps.iter().zip(&t.maps) {
        assert_eq!(m.method, want.method);
        assert_eq!(m.data.shape, vec![3, 37, 45]);
        common::assert_bits_eq(m.method.name(), &m.data.data, &want.data.data);
        assert!(m.image(1).iter().all(|v| (0.0..=1.0).contains(v)));
    }
    assert!(e.failures.iter().all(Option::is_none));
    assert_eq!(e.map(Method::Eigencam).unwrap().size(), (37, 45));
}

/// Two threads sharing one explainer, each with its own batches, get what one thread alone
/// gets.
fn two_threads(backend: BackendKind) {
    let ex = Arc::new(explainer(backend));
    let batches: Vec<Tensor> = (0..4).map(|i| input(2, 10 + i)).collect();
    let alone: Vec<Explanation> = batches
        .iter()
        .map(|x| ex.explain(x, Targets::Top).unwrap())
        .collect();
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (ex, batches) = (ex.clone(), batches.clone());
            std::thread::spawn(move || {
                // Each thread runs every batch, in a different order.
                let order: Vec<usize> = if t == 0 {
                    vec![0, 1, 2, 3]
                } else {
                    vec![3, 2, 1, 0]
                };
                order
                    .into_iter()
                    .map(|i| (i, ex.explain(&batches[i], Targets::Top).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, e) in h.join().unwrap() {
            assert_same(&format!("batch {i}"), &e, &alone[i]);
        }
    }
}

#[test]
fn two_threads_share_one_explainer_cpu() {
    two_threads(BackendKind::Cpu);
}

#[test]
fn two_threads_share_one_explainer_wgpu() {
    two_threads(BackendKind::Wgpu);
}

/// Per-image targets give each image the map its class alone would give.
#[test]
fn per_image_targets_match_one_class_at_a_time() {
    let ex = explainer(BackendKind::Cpu);
    let x = input(3, 2);
    let classes = vec![4, 0, 7];
    let e = ex.explain(&x, Targets::PerImage(classes.clone())).unwrap();
    assert_eq!(e.classes, classes);
    for (i, &c) in classes.iter().enumerate() {
        let one = ex.explain(&x, Targets::Class(c)).unwrap();
        for (m, o) in e.maps.iter().zip(&one.maps) {
            common::assert_bits_eq(
                &format!("image {i} class {c} {}", m.method.name()),
                m.image(i),
                o.image(i),
            );
        }
        assert_eq!(e.probabilities[i].to_bits(), one.probabilities[i].to_bits());
    }
}

/// A non-finite image is named, its rows are NaN, and the others are what they would be
/// without it.
#[test]
fn a_non_finite_image_is_withheld_and_the_rest_explained() {
    let ex = explainer(BackendKind::Cpu);
    let clean = input(3, 3);
    let mut x = clean.clone();
    let per = x.data.len() / 3;
    x.data[per + 17] = f32::NAN;
    let e = ex.explain(&x, Targets::Top).unwrap();
    let reason = e.failures[1].as_deref().expect("image 1 failed");
    assert!(reason.contains("non-finite input value NaN"), "{reason}");
    assert!(e.failures[0].is_none() && e.failures[2].is_none());
    let want = ex.explain(&clean, Targets::Top).unwrap();
    for m in &e.maps {
        assert!(m.image(1).iter().all(|v| v.is_nan()));
        let w = want.map(m.method).unwrap();
        for i in [0, 2] {
            common::assert_bits_eq(m.method.name(), m.image(i), w.image(i));
        }
    }
    assert!(e.probabilities[1].is_nan());
}

/// `predict` is the forward pass of `explain`: the same logits, classes and probabilities, no
/// maps, and the same failures.
#[test]
fn predict_gives_explains_logits_without_maps() {
    let ex = explainer(BackendKind::Cpu);
    let mut x = input(3, 4);
    let want = ex.explain(&x, Targets::Top).unwrap();
    let got = ex.predict(&x).unwrap();
    common::assert_bits_eq("logits", &got.logits.data, &want.logits.data);
    assert_eq!(got.classes, want.classes);
    common::assert_bits_eq("probabilities", &got.probabilities, &want.probabilities);
    assert!(got.maps.is_empty() && got.failures.iter().all(Option::is_none));
    x.data[5] = f32::INFINITY;
    let got = ex.predict_owned(x).unwrap();
    assert!(got.failures[0]
        .as_deref()
        .unwrap()
        .contains("non-finite input value inf"));
    assert!(got.logits.data[..got.logits.shape[1]]
        .iter()
        .all(|v| v.is_nan()));
    assert!(got.failures[1].is_none() && got.failures[2].is_none());
    assert!(ex
        .predict(&Tensor::new(vec![1, 1, 4, 4], vec![0.0; 16]))
        .is_err());
}

#[test]
fn bad_input_is_an_error() {
    let ex = explainer(BackendKind::Cpu);
    let err = |x: &Tensor, t: Targets| ex.explain(x, t).unwrap_err().to_string();
    let x = input(2, 4);
    let flat = Tensor::new(vec![2, 3 * 37 * 45], x.data.clone());
    assert!(err(&flat, Targets::Top).contains("rank 4"));
    let gray = Tensor::new(vec![6, 1, 37, 45], x.data.clone());
    assert!(err(&gray, Targets::Top).contains("3 input channels; the input has 1"));
    let lie = Tensor {
        shape: vec![3, 3, 37, 45],
        data: x.data.clone(),
    };
    assert!(err(&lie, Targets::Top).contains("holds"));
    assert!(err(&x, Targets::PerImage(vec![1])).contains("1 target classes for 2 images"));
    assert!(err(&x, Targets::Class(10)).contains("out of range"));
    assert!(err(&x, Targets::PerImage(vec![1, 99])).contains("class 99 is out of range"));
    let empty = Tensor::new(vec![0, 3, 37, 45], vec![]);
    assert!(err(&empty, Targets::Top).contains("at least 1"));
    // The explainer still works after each of these.
    ex.explain(&x, Targets::Top).unwrap();
}

#[test]
fn bad_settings_fail_at_build() {
    let build = |f: fn(gradcam::ExplainerBuilder) -> gradcam::ExplainerBuilder| {
        f(Explainer::builder(Model::load(weights()).unwrap()).backend(BackendKind::Cpu))
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(build(|b| b.layers(["layer5"])).contains("unknown layer 'layer5'"));
    assert!(build(|b| b.methods(&[])).contains("method"));
    assert!(build(|b| b.methods(&[Method::Gradcam, Method::Gradcam])).contains("twice"));
    assert!(build(|b| b.threads(0)).contains("at least 1"));
    let aug = |b: gradcam::ExplainerBuilder| {
        b.methods(&[Method::Saliency]).options(MethodOptions {
            aug_smooth: true,
            ..Default::default()
        })
    };
    assert!(build(aug).contains("CAM methods"));
}

/// `threads(1)` runs on a pool of its own and gives the same bits as the global pool.
#[test]
fn a_thread_count_of_its_own() {
    let x = input(2, 6);
    let one = Explainer::builder(Model::load(weights()).unwrap())
        .backend(BackendKind::Cpu)
        .methods(&METHODS)
        .layers(["layer3", "layer4"])
        .threads(1)
        .build()
        .unwrap();
    assert_same(
        "1 thread",
        &one.explain(&x, Targets::Top).unwrap(),
        &explainer(BackendKind::Cpu)
            .explain(&x, Targets::Top)
            .unwrap(),
    );
}

/// The model's preprocessing is its family's evaluation transform, and it batches images.
#[test]
fn preprocessing_and_image_helpers() {
    use gradcam::image::{self, Filter, Resize, RgbImage};
    let model = Model::load(weights()).unwrap();
    let t = model.preprocessing();
    assert_eq!(t.resize, Resize::Shorter(256));
    assert_eq!(t.crop, Some((224, 224)));
    assert_eq!(t.filter, Filter::Bilinear);
    let photo = RgbImage::from_fn(300, 260, |x, y| ::image::Rgb([x as u8, y as u8, 7]));
    let batch = t.batch(&[photo.clone(), photo.clone()]).unwrap();
    assert_eq!(batch.shape, vec![2, 3, 224, 224]);
    let one = t.apply(&photo);
    common::assert_bits_eq("preprocessed", &batch.data[..one.tensor.len()], &one.tensor);
    let cam = vec![0.5f32; 224 * 224];
    let over = image::overlay(&one.rgb, &cam, 0.5).unwrap();
    assert_eq!(over.dimensions(), (224, 224));
    assert!(image::overlay(&one.rgb, &cam[1..], 0.5).is_err());
    assert!(image::overlay(&one.rgb, &vec![f32::NAN; 224 * 224], 0.5).is_err());
    assert!(image::heatmap(&cam, 224, 224).is_ok());
    let bad = image::decode_bytes(b"\x89PNG\r\n\x1a\n truncated", "upload.png").unwrap_err();
    assert!(bad.to_string().starts_with("input upload.png:"), "{bad}");
    let missing = image::decode("no/such/photo.jpg").unwrap_err();
    assert!(
        missing.to_string().contains("no/such/photo.jpg"),
        "{missing}"
    );
}
