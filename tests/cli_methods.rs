//! `explain --method` with several methods: one file set per method, named without collisions
//! and listed in the JSON line; the --input-tensor files; the option errors.

use gradcam::internal::npy;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;
use common::gradcam;

fn demo_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-cnn-shapes.safetensors")
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes")
}

const ALL: &str = "gradcam,hirescam,gradcam-elementwise,gradcam++,xgradcam,layercam,\
eigengradcam,fullgrad,eigencam,scorecam,ablationcam,fem,random,guided-backprop,guided-gradcam,\
saliency,deconvnet,occlusion,integrated-gradients";

#[test]
fn every_method_writes_its_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = gradcam(&[
        "explain",
        "--weights",
        demo_weights().to_str().unwrap(),
        "--backend",
        "cpu",
        "--method",
        ALL,
        "--steps",
        "4",
        "--stride",
        "6",
        "--save-raw",
        "--out",
        out.to_str().unwrap(),
        samples().join("sample_0.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let outputs = line["outputs"].as_object().unwrap();
    let files: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // Every output is listed once, exists, and no two outputs share a file.
    let listed: BTreeSet<String> = outputs
        .values()
        .map(|p| {
            let p = PathBuf::from(p.as_str().unwrap());
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(listed.len(), outputs.len());
    assert_eq!(listed, files);
    for (key, file) in [
        ("cam", "sample_0.cam.png"),
        ("overlay", "sample_0.overlay.png"),
        ("raw", "sample_0.cam.npy"),
        ("gradcam++.cam", "sample_0.gradcam++.cam.png"),
        ("scorecam.overlay", "sample_0.scorecam.overlay.png"),
        ("fullgrad.raw", "sample_0.fullgrad.cam.npy"),
        ("guided-backprop", "sample_0.guided-backprop.png"),
        (
            "integrated-gradients-raw",
            "sample_0.integrated-gradients.npy",
        ),
        ("occlusion", "sample_0.occlusion.png"),
    ] {
        assert!(
            outputs[key].as_str().unwrap().ends_with(file),
            "{key}: {}",
            outputs[key]
        );
    }
    // 13 CAM methods × 3 files, 5 gradient maps and occlusion × 2.
    assert_eq!(files.len(), 13 * 3 + 6 * 2, "{files:?}");
    let occ = npy::read_f32(&out.join("sample_0.occlusion.npy")).unwrap();
    assert_eq!(occ.shape, vec![6, 6], "32×32 input, stride 6: a 6×6 grid");
    let cam = npy::read_f32(&out.join("sample_0.eigencam.cam.npy")).unwrap();
    assert_eq!(cam.shape, vec![32, 32]);
    let img = image::open(out.join("sample_0.occlusion.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
}

#[test]
fn input_tensor_writes_one_file_per_method() {
    let tmp = tempfile::tempdir().unwrap();
    let x = tmp.path().join("x.npy");
    let data = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
        .collect();
    npy::write_f32(
        &x,
        &gradcam::internal::tensor::Tensor::new(vec![2, 3, 32, 32], data),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = gradcam(&[
        "explain",
        "--weights",
        demo_weights().to_str().unwrap(),
        "--backend",
        "cpu",
        "--method",
        "gradcam,guided-backprop,scorecam,layercam,saliency",
        "--layer",
        "relu2,relu3",
        "--target",
        "softmax",
        "--input-tensor",
        x.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (file, shape) in [
        ("cams.npy", vec![2, 32, 32]),
        ("guided.npy", vec![2, 3, 32, 32]),
        ("scorecam.npy", vec![2, 32, 32]),
        ("layercam.npy", vec![2, 32, 32]),
        ("saliency.npy", vec![2, 3, 32, 32]),
        ("logits.npy", vec![2, 3]),
    ] {
        let t = npy::read_f32(&out.join(file)).unwrap();
        assert_eq!(t.shape, shape, "{file}");
        assert!(t.data.iter().all(|v| v.is_finite()), "{file}");
    }
}

#[test]
fn method_option_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let w = demo_weights();
    let img = samples().join("sample_0.png");
    for (extra, needle) in [
        (
            vec!["--method", "saliency", "--layer", "relu2"],
            "--layer has no effect",
        ),
        (vec!["--method", "gradcam,gradcam"], "twice"),
        (
            vec!["--method", "gradcam,saliency", "--aug-smooth"],
            "--aug-smooth",
        ),
        (vec!["--method", "fullgrad", "--eigen-smooth"], "fullgrad"),
        (vec!["--method", "gradcam", "--smooth", "4"], "--smooth"),
        (vec!["--method", "scorecam", "--layer", "fc2"], "fc2"),
    ] {
        let mut args = vec![
            "explain",
            "--weights",
            w.to_str().unwrap(),
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
            img.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        let o = gradcam(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{extra:?}");
        assert!(stderr.starts_with("error: "), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// --metrics: one JSON line per image and CAM method with pytorch-grad-cam's metric names, a
/// summary table on stderr, and the same numbers on a second run (the imputer's noise is
/// seeded).
#[test]
fn metrics_give_a_line_per_image_and_method_and_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &str| {
        gradcam(&[
            "explain",
            "--weights",
            demo_weights().to_str().unwrap(),
            "--backend",
            "cpu",
            "--method",
            "gradcam,scorecam,saliency",
            "--metrics",
            "--road-percentiles",
            "20,80",
            "--out",
            tmp.path().join(out).to_str().unwrap(),
            samples().join("sample_0.png").to_str().unwrap(),
            samples().join("sample_1.png").to_str().unwrap(),
        ])
    };
    let o = run("a");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two images × the two CAM methods (saliency is not a CAM).
    assert_eq!(lines.len(), 4, "{stdout}");
    for l in &lines {
        for key in [
            "cam_mult_image_confidence_change",
            "drop_in_confidence",
            "increase_in_confidence",
            "road_morf_average",
            "road_lerf_average",
            "road_combined",
        ] {
            assert!(l[key].as_f64().unwrap().is_finite(), "{key}: {l}");
        }
        assert!(l["road_morf"]["80"].is_number(), "{l}");
        assert!(l["path"].is_string());
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("road_combined") && stderr.contains("scorecam"),
        "{stderr}"
    );
    let again = run("b");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).replace("/b/", "/a/"),
        stdout
    );
}
