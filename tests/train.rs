//! Training against PyTorch and end to end: two torch.optim.SGD steps (momentum, weight
//! decay) on the seed CNN and on a narrow VGG11-BN (frozen BatchNorm) from the fixtures of
//! scripts/make_train_fixtures.py, on the CPU and on wgpu; a short run on shapes whose loss goes
//! down; checkpoints that reload; CIFAR files of the wrong size.

mod common;

use gradcam::internal::backend::cpu::training::SgdParams;
use gradcam::internal::backend::TrainBackend;
use gradcam::internal::data::{cifar, shapes, Dataset};
use gradcam::internal::model::weights::WeightStore;
use gradcam::internal::model::Model;
use gradcam::internal::train::{checkpoint, fit, init, FitOptions, Trainer};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/train")
        .join(name)
}

fn load(path: &Path) -> WeightStore {
    WeightStore::load(path).unwrap()
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

/// Two SGD steps in Rust from the fixture's initial weights and batches must give PyTorch's
/// parameters. Tolerances: every parameter within 1e-4 relative (max |Δ| ≤ 1e-4·max |ref| per
/// tensor) — and, because the update itself is small next to the weights, the update
/// (after − before) within 1e-3 relative L2 of PyTorch's: the gradients are sums of
/// thousands of f32 products, ordered differently in the two frameworks (~1e-6 relative
/// each), and the relative size of that noise grows where an update is small. The same bounds
/// hold on every backend: wgpu sums in yet another order, with the same f32 precision.
fn check_two_sgd_steps<B: TrainBackend>(be: B, name: &str) {
    let dir = fixture(name);
    let initial = load(&dir.join("model.safetensors"));
    let batches = load(&dir.join("batches.safetensors"));
    let expected = load(&dir.join("expected.safetensors"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let sgd = SgdParams {
        lr: manifest["sgd"]["lr"].as_f64().unwrap(),
        momentum: manifest["sgd"]["momentum"].as_f64().unwrap(),
        weight_decay: manifest["sgd"]["weight_decay"].as_f64().unwrap(),
    };
    let mut trainer = Trainer::with_backend(be, initial.state_dict(), None, sgd, 0).unwrap();
    // PyTorch ran with dropout p = 0 (its mask cannot be reproduced here).
    trainer.dropout_p = 0.0;
    for i in 0..2 {
        let x = batches.tensors()[&format!("x{i}")].to_tensor();
        let labels: Vec<usize> = batches.tensors()[&format!("y{i}")]
            .data
            .iter()
            .map(|&v| v as usize)
            .collect();
        let stats = trainer.step(&x, &labels).unwrap();
        let torch_loss = manifest["losses"][i].as_f64().unwrap();
        assert!(
            (stats.loss - torch_loss).abs() <= 1e-5 * torch_loss.abs().max(1.0),
            "{name} step {i}: loss {} vs PyTorch {torch_loss}",
            stats.loss
        );
    }
    let mut checked = 0;
    for (pname, want) in expected.tensors() {
        let got = trainer
            .param(pname)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let before = &initial.tensors()[pname].data;
        let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_diff = got
            .iter()
            .zip(&want.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            max_diff <= 1e-4 * scale,
            "{name} {pname}: max |Δ| {max_diff} vs scale {scale}"
        );
        let du_rust: Vec<f32> = got.iter().zip(before).map(|(a, b)| a - b).collect();
        let du_torch: Vec<f32> = want.data.iter().zip(before).map(|(a, b)| a - b).collect();
        let err = rel_l2(&du_rust, &du_torch);
        assert!(err <= 1e-3, "{name} {pname}: update rel L2 error {err}");
        checked += 1;
    }
    assert!(checked >= 10, "{name}: only {checked} params compared");
}

#[test]
fn two_sgd_steps_on_seed_cnn_match_pytorch() {
    check_two_sgd_steps(common::cpu(), "seed_cnn");
}

#[test]
fn two_sgd_steps_on_narrow_vgg11_bn_match_pytorch() {
    check_two_sgd_steps(common::cpu(), "vgg11_bn_narrow");
}

#[test]
fn two_sgd_steps_on_seed_cnn_match_pytorch_wgpu() {
    check_two_sgd_steps(common::wgpu(), "seed_cnn");
}

#[test]
fn two_sgd_steps_on_narrow_vgg11_bn_match_pytorch_wgpu() {
    check_two_sgd_steps(common::wgpu(), "vgg11_bn_narrow");
}

/// Two steps of `trainer` on the fixture's batches; returns the losses.
fn two_fixture_steps<B: TrainBackend>(trainer: &mut Trainer<B>, name: &str) -> Vec<f64> {
    let batches = load(&fixture(name).join("batches.safetensors"));
    (0..2)
        .map(|i| {
            let x = batches.tensors()[&format!("x{i}")].to_tensor();
            let labels: Vec<usize> = batches.tensors()[&format!("y{i}")]
                .data
                .iter()
                .map(|&v| v as usize)
                .collect();
            trainer.step(&x, &labels).unwrap().loss
        })
        .collect()
}

/// With dropout active (p = 0.5 in VGG's classifier), the CPU and wgpu see the same masks (drawn
/// on the host from the trainer's seeded stream), so two SGD steps agree as closely as the
/// dropout-free ones agree with PyTorch: losses within 1e-5 relative, every parameter within
/// 1e-4·(the tensor's max |value|). Different masks would change the losses by far more; the
/// losses also differ from PyTorch's dropout-free ones, so dropout was on.
#[test]
fn dropout_masks_are_the_same_on_cpu_and_wgpu() {
    let name = "vgg11_bn_narrow";
    let dir = fixture(name);
    let initial = load(&dir.join("model.safetensors"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let sgd = SgdParams {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-3,
    };
    let state = initial.state_dict();
    let mut cpu = Trainer::with_backend(common::cpu(), state.clone(), None, sgd, 7).unwrap();
    let mut gpu = Trainer::with_backend(common::wgpu(), state, None, sgd, 7).unwrap();
    assert_eq!(cpu.dropout_p, 0.5);
    let (lc, lg) = (
        two_fixture_steps(&mut cpu, name),
        two_fixture_steps(&mut gpu, name),
    );
    for i in 0..2 {
        assert!(
            (lc[i] - lg[i]).abs() <= 1e-5 * lc[i].abs(),
            "losses cpu {lc:?} wgpu {lg:?}"
        );
        let no_dropout = manifest["losses"][i].as_f64().unwrap();
        assert!((lc[i] - no_dropout).abs() > 1e-3, "dropout had no effect");
    }
    let (sc, sg) = (cpu.state_dict().unwrap(), gpu.state_dict().unwrap());
    for (pname, want) in &sc {
        let got = &sg[pname].data;
        let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_diff = got
            .iter()
            .zip(&want.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            max_diff <= 1e-4 * scale,
            "{pname}: max |Δ| {max_diff} vs scale {scale}"
        );
    }
}

fn tiny_run(seed: u64, epochs: usize) -> (Vec<f64>, Trainer, Dataset) {
    let splits = shapes::splits(48, 12, seed);
    let state = init::fresh("seed-cnn", 3, seed).unwrap();
    let sgd = SgdParams {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut trainer = Trainer::new(state, Some("seed-cnn"), sgd, seed).unwrap();
    let opts = FitOptions {
        epochs,
        batch_size: 16,
        augment: false,
        seed,
        progress: false,
    };
    let reports = fit(&mut trainer, &splits.train, &splits.test, &opts, |_| {}).unwrap();
    (
        reports.iter().map(|r| r.loss).collect(),
        trainer,
        splits.test,
    )
}

/// 48 shapes images, 20 epochs (960 image-steps, seconds): the loss must fall well below
/// its starting value ln 3 ≈ 1.10. The seed CNN sits on a plateau near ln 3 for its first
/// several hundred steps (PyTorch does the same on these images: 0.53–0.72 after 20 epochs
/// over three seeds), so the bound, the mean of the last three epochs below 0.85·the first,
/// is loose; a fixed seed makes the run exactly reproducible.
#[test]
fn a_tiny_training_run_lowers_the_loss() {
    let (losses, _, _) = tiny_run(3, 20);
    assert!(
        (losses[0] - 3f64.ln()).abs() < 0.2,
        "first epoch loss {losses:?}"
    );
    let last = losses[17..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.85 * losses[0], "loss did not go down: {losses:?}");
}

#[test]
fn training_is_deterministic_and_checkpoints_reload() {
    let (a, trainer, test) = tiny_run(5, 1);
    let (b, _, _) = tiny_run(5, 1);
    assert_eq!(a, b, "same seed, same losses");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &trainer.state_dict().unwrap()).unwrap();
    let model = Model::load(&path).unwrap();
    assert_eq!(model.arch, "seed-cnn");
    let (x, _) = test.batch(&[0, 1, 2]);
    let engine = gradcam::internal::engine::Engine::new(
        gradcam::internal::backend::cpu::CpuBackend::default(),
        model,
    )
    .unwrap();
    let logits = engine.forward(&x).unwrap();
    let ours = trainer.predict(&x).unwrap();
    assert!(rel_l2(&logits.data, &ours) < 1e-6, "reloaded model differs");
}

#[test]
fn fresh_weights_follow_pytorch_default_bounds() {
    let s = init::fresh("seed-cnn", 3, 0).unwrap();
    for (name, fan_in) in [("conv1", 75), ("conv2", 1600), ("fc1", 16), ("fc2", 2000)] {
        let bound = 1.0 / (fan_in as f32).sqrt();
        for t in ["weight", "bias"] {
            let v = &s[&format!("{name}.{t}")].data;
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound, "{name}.{t}: max {max}, bound {bound}");
            if v.len() >= 16 {
                // 16 uniform draws all inside half the bound: chance 2^-16.
                assert!(max > 0.5 * bound, "{name}.{t}: max {max}, bound {bound}");
            }
        }
    }
    assert_eq!(s["fc2.weight"].shape, vec![3, 2000]);
}

#[test]
fn replace_head_gives_the_new_class_count() {
    let mut s = init::fresh("seed-cnn", 10, 0).unwrap();
    let store = WeightStore::from_tensors("t", s.clone());
    let model = Model::from_store(&store, None).unwrap();
    init::replace_head(&mut s, &model, 4, 1).unwrap();
    assert_eq!(s["fc2.weight"].shape, vec![4, 2000]);
    assert_eq!(s["fc2.bias"].shape, vec![4]);
    let t = Trainer::new(
        s,
        None,
        SgdParams {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        0,
    )
    .unwrap();
    assert_eq!(t.model.num_classes, 4);
}

#[test]
fn malformed_cifar_files_are_clear_errors() {
    let mut set = Dataset::default();
    let err = cifar::parse(
        Path::new("data_batch_1.bin"),
        &[0u8; 3073 * 2 + 5],
        &mut set,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("data_batch_1.bin") && err.contains("6151 bytes") && err.contains("3073"),
        "{err}"
    );
    let mut rec = vec![0u8; 3073];
    rec[0] = 10;
    let err = cifar::parse(Path::new("b.bin"), &rec, &mut set)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 10"), "{err}");
    let err = cifar::load(Path::new("/nonexistent-cifar"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("data_batch_1.bin"), "{err}");
    // A good record: label and normalized pixels.
    let mut rec = vec![255u8; 3073];
    rec[0] = 7;
    let mut set = Dataset::default();
    cifar::parse(Path::new("ok.bin"), &rec, &mut set).unwrap();
    assert_eq!(set.labels, vec![7]);
    assert_eq!(set.images.len(), 3072);
    assert!(set.images.iter().all(|&v| v == 1.0));
}

#[test]
fn shapes_are_reproducible_balanced_and_boxed() {
    let a = shapes::generate(30, 9);
    let b = shapes::generate(30, 9);
    assert_eq!(a.images, b.images);
    assert_eq!(a.labels.iter().filter(|&&l| l == 2).count(), 10);
    let boxes = a.boxes.as_ref().unwrap();
    for bx in boxes {
        let side = bx.x1 - bx.x0;
        assert_eq!(side, bx.y1 - bx.y0);
        assert!((shapes::MIN_SIZE..=shapes::MAX_SIZE).contains(&side));
        assert!(bx.x1 <= 32 && bx.y1 <= 32);
    }
    assert!(a.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    let c = shapes::generate(30, 10);
    assert_ne!(a.images, c.images);
}
