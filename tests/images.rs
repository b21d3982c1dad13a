//! Images in, pictures out: preprocessing against torchvision, golden heatmaps and overlays
//! against pytorch-grad-cam, guided backpropagation against PyTorch, and the CLI's handling of
//! directory trees, name collisions and bad files. Fixtures: scripts/make_image_fixtures.py.

use gradcam::internal::backend::cpu::CpuBackend;
use gradcam::internal::engine::{Classes, Engine, Method, MethodOptions, Request};
use gradcam::internal::imaging::load::decode;
use gradcam::internal::imaging::overlay::gradient_image;
use gradcam::internal::imaging::preprocess::{Filter, Resize, Transform};
use gradcam::internal::model::Model;
use gradcam::internal::tensor::Tensor;
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fixture_tensor as f32s, gradcam};

fn root() -> PathBuf {
    common::fixture("images")
}

fn seed_weights() -> PathBuf {
    common::fixture("seed_cnn/model.safetensors")
}

/// `gradcam explain --weights seed-cnn --out OUT extra...`
fn explain(out: &Path, extra: &[&str]) -> Output {
    let w = seed_weights();
    let mut args = vec![
        "explain",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    gradcam(&args)
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<usize> {
    let v = st.tensor(name).unwrap();
    v.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// (max abs difference, fraction of differing samples) between two images of one size.
fn image_diff(a: &image::RgbImage, b: &image::RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let frac = diffs.iter().filter(|&&d| d > 0).count() as f64 / diffs.len() as f64;
    (max, frac)
}

/// torchvision's Resize (bilinear and bicubic) + CenterCrop + ToTensor + Normalize, computed by
/// PIL and torchvision,
/// against ours. PNG and BMP inputs decode to the same pixels in both, and the resampler
/// re-implements Pillow's fixed-point arithmetic, so the tensors must agree to the last bit
/// (tolerance 1e-6 only to name a number; the measured difference is 0) — except where Pillow
/// ≥ 13 picks its pass order by a rule we do not reproduce (`tall_odd_crop`: 64×23 → 58×21,
/// both axes shrinking at slightly different rates), which may move a sample by one 8-bit level.
/// JPEG decoders may differ (libjpeg-turbo vs zune-jpeg: IDCT and chroma upsampling), so the
/// JPEG case allows 2/255 per sample before normalization.
#[test]
fn preprocessing_matches_torchvision() {
    let bytes = std::fs::read(root().join("expected/preprocess.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("expected/preprocess.json")).unwrap(),
    )
    .unwrap();
    let triple = |v: &Value| {
        let v: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        [v[0], v[1], v[2]]
    };
    for case in manifest.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let file = case["file"].as_str().unwrap();
        let resize = match &case["resize"] {
            Value::Array(hw) => Resize::Exact(
                hw[0].as_u64().unwrap() as usize,
                hw[1].as_u64().unwrap() as usize,
            ),
            n => Resize::Shorter(n.as_u64().unwrap() as usize),
        };
        let crop = case["crop"].as_u64().map(|c| (c as usize, c as usize));
        let std = triple(&case["std"]);
        let filter = match case["filter"].as_str().unwrap() {
            "bicubic" => Filter::Bicubic,
            _ => Filter::Bilinear,
        };
        let t = Transform {
            resize,
            filter,
            crop,
            mean: triple(&case["mean"]),
            std,
        };
        let img = decode(&root().join("inputs").join(file)).unwrap();
        let got = t.apply(&img);
        let want = f32s(&st, name);
        let (h, w) = got.geometry.input;
        assert_eq!(vec![3, h, w], want.shape, "{name}: size");
        // Differences in units of one 8-bit level (1/255 before normalization).
        let levels = got
            .tensor
            .iter()
            .zip(&want.data)
            .enumerate()
            .map(|(i, (a, b))| ((a - b).abs() * std[i / (h * w)] * 255.0) as f64)
            .fold(0f64, f64::max);
        let max_abs = got
            .tensor
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: max abs {max_abs:.2e} ({levels:.2} levels of 255)");
        if file.ends_with(".jpg") {
            assert!(levels <= 3.01, "{name}: {levels} levels");
        } else if name == "tall_odd_crop" {
            assert!(levels <= 1.01, "{name}: {levels} levels");
        } else {
            assert!(max_abs <= 1e-6, "{name}: max abs difference {max_abs}");
        }
    }
}

/// The CLI on the test images with the seed-cnn defaults (32×32, mean/std 0.5) against
/// pytorch-grad-cam: heatmaps `applyColorMap(np.uint8(255 * cam), JET)` and
/// `show_cam_on_image(img, cam, use_rgb=True)`. Our CAM differs from theirs by at most ~1e-6
/// here (tests/parity.rs allows 1e-3), which moves `np.uint8(255 * cam)` across a truncation
/// boundary for a rare pixel: one JET step is at most 5 per channel, so a pixel may differ by 5
/// in the heatmap and 3 in the overlay; at most 2% of samples may differ at all.
#[test]
fn golden_heatmaps_and_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let inputs = root().join("inputs");
    let o = explain(&out, &[inputs.to_str().unwrap(), "--save-raw"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("5 images explained, 0 skipped"), "{stderr}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("expected/golden/manifest.json")).unwrap(),
    )
    .unwrap();
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 5);
    for (want, line) in manifest.as_array().unwrap().iter().zip(&lines) {
        let file = want["file"].as_str().unwrap();
        let stem = file.rsplit_once('.').unwrap().0;
        assert!(line["path"].as_str().unwrap().ends_with(file), "{line}");
        assert_eq!(line["class"], want["class"], "{file}");
        let p = line["probability"].as_f64().unwrap();
        assert!((p - want["probability"].as_f64().unwrap()).abs() < 1e-5);
        assert_eq!(line["class_name"], "frog");
        for (kind, tol) in [("cam", 5), ("overlay", 3)] {
            let got = rgb(&out.join(format!("{stem}.{kind}.png")));
            let golden = rgb(&root().join(format!("expected/golden/{stem}.{kind}.png")));
            let (max, frac) = image_diff(&got, &golden);
            let mean = got
                .as_raw()
                .iter()
                .zip(golden.as_raw())
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / got.as_raw().len() as f64;
            eprintln!(
                "{stem}.{kind}.png: max diff {max}, mean {mean:.2}, {:.2}% differ",
                frac * 100.0
            );
            if file.ends_with(".jpg") {
                assert!(mean <= 8.0, "{stem}.{kind}: mean {mean}");
            } else {
                assert!(max <= tol && frac <= 0.02, "{stem}.{kind}: {max}, {frac}");
            }
        }
        let raw = gradcam::internal::npy::read_f32(&out.join(format!("{stem}.cam.npy"))).unwrap();
        assert_eq!(raw.shape, vec![32, 32]);
        assert_eq!(
            line["outputs"]["overlay"].as_str().unwrap(),
            out.join(format!("{stem}.overlay.png")).to_str().unwrap()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Two `cat.png` in different folders and a `cat.jpg` beside one of them get distinct names;
/// a non-image file is noted and ignored without failing the run.
#[test]
fn directory_tree_with_name_collisions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let tree = root().join("tree");
    let o = explain(&out, &[tree.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert!(stderr.contains("3 images explained, 0 skipped"), "{stderr}");
    for name in ["a/cat", "a/cat.png", "b/c/cat"] {
        for kind in ["cam", "overlay"] {
            let p = out.join(format!("{name}.{kind}.png"));
            assert_eq!(rgb(&p).dimensions(), (32, 32), "{}", p.display());
        }
    }
    let paths: Vec<String> = json_lines(&o)
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(paths[0].ends_with("a/cat.jpg") && paths[1].ends_with("a/cat.png"));
    assert!(paths[2].ends_with("b/c/cat.png"), "sorted: {paths:?}");
}

/// Truncated, garbage and empty files, a directory without images and a missing path are each
/// reported with their path and skipped; the good image is still explained; exit status 1.
#[test]
fn bad_inputs_are_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let good = root().join("inputs/rgb_odd.png");
    let bad = root().join("bad");
    let empty = root().join("empty_dir");
    let missing = tmp.path().join("missing.png");
    let o = explain(
        &out,
        &[
            bad.to_str().unwrap(),
            good.to_str().unwrap(),
            empty.to_str().unwrap(),
            missing.to_str().unwrap(),
            "--batch-size",
            "2",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in [
        "truncated.png",
        "garbage.jpg",
        "empty.png: empty file",
        "empty_dir: directory holds no images",
        "missing.png: cannot read",
    ] {
        assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
    }
    assert!(
        stderr.trim_end().ends_with(&format!(
            "1 image explained, 5 skipped; outputs in {}",
            out.display()
        )),
        "{stderr}"
    );
    assert_eq!(json_lines(&o).len(), 1);
    assert!(out.join("rgb_odd.overlay.png").exists());
    assert!(!out.join("truncated.cam.png").exists());
}

/// --top-k: one line per class, most probable first, file names carrying the class id.
#[test]
fn top_k_writes_one_cam_per_class() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let img = root().join("inputs/gray.png");
    let o = explain(&out, &[img.to_str().unwrap(), "--top-k", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 3);
    let mut last = f64::INFINITY;
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["rank"], i + 1);
        let p = l["probability"].as_f64().unwrap();
        assert!(p <= last);
        last = p;
        let c = l["class"].as_u64().unwrap();
        assert!(out.join(format!("gray.c{c}.cam.png")).exists());
        assert!(out.join(format!("gray.c{c}.overlay.png")).exists());
    }
}

#[test]
fn labels_file_names_classes_and_must_fit_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let img = root().join("inputs/gray.png");
    let labels = tmp.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|i| format!("thing {i}")).collect();
    std::fs::write(&labels, names.join("\n")).unwrap();
    let o = explain(
        &tmp.path().join("out"),
        &[img.to_str().unwrap(), "--labels", labels.to_str().unwrap()],
    );
    assert!(o.status.success());
    let l = &json_lines(&o)[0];
    assert_eq!(
        l["class_name"],
        format!("thing {}", l["class"].as_u64().unwrap())
    );

    std::fs::write(&labels, "one\ntwo\n").unwrap();
    let o = explain(
        &tmp.path().join("out2"),
        &[img.to_str().unwrap(), "--labels", labels.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("2 class names, but the model has 10 classes"));
}

/// --overlay-original: the overlay has the original size; pixels outside the center crop,
/// which the network never saw, keep their colour exactly.
#[test]
fn overlay_on_the_original_image() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let img = root().join("inputs/rgb_odd.png"); // 45×37 → resize 40 → 48×40 → crop 32
    let o = explain(
        &out,
        &[
            img.to_str().unwrap(),
            "--resize",
            "40",
            "--crop",
            "32",
            "--overlay-original",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let orig = rgb(&img);
    let overlay = rgb(&out.join("rgb_odd.overlay.png"));
    assert_eq!(overlay.dimensions(), orig.dimensions());
    // Crop columns 8..40 of 48 resized ones, i.e. original x in [7.5, 37.5) scaled by 45/48.
    assert_eq!(overlay.get_pixel(0, 18), orig.get_pixel(0, 18));
    assert_eq!(overlay.get_pixel(44, 18), orig.get_pixel(44, 18));
    assert_eq!(rgb(&out.join("rgb_odd.cam.png")).dimensions(), (32, 32));
}

fn guided_fixture() -> Vec<u8> {
    std::fs::read(root().join("expected/guided.safetensors")).unwrap()
}

/// Guided backpropagation against PyTorch with kazuto1011's guided ReLU backward hooks, on
/// seed-cnn (conv, max-pool, linear) and a narrow ResNet (BatchNorm, residual sums, a ReLU
/// module used twice per block). Tolerance: max abs difference ≤ 1e-4 × the largest gradient
/// magnitude, for f32 sums accumulated in another order through a dozen layers.
#[test]
fn guided_backprop_matches_pytorch() {
    let bytes = guided_fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let options = MethodOptions::default();
    for (fixture, prefix) in [("seed_cnn", "seed_cnn"), ("resnet_basic_narrow", "resnet")] {
        let path = common::fixture(fixture).join("model.safetensors");
        let e = Engine::new(CpuBackend { poison: true }, Model::load(&path).unwrap()).unwrap();
        let x = f32s(&st, &format!("{prefix}.input"));
        let want = f32s(&st, &format!("{prefix}.grad"));
        let classes = i64s(&st, &format!("{prefix}.classes"));
        let per = x.len() / x.shape[0];
        for (i, &c) in classes.iter().enumerate() {
            let mut shape = x.shape.clone();
            shape[0] = 1;
            let xi = Tensor::new(shape, x.data[i * per..(i + 1) * per].to_vec());
            let req = Request {
                methods: &[Method::GuidedBackprop],
                layers: &[],
                classes: Classes::Fixed(c),
                options: &options,
            };
            let a = e.attribute(&xi, &req).unwrap();
            assert_eq!(a.targets[0].maps.len(), 1);
            let got = &a.targets[0].maps[0].data;
            let w = &want.data[i * per..(i + 1) * per];
            let scale = w.iter().map(|v| v.abs()).fold(0f32, f32::max);
            let diff = got
                .data
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("{prefix}[{i}]: max abs diff {diff:.2e}, max |grad| {scale:.2e}");
            assert!(scale > 0.0, "the fixture gradient is not all zero");
            assert!(diff <= 1e-4 * scale, "{prefix}[{i}]: {diff} vs {scale}");
        }
    }
}

/// The guided-backprop image the CLI writes is kazuto1011's min-max normalization of that
/// gradient (the CLI preprocesses rgb_odd.png itself, identically to torchvision). Truncation
/// to 8 bits may flip a level where the gradients differ in the last bits: ≤ 1 per sample.
#[test]
fn guided_backprop_image_from_the_cli() {
    let bytes = guided_fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = f32s(&st, "seed_cnn.grad");
    let plane = 32 * 32;
    let want_img = gradient_image(&want.data[..3 * plane], 32, 32);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let img = root().join("inputs/rgb_odd.png");
    let o = explain(
        &out,
        &[img.to_str().unwrap(), "--method", "guided-backprop"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = rgb(&out.join("rgb_odd.guided-backprop.png"));
    let (max, _) = image_diff(&got, &want_img);
    assert!(max <= 1, "max diff {max}");
    assert!(!out.join("rgb_odd.cam.png").exists());

    let o = explain(
        &out,
        &[
            img.to_str().unwrap(),
            "--method",
            "gradcam,guided-gradcam",
            "--save-raw",
        ],
    );
    assert!(o.status.success());
    let l = &json_lines(&o)[0];
    for key in ["cam", "overlay", "guided-gradcam", "guided-gradcam-raw"] {
        assert!(l["outputs"][key].is_string(), "{key}: {l}");
    }
    let cam = gradcam::internal::npy::read_f32(&out.join("rgb_odd.cam.npy")).unwrap();
    let gg = gradcam::internal::npy::read_f32(&out.join("rgb_odd.guided-gradcam.npy")).unwrap();
    assert_eq!(gg.shape, vec![3, 32, 32]);
    for (i, v) in gg.data.iter().enumerate() {
        let expect = want.data[i] * cam.data[i % plane];
        assert!((v - expect).abs() <= 1e-4 * (1.0 + expect.abs()), "{i}");
    }
}

#[test]
fn image_paths_and_input_tensor_are_alternatives() {
    let tmp = tempfile::tempdir().unwrap();
    let img = root().join("inputs/gray.png");
    let o = explain(
        &tmp.path().join("out"),
        &[img.to_str().unwrap(), "--input-tensor", "x.npy"],
    );
    assert_eq!(o.status.code(), Some(2));
    let o = explain(&tmp.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = explain(
        &tmp.path().join("out"),
        &["--input-tensor", "x.npy", "--top-k", "2"],
    );
    assert_eq!(o.status.code(), Some(2));
}

/// The tensor path with --method guided-backprop: guided.npy [N, 3, H, W] equal to PyTorch's
/// (same tolerance as above, both images in one batch), and no CAM.
#[test]
fn guided_backprop_from_an_input_tensor() {
    let bytes = guided_fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = f32s(&st, "seed_cnn.input");
    let want = f32s(&st, "seed_cnn.grad");
    let tmp = tempfile::tempdir().unwrap();
    let xp = tmp.path().join("x.npy");
    gradcam::internal::npy::write_f32(&xp, &x).unwrap();
    let out = tmp.path().join("out");
    let o = explain(
        &out,
        &[
            "--input-tensor",
            xp.to_str().unwrap(),
            "--method",
            "guided-backprop",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("cams.npy").exists());
    let got = gradcam::internal::npy::read_f32(&out.join("guided.npy")).unwrap();
    assert_eq!(got.shape, want.shape);
    let scale = want.data.iter().map(|v| v.abs()).fold(0f32, f32::max);
    for (a, b) in got.data.iter().zip(&want.data) {
        assert!((a - b).abs() <= 1e-4 * scale);
    }
}
