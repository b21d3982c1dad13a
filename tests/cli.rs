//! The command line end to end: a successful run, and every kind of bad input giving one
//! readable error line, exit status 1, no panic, and no result files.

use gradcam::internal::npy;
use gradcam::internal::tensor::Tensor;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::gradcam;

fn seed_dir() -> PathBuf {
    common::fixture("seed_cnn")
}

fn input(dir: &Path, shape: Vec<usize>) -> PathBuf {
    let n = shape.iter().product();
    let path = dir.join(format!(
        "x{}.npy",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("_")
    ));
    let data = (0..n)
        .map(|i| ((i * 7919) % 103) as f32 / 51.0 - 1.0)
        .collect();
    npy::write_f32(&path, &Tensor::new(shape, data)).unwrap();
    path
}

/// The seed fixture's tensors, edited by `edit`, saved to `dir/name`.
fn edited_weights(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(seed_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// Runs `explain` and checks it fails cleanly with a message containing every `needle`.
fn fails_with(weights: &Path, x: &Path, extra: &[&str], needles: &[&str]) {
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("out");
    let mut args = vec![
        "explain",
        "--weights",
        weights.to_str().unwrap(),
        "--input-tensor",
        x.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = gradcam(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit status for {needles:?}; stderr: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected '{n}' in: {stderr}");
    }
    assert!(
        !out_path.join("cams.npy").exists(),
        "no result after an error"
    );
    assert!(o.stdout.is_empty(), "no JSON lines after an error");
}

#[test]
fn explain_writes_cams_logits_and_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let x = input(tmp.path(), vec![3, 3, 32, 32]);
    let out = tmp.path().join("nested/out");
    let w = seed_dir().join("model.safetensors");
    let o = gradcam(&[
        "explain",
        "--weights",
        w.to_str().unwrap(),
        "--input-tensor",
        x.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--layer",
        "conv2",
        "--class",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cams = npy::read_f32(&out.join("cams.npy")).unwrap();
    let logits = npy::read_f32(&out.join("logits.npy")).unwrap();
    assert_eq!(cams.shape, vec![3, 32, 32]);
    assert_eq!(logits.shape, vec![3, 10]);
    assert!(cams.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["class"], 4);
        let s = l["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the two results, no temporary files: {leftovers:?}"
    );
}

#[test]
fn inspect_lists_layers_with_shapes() {
    let w = seed_dir().join("model.safetensors");
    let o = gradcam(&["inspect", "--weights", w.to_str().unwrap()]);
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("architecture: seed-cnn"), "{s}");
    assert!(s.contains("conv3") && s.contains("[N, 16, 3, 3]"), "{s}");
    assert!(s.contains("fc2") && s.contains("[N, 10]"), "{s}");
}

#[test]
fn bad_weight_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let x = input(d, vec![2, 3, 32, 32]);
    fails_with(
        &d.join("nope.safetensors"),
        &x,
        &[],
        &["cannot read", "nope.safetensors"],
    );

    let corrupt = d.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"this is not a safetensors file at all").unwrap();
    fails_with(
        &corrupt,
        &x,
        &[],
        &["not a valid safetensors file", "corrupt.safetensors"],
    );

    let bytes = std::fs::read(seed_dir().join("model.safetensors")).unwrap();
    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&truncated, &x, &[], &["not a valid safetensors file"]);

    let missing = edited_weights(d, "missing.safetensors", |t| {
        t.retain(|e| e.0 != "conv3.weight")
    });
    fails_with(
        &missing,
        &x,
        &[],
        &["missing tensor 'conv3.weight'", "seed-cnn"],
    );

    let missing_bias = edited_weights(d, "nobias.safetensors", |t| {
        t.retain(|e| e.0 != "conv2.bias")
    });
    fails_with(&missing_bias, &x, &[], &["missing tensor 'conv2.bias'"]);

    let extra = edited_weights(d, "extra.safetensors", |t| {
        t.push(("extra.weight".into(), Dtype::F32, vec![2], vec![0; 8]))
    });
    fails_with(
        &extra,
        &x,
        &[],
        &["unexpected tensor 'extra.weight'", "[2]"],
    );

    let shape = edited_weights(d, "shape.safetensors", |t| {
        let e = t.iter_mut().find(|e| e.0 == "conv2.weight").unwrap();
        e.2 = vec![32, 60, 5, 5];
        e.3.truncate(32 * 60 * 25 * 4);
    });
    fails_with(
        &shape,
        &x,
        &[],
        &["'conv2.weight'", "[32, 60, 5, 5]", "[?, 64, 5, 5]"],
    );

    let dtype = edited_weights(d, "f64.safetensors", |t| {
        let e = t.iter_mut().find(|e| e.0 == "fc2.bias").unwrap();
        e.1 = Dtype::F64;
        e.2 = vec![5];
    });
    fails_with(&dtype, &x, &[], &["'fc2.bias'", "unsupported dtype F64"]);

    let nothing = edited_weights(d, "empty.safetensors", |t| t.clear());
    fails_with(
        &nothing,
        &x,
        &[],
        &["cannot detect the architecture", "--arch"],
    );
}

#[test]
fn bad_inputs_and_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let w = seed_dir().join("model.safetensors");
    let good = input(d, vec![2, 3, 32, 32]);

    fails_with(
        &w,
        &input(d, vec![3, 32, 32]),
        &[],
        &["expected [N, C, H, W]"],
    );
    fails_with(
        &w,
        &input(d, vec![2, 1, 32, 32]),
        &[],
        &["3 input channels", "has 1"],
    );
    fails_with(
        &w,
        &input(d, vec![1, 3, 4, 4]),
        &[],
        &["too small", "pool2"],
    );
    fails_with(
        &w,
        &input(d, vec![1, 3, 64, 64]),
        &[],
        &["fc1: takes 16 features but gets 64"],
    );
    fails_with(
        &w,
        &good,
        &["--class", "10"],
        &["class 10 is out of range", "10 classes"],
    );
    fails_with(
        &w,
        &good,
        &["--layer", "conv4"],
        &["unknown layer 'conv4'", "conv1"],
    );
    fails_with(&w, &good, &["--layer", "fc1"], &["'fc1'", "[N, C, H, W]"]);
    fails_with(
        &w,
        &good,
        &["--arch", "vit_b_16"],
        &["unknown architecture 'vit_b_16'"],
    );
    fails_with(
        &w,
        &d.join("missing.npy"),
        &[],
        &["cannot read", "missing.npy"],
    );

    let not_npy = d.join("bad.npy");
    std::fs::write(&not_npy, b"garbage").unwrap();
    fails_with(&w, &not_npy, &[], &["not a valid .npy file"]);

    let f64_npy = d.join("f64.npy");
    let mut bytes =
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1, 3, 2, 2), }"
            .to_vec();
    while !(bytes.len() + 1).is_multiple_of(64) {
        bytes.push(b' ');
    }
    bytes.push(b'\n');
    bytes.extend(std::iter::repeat_n(0u8, 12 * 8));
    std::fs::write(&f64_npy, bytes).unwrap();
    fails_with(&w, &f64_npy, &[], &["float32"]);
}

#[test]
fn usage_errors_exit_with_status_2() {
    let o = gradcam(&["explain", "--backend", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `explain` on the command line, with `env` set for the child process.
fn explain_with(env: &[(&str, &str)], x: &Path, out: &Path, backend: &str) -> Output {
    let w = seed_dir().join("model.safetensors");
    common::gradcam_env(
        env,
        &[
            "explain",
            "--weights",
            w.to_str().unwrap(),
            "--input-tensor",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ],
    )
}

#[test]
fn explain_with_wgpu_matches_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let x = input(tmp.path(), vec![2, 3, 32, 32]);
    let mut results = vec![];
    for backend in ["cpu", "wgpu"] {
        let out = tmp.path().join(backend);
        let o = explain_with(&[], &x, &out, backend);
        assert!(
            o.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        results.push((
            npy::read_f32(&out.join("cams.npy")).unwrap(),
            npy::read_f32(&out.join("logits.npy")).unwrap(),
            o.stdout,
        ));
    }
    let ((cam_c, log_c, _), (cam_g, log_g, _)) = (&results[0], &results[1]);
    assert_eq!(cam_c.shape, cam_g.shape);
    let cam_err = cam_c
        .data
        .iter()
        .zip(&cam_g.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(cam_err <= 1e-3, "CAM max abs difference {cam_err}");
    let log_err = log_c
        .data
        .iter()
        .zip(&log_g.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(log_err <= 1e-4, "logits max abs difference {log_err}");
}

#[test]
fn wgpu_without_an_adapter_is_a_clear_error_and_auto_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let x = input(tmp.path(), vec![1, 3, 32, 32]);
    // WGPU_BACKEND=gl asks for OpenGL only, which this build leaves out: no adapter at all.
    let no_gpu = [("WGPU_BACKEND", "gl")];
    let out = tmp.path().join("wgpu");
    let o = explain_with(&no_gpu, &x, &out, "wgpu");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: backend wgpu: no GPU adapter found"),
        "{stderr}"
    );
    assert!(!out.join("cams.npy").exists());

    let out = tmp.path().join("auto");
    let o = explain_with(&no_gpu, &x, &out, "auto");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("cams.npy").exists());
}

/// The demo needs no files: it explains the embedded samples with the embedded trained model,
/// and classifies each as examples/shapes/samples.json says it is.
#[test]
fn demo_explains_the_bundled_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = gradcam(&["demo", "--backend", "cpu", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let samples: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes/samples.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for (line, sample) in lines.iter().zip(samples.as_array().unwrap()) {
        assert_eq!(line["class_name"], sample["class"], "{line}");
        // The heatmap at the network's input size, the overlay on the original 128×128 image.
        for (kind, side) in [("cam", 32), ("overlay", 128)] {
            let png = PathBuf::from(line["outputs"][kind].as_str().unwrap());
            let img = image::open(&png).unwrap();
            assert_eq!(
                (img.width(), img.height()),
                (side, side),
                "{}",
                png.display()
            );
        }
    }
}

/// GoogLeNet's `transform_input` is not in the weights: on by default (torchvision's pretrained
/// checkpoints need it), `--no-transform-input` turns it off, and the flag is refused for a
/// family that has no such step.
#[test]
fn transform_input_is_on_by_default_and_a_flag_turns_it_off() {
    let w = common::fixture("families/googlenet/model.safetensors");
    let w = w.to_str().unwrap();
    let on = gradcam(&["inspect", "--weights", w]);
    assert!(on.status.success());
    assert!(String::from_utf8_lossy(&on.stdout).contains("transform_input: on"));
    let off = gradcam(&["inspect", "--weights", w, "--no-transform-input"]);
    assert!(off.status.success());
    assert!(String::from_utf8_lossy(&off.stdout).contains("transform_input: off"));

    let tmp = tempfile::tempdir().unwrap();
    let x = input(tmp.path(), vec![2, 3, 64, 64]);
    let logits = |extra: &[&str], dir: &str| {
        let out = tmp.path().join(dir);
        let mut args = vec!["explain", "--weights", w, "--backend", "cpu", "--quiet"];
        args.extend_from_slice(extra);
        args.extend(["--input-tensor", x.to_str().unwrap()]);
        args.extend(["--out", out.to_str().unwrap()]);
        let o = gradcam(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        npy::read_f32(&out.join("logits.npy")).unwrap().data
    };
    assert_ne!(logits(&[], "on"), logits(&["--no-transform-input"], "off"));

    let seed = seed_dir().join("model.safetensors");
    let o = gradcam(&[
        "inspect",
        "--weights",
        seed.to_str().unwrap(),
        "--no-transform-input",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("googlenet and inception_v3 only"), "{err}");
}

/// `--interpolation` picks Pillow's filter (its arithmetic is checked against PIL in
/// tests/images.rs); the default is the family's, which `inspect` prints.
#[test]
fn interpolation_defaults_to_the_familys_and_can_be_chosen() {
    let eff = common::fixture("families/efficientnet_b0/model.safetensors");
    let o = gradcam(&["inspect", "--weights", eff.to_str().unwrap()]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("resize 256 (bicubic), center crop 224"), "{s}");

    let tmp = tempfile::tempdir().unwrap();
    let img = common::fixture("images/inputs/rgb_odd.png");
    let cam = |filter: &str| {
        let out = tmp.path().join(filter);
        let o = gradcam(&[
            "explain",
            "--weights",
            seed_dir().join("model.safetensors").to_str().unwrap(),
            "--backend",
            "cpu",
            "--quiet",
            "--save-raw",
            "--resize",
            "40",
            "--crop",
            "32",
            "--interpolation",
            filter,
            "--out",
            out.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        npy::read_f32(&out.join("rgb_odd.cam.npy")).unwrap().data
    };
    assert_ne!(cam("bilinear"), cam("bicubic"));
}
