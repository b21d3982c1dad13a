//! The faithfulness metrics (src/metrics/) against pytorch-grad-cam 1.5's, from
//! tests/fixtures/metrics/ (scripts/make_metric_fixtures.py): the seed_cnn model, its 3 inputs and
//! 5 CAMs (smooth random maps, a quantized one with wide ties, pytorch-grad-cam's GradCAM), ROAD
//! with the imputer's noise set to 0.
//!
//! Tolerances:
//! - removed pixels: exact (numpy's percentile is reproduced in its own f32 arithmetic; one
//!   pixel's difference would move an imputed value by O(1)).
//! - imputed images: max abs difference ≤ 1e-5. Both sides solve the same f64 system (ours with
//!   faer's sparse LU, pytorch-grad-cam with scipy's SuperLU) and round to f32; the solves differ
//!   by ~1e-15 relative, so the f32 images agree to about 1 ulp of values of magnitude ≤ 4.
//! - metric values: abs difference ≤ 2e-6 for logits (they are ~0.1 in this untrained net;
//!   the engine's f32 forward differs from torch's by summation order, ~1e-7 relative to the
//!   largest partial sums), ≤ 5e-7 for softmax probabilities (~0.1, and differences of them).

use gradcam::internal::engine::Engine;
use gradcam::internal::metrics::{
    self, cam_mult_image, evaluate, impute, removed_pixels, Metrics, MetricsRecord, Order,
    RoadConfig, Score, Summary,
};
use gradcam::internal::model::Model;
use gradcam::internal::tensor::Tensor;
use gradcam::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::SafeTensors;
use serde_json::Value;

mod common;
use common::{fixture, fixture_tensor};

const IMPUTED_TOL: f32 = 1e-6;
const LOGIT_TOL: f32 = 5e-7;
const SOFTMAX_TOL: f32 = 1e-7;

struct Fixture {
    manifest: Value,
    bytes: Vec<u8>,
    inputs: Tensor,
}

impl Fixture {
    fn load() -> Self {
        let read = |rel: &str| std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let manifest = serde_json::from_slice(&read("metrics/manifest.json")).unwrap();
        let seed = read("seed_cnn/expected.safetensors");
        let inputs = fixture_tensor(&SafeTensors::deserialize(&seed).unwrap(), "input");
        Fixture {
            manifest,
            bytes: read("metrics/expected.safetensors"),
            inputs,
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn f32(&self, name: &str) -> Tensor {
        fixture_tensor(&self.st(), name)
    }

    fn mask(&self, name: &str) -> (Vec<usize>, Vec<bool>) {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        (
            t.shape().to_vec(),
            t.data().iter().map(|&b| b != 0).collect(),
        )
    }

    fn cases(&self) -> Vec<(usize, usize)> {
        let cases = self.manifest["cases"].as_array().unwrap();
        let field = |c: &Value, k: &str| c[k].as_u64().unwrap() as usize;
        cases
            .iter()
            .map(|c| (field(c, "image"), field(c, "class")))
            .collect()
    }

    fn percentiles(&self, key: &str) -> Vec<u32> {
        let v = self.manifest[key].as_array().unwrap();
        v.iter().map(|p| p.as_u64().unwrap() as u32).collect()
    }

    /// Image `i` [3, H, W] of the seed_cnn inputs.
    fn image(&self, i: usize) -> Tensor {
        let s = &self.inputs.shape;
        let n = s[1] * s[2] * s[3];
        Tensor::new(
            s[1..].to_vec(),
            self.inputs.data[i * n..(i + 1) * n].to_vec(),
        )
    }

    /// The cam of case `i` [H, W].
    fn cam(&self, i: usize) -> Tensor {
        let cams = self.f32("cams");
        let hw = cams.shape[1] * cams.shape[2];
        Tensor::new(
            cams.shape[1..].to_vec(),
            cams.data[i * hw..(i + 1) * hw].to_vec(),
        )
    }
}

fn orders() -> [(Order, &'static str); 2] {
    [
        (Order::MostRelevantFirst, "morf"),
        (Order::LeastRelevantFirst, "lerf"),
    ]
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn removed_pixels_match_pytorch_grad_cam() {
    let f = Fixture::load();
    let percentiles = f.percentiles("percentiles");
    for (order, name) in orders() {
        let (shape, removed) = f.mask(&format!("removed_{name}"));
        let hw = shape[2] * shape[3];
        for case in 0..f.cases().len() {
            let cam = f.cam(case);
            for (j, &p) in percentiles.iter().enumerate() {
                let at = (case * percentiles.len() + j) * hw;
                let ours = removed_pixels(&cam.data, p, order).unwrap();
                let differ = ours
                    .iter()
                    .zip(&removed[at..at + hw])
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(differ, 0, "case {case} {name} p{p}: {differ} pixels differ");
            }
        }
    }
}

#[test]
fn imputer_matches_pytorch_grad_cam() {
    let f = Fixture::load();
    let percentiles = f.percentiles("imputed_percentiles");
    let mut rng = StdRng::seed_from_u64(0);
    let mut worst = 0.0f32;
    for (order, name) in orders() {
        let expected = f.f32(&format!("imputed_{name}"));
        let n = expected.shape[2..].iter().product::<usize>();
        let (h, w) = (expected.shape[3], expected.shape[4]);
        for (case, &(image, _)) in f.cases().iter().enumerate() {
            let x = f.image(image);
            let cam = f.cam(case);
            for (j, &p) in percentiles.iter().enumerate() {
                let removed = removed_pixels(&cam.data, p, order).unwrap();
                let ours = impute(&x.data, &removed, h, w, 0.0, &mut rng).unwrap();
                let at = (case * percentiles.len() + j) * n;
                let err = max_abs(&ours, &expected.data[at..at + n]);
                assert!(err <= IMPUTED_TOL, "case {case} {name} p{p}: {err}");
                worst = worst.max(err);
            }
        }
    }
    // A non-square image with removed border pixels: a swapped row/column stride fails here.
    let odd = f.f32("odd.image");
    let (_, removed) = f.mask("odd.removed");
    let (h, w) = (odd.shape[1], odd.shape[2]);
    let ours = impute(&odd.data, &removed, h, w, 0.0, &mut rng).unwrap();
    let err = max_abs(&ours, &f.f32("odd.imputed").data);
    assert!(err <= IMPUTED_TOL, "odd {h}x{w}: {err}");
    eprintln!("imputed images: max abs difference {}", worst.max(err));
}

fn engine() -> Engine<gradcam::internal::backend::cpu::CpuBackend> {
    let model = Model::load(fixture("seed_cnn/model.safetensors")).unwrap();
    Engine::new(common::cpu(), model).unwrap()
}

fn scorer<'a>(
    engine: &'a Engine<gradcam::internal::backend::cpu::CpuBackend>,
    score: Score,
    calls: &'a mut Vec<usize>,
) -> impl FnMut(&Tensor, &[usize]) -> Result<Vec<f32>> + 'a {
    move |batch, classes| {
        calls.push(batch.shape[0]);
        score.of(&engine.forward(batch)?, classes)
    }
}

#[test]
fn metrics_match_pytorch_grad_cam() {
    let f = Fixture::load();
    let engine = engine();
    let config = RoadConfig {
        percentiles: f.percentiles("percentiles"),
        noise: 0.0,
    };
    let mut rng = StdRng::seed_from_u64(0);
    for (score, tol) in [(Score::Logit, LOGIT_TOL), (Score::Softmax, SOFTMAX_TOL)] {
        let expected = &f.manifest["values"][score.name()];
        let value = |key: &str, case: usize| expected[key][case].as_f64().unwrap() as f32;
        let mut worst = 0.0f32;
        let mut check = |what: &str, case: usize, ours: f32, theirs: f32| {
            let err = (ours - theirs).abs();
            worst = worst.max(err);
            assert!(
                err <= tol,
                "{} case {case} {what}: ours {ours}, pytorch-grad-cam {theirs}",
                score.name()
            );
        };
        for (case, &(image, class)) in f.cases().iter().enumerate() {
            let (x, cam) = (f.image(image), f.cam(case));
            let mut calls = vec![];
            let m: Metrics = evaluate(
                &x,
                &cam,
                class,
                &config,
                &mut rng,
                &mut scorer(&engine, score, &mut calls),
            )
            .unwrap();
            assert_eq!(calls, [2 + 2 * config.percentiles.len()], "one batch");
            let c = &m.cam_mult_image;
            check(
                "confidence change",
                case,
                c.confidence_change,
                value("cam_mult_image_confidence_change", case),
            );
            check(
                "drop",
                case,
                c.drop_in_confidence,
                value("drop_in_confidence", case),
            );
            let increase = value("increase_in_confidence", case);
            assert_eq!(c.increase_in_confidence, increase, "case {case} increase");
            for (j, &p) in config.percentiles.iter().enumerate() {
                let per = |key: &str| expected[key][j][case].as_f64().unwrap() as f32;
                check(
                    &format!("MoRF p{p}"),
                    case,
                    m.road.morf[j],
                    per("road_morf"),
                );
                check(
                    &format!("LeRF p{p}"),
                    case,
                    m.road.lerf[j],
                    per("road_lerf"),
                );
            }
            check(
                "MoRF average",
                case,
                m.road.morf_average,
                value("road_morf_average", case),
            );
            check(
                "LeRF average",
                case,
                m.road.lerf_average,
                value("road_lerf_average", case),
            );
            check(
                "combined",
                case,
                m.road.combined,
                value("road_combined", case),
            );

            let mut calls = vec![];
            let alone = cam_mult_image(&x, &cam, class, &mut scorer(&engine, score, &mut calls));
            assert_eq!(
                alone.unwrap(),
                m.cam_mult_image,
                "case {case}: alone = in evaluate"
            );
            assert_eq!(calls, [2]);
        }
        eprintln!("{}: max abs difference {worst}", score.name());
    }
    let increases = &f.manifest["values"]["logit"]["increase_in_confidence"];
    let increases = increases.as_array().unwrap();
    assert!(
        increases.iter().any(|v| v.as_f64() == Some(1.0)),
        "a case with an increase"
    );
    assert!(
        increases.iter().any(|v| v.as_f64() == Some(0.0)),
        "and one without"
    );
}

/// The noise: N(0, σ) on removed pixels only, reproducible from the seed.
#[test]
fn noise_is_seeded_and_on_removed_pixels_only() {
    let f = Fixture::load();
    let (x, cam) = (f.image(0), f.cam(0));
    let (h, w) = (cam.shape[0], cam.shape[1]);
    let removed = removed_pixels(&cam.data, 50, Order::MostRelevantFirst).unwrap();
    let run = |noise: f32, seed: u64| {
        impute(
            &x.data,
            &removed,
            h,
            w,
            noise,
            &mut StdRng::seed_from_u64(seed),
        )
        .unwrap()
    };
    let clean = run(0.0, 1);
    assert_eq!(run(0.5, 1), run(0.5, 1), "same seed, same image");
    assert_ne!(run(0.5, 1), run(0.5, 2), "another seed, other noise");
    let noisy = run(0.5, 1);
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0usize);
    for (i, (a, b)) in noisy.iter().zip(&clean).enumerate() {
        if removed[i % (h * w)] {
            let d = (a - b) as f64;
            (sum, sum2, n) = (sum + d, sum2 + d * d, n + 1);
        } else {
            assert_eq!(a, b, "a known pixel changed");
        }
    }
    let (mean, sd) = (
        sum / n as f64,
        (sum2 / n as f64 - (sum / n as f64).powi(2)).sqrt(),
    );
    // n ≈ 1500 draws: the standard error of the mean is 0.5/√n ≈ 0.013, of the sd ≈ 0.009
    assert!(
        mean.abs() < 0.06 && (sd - 0.5).abs() < 0.05,
        "mean {mean}, sd {sd} of {n}"
    );

    let engine = engine();
    let score = |seed: u64| {
        let mut calls = vec![];
        let config = RoadConfig::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut scorer = scorer(&engine, Score::Logit, &mut calls);
        let m = evaluate(&x, &cam, 6, &config, &mut rng, &mut scorer);
        m.unwrap()
    };
    assert_eq!(score(3), score(3), "seeded metrics are deterministic");
}

/// Every pixel removed (a flat CAM): the singular system gives 0, as scipy's spsolve does.
#[test]
fn a_flat_cam_imputes_zeros() {
    let x: Vec<f32> = (0..3 * 5 * 4).map(|i| i as f32 * 0.1 - 2.0).collect();
    let cam = vec![0.25; 5 * 4];
    for (order, name) in orders() {
        for p in [0, 10, 90, 100] {
            let removed = removed_pixels(&cam, p, order).unwrap();
            assert!(
                removed.iter().all(|&r| r),
                "{name} p{p}: all pixels removed"
            );
            let out = impute(&x, &removed, 5, 4, 0.0, &mut StdRng::seed_from_u64(0)).unwrap();
            assert!(out.iter().all(|&v| v == 0.0), "{name} p{p}");
        }
    }
    // And nothing removed leaves the image as it was.
    let out = impute(&x, &[false; 20], 5, 4, 0.3, &mut StdRng::seed_from_u64(0)).unwrap();
    assert_eq!(out, x);
}

#[test]
fn bad_inputs_are_errors() {
    let x = Tensor::new(vec![3, 4, 5], vec![0.5; 60]);
    let cam = Tensor::new(vec![4, 5], vec![0.5; 20]);
    let mut rng = StdRng::seed_from_u64(0);
    let config = RoadConfig::default();
    let mut ok = |b: &Tensor, _: &[usize]| Ok(vec![0.0; b.shape[0]]);
    let err = |r: Result<Metrics>| r.unwrap_err().to_string();

    let wrong = Tensor::new(vec![5, 4], vec![0.5; 20]);
    let e = err(evaluate(&x, &wrong, 0, &config, &mut rng, &mut ok));
    assert!(e.contains("[5, 4]") && e.contains("[3, 4, 5]"), "{e}");
    let e = cam_mult_image(&x, &Tensor::new(vec![1, 4, 5], vec![0.5; 20]), 0, &mut ok);
    assert!(e.unwrap_err().to_string().contains("[1, 4, 5]"));

    let mut nan_cam = cam.clone();
    nan_cam.data[7] = f32::NAN;
    let e = err(evaluate(&x, &nan_cam, 0, &config, &mut rng, &mut ok));
    assert!(
        e.contains("cam") && e.contains("NaN") && e.contains("[1, 2]"),
        "{e}"
    );
    let mut inf_x = x.clone();
    inf_x.data[59] = f32::INFINITY;
    let e = err(evaluate(&inf_x, &cam, 0, &config, &mut rng, &mut ok));
    assert!(
        e.contains("image") && e.contains("inf") && e.contains("[2, 3, 4]"),
        "{e}"
    );

    let bad = |percentiles: Vec<u32>, noise: f32| RoadConfig { percentiles, noise };
    let e = err(evaluate(
        &x,
        &cam,
        0,
        &bad(vec![10, 101], 0.0),
        &mut rng,
        &mut ok,
    ));
    assert!(e.contains("101"), "{e}");
    let e = err(evaluate(&x, &cam, 0, &bad(vec![], 0.0), &mut rng, &mut ok));
    assert!(e.contains("percentile"), "{e}");
    let e = err(evaluate(
        &x,
        &cam,
        0,
        &bad(vec![50], f32::NAN),
        &mut rng,
        &mut ok,
    ));
    assert!(e.contains("noise"), "{e}");
    let e = err(evaluate(
        &x,
        &cam,
        0,
        &bad(vec![50], -1.0),
        &mut rng,
        &mut ok,
    ));
    assert!(e.contains("noise"), "{e}");

    let mut short = |_: &Tensor, _: &[usize]| Ok(vec![0.0; 3]);
    let e = err(evaluate(&x, &cam, 0, &config, &mut rng, &mut short));
    assert!(e.contains("3 scores"), "{e}");
    let mut nan = |b: &Tensor, _: &[usize]| Ok(vec![f32::NAN; b.shape[0]]);
    let e = err(evaluate(&x, &cam, 0, &config, &mut rng, &mut nan));
    assert!(e.contains("NaN"), "{e}");
    let mut failing = |_: &Tensor, _: &[usize]| Err(gradcam::Error::Usage("scorer broke".into()));
    assert!(err(evaluate(&x, &cam, 0, &config, &mut rng, &mut failing)).contains("scorer broke"));

    assert!(impute(&[0.0; 59], &[true; 20], 4, 5, 0.0, &mut rng).is_err());
    assert!(impute(&[0.0; 60], &[true; 19], 4, 5, 0.0, &mut rng).is_err());
    assert!(impute(&[], &[], 0, 0, 0.0, &mut rng).is_err());
    let e = impute(&[f32::NAN; 60], &[true; 20], 4, 5, 0.0, &mut rng).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");

    assert!(removed_pixels(&[], 50, Order::MostRelevantFirst).is_err());
    assert!(removed_pixels(&[0.5], 101, Order::LeastRelevantFirst).is_err());
    let e = removed_pixels(&[0.5, f32::NAN], 50, Order::MostRelevantFirst).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    assert!(Score::Logit
        .of(&Tensor::new(vec![2, 0], vec![]), &[0, 0])
        .is_err());

    let logits = Tensor::new(vec![2, 3], vec![0.0; 6]);
    let e = Score::Logit.of(&logits, &[0, 3]).unwrap_err().to_string();
    assert!(e.contains("class 3"), "{e}");
    assert!(
        Score::Softmax.of(&logits, &[0]).is_err(),
        "2 rows for 1 class"
    );
    assert!("probability".parse::<Score>().is_err());
}

#[test]
fn scores_are_logits_or_softmax() {
    let logits = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
    assert_eq!(Score::Logit.of(&logits, &[2, 0]).unwrap(), [3.0, 0.0]);
    let p = Score::Softmax.of(&logits, &[2, 0]).unwrap();
    let e3 = 3f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp());
    assert!(
        (p[0] as f64 - e3).abs() < 1e-7 && (p[1] - 1.0 / 3.0).abs() < 1e-7,
        "{p:?}"
    );
    assert_eq!("softmax".parse::<Score>().unwrap(), Score::Softmax);
}

fn record(method: &str, score: Score, change: f32, combined: f32) -> MetricsRecord {
    MetricsRecord {
        image: format!("{method}.png"),
        method: method.into(),
        class: 1,
        score,
        noise: 0.0,
        metrics: Metrics {
            cam_mult_image: metrics::CamMultImage::from_scores(0.5, 0.5 + change),
            road: metrics::Road::from_scores(
                &[10, 90],
                0.5,
                &[0.5 - combined, 0.5 - combined],
                &[0.5 + combined, 0.5 + combined],
            ),
        },
    }
}

#[test]
fn record_json_and_summary_table() {
    let r = record("gradcam", Score::Softmax, -0.25, 0.125);
    let j = r.to_json();
    assert_eq!(j["method"], "gradcam");
    assert_eq!(j["score"], "softmax");
    assert_eq!(j["cam_mult_image_confidence_change"], -0.25);
    assert_eq!(j["drop_in_confidence"], 0.25);
    assert_eq!(j["increase_in_confidence"], 0.0);
    assert_eq!(j["road_morf"]["90"], -0.125);
    assert_eq!(j["road_lerf"]["10"], 0.125);
    assert_eq!(j["road_morf_average"], -0.125);
    assert_eq!(j["road_lerf_average"], 0.125);
    assert_eq!(j["road_combined"], 0.125);

    let mut s = Summary::default();
    s.add(&record("gradcam", Score::Logit, -0.25, 0.125));
    s.add(&record("eigencam", Score::Logit, 0.5, 0.0));
    s.add(&record("gradcam", Score::Logit, 0.25, 0.375));
    s.add(&record("gradcam", Score::Softmax, 1.0, 1.0));
    let mean = |m: &str, score: Score, k: &str| s.mean(m, score, k).unwrap();
    assert_eq!(
        mean("gradcam", Score::Logit, "cam_mult_image_confidence_change"),
        0.0
    );
    assert_eq!(mean("gradcam", Score::Logit, "drop_in_confidence"), 0.125);
    assert_eq!(mean("gradcam", Score::Logit, "increase_in_confidence"), 0.5);
    assert_eq!(mean("gradcam", Score::Logit, "road_combined"), 0.25);
    assert_eq!(mean("gradcam", Score::Softmax, "road_combined"), 1.0);
    assert_eq!(s.mean("gradcam", Score::Logit, "nonsense"), None);
    assert_eq!(s.mean("scorecam", Score::Logit, "road_combined"), None);
    let json = s.to_json();
    assert_eq!(json[0]["method"], "gradcam");
    assert_eq!(json[0]["images"], 2);
    assert_eq!(json[1]["method"], "eigencam");

    let table = s.table();
    eprintln!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "header, 3 rows, the directions");
    assert!(lines[0].starts_with("method") && lines[0].contains("road_combined"));
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], ["gradcam", "logit", "2"]);
    assert_eq!(
        row[3..],
        [
            "0.000000",
            "0.125000",
            "0.500000",
            "-0.250000",
            "0.250000",
            "0.250000"
        ]
    );
    assert!(lines[2].starts_with("eigencam") && lines[3].contains("softmax"));
    assert!(
        lines[4].contains("road_combined higher") && lines[4].contains("road_morf_average lower")
    );
}
