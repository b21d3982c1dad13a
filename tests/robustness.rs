//! Bad, odd and hostile inputs (issue 17): every one gets one `error:` line (or a per-image
//! "skipped" line naming the file and the problem) and a non-zero exit status; nothing wrong
//! is written without a word, no temporary file is left behind, and nothing reads, allocates or
//! walks without bound.

use gradcam::internal::npy;
use gradcam::internal::tensor::Tensor;
use image::codecs::jpeg::JpegEncoder;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::gradcam;

fn seed_weights() -> PathBuf {
    common::fixture("seed_cnn/model.safetensors")
}

fn resnet_weights() -> PathBuf {
    common::fixture("resnet_basic_narrow/model.safetensors")
}

fn image_fixture(name: &str) -> PathBuf {
    common::fixture("images/inputs").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// `explain --weights W --out OUT --backend cpu args...`
fn explain(weights: &Path, out: &Path, args: &[&str]) -> Output {
    let mut v = vec![
        "explain",
        "--weights",
        s(weights),
        "--out",
        s(out),
        "--backend",
        "cpu",
    ];
    v.extend_from_slice(args);
    gradcam(&v)
}

/// Checks a clean failure: exit status `code`, stderr's first line `error: …` with every
/// needle, no panic, no JSON on stdout.
#[track_caller]
fn fails(o: &Output, code: i32, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit status; stderr: {e}");
    assert!(e.starts_with("error: "), "{e}");
    assert!(
        !e.contains("panicked") && !e.contains("internal error"),
        "{e}"
    );
    for n in needles {
        assert!(e.contains(n), "expected '{n}' in: {e}");
    }
    assert!(o.stdout.is_empty(), "no JSON lines after an error");
}

/// Temporary files (`.NAME.<pid>.tmp`) anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(temp_files(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            found.push(p);
        }
    }
    found
}

/// The seed fixture's tensors, edited by `edit`, saved to `dir/name`.
fn edited_weights(
    src: &Path,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(src).unwrap();
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

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn tensor<'a>(t: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    t.iter_mut().find(|e| e.0 == name).unwrap()
}

fn npy_input(dir: &Path, name: &str, shape: Vec<usize>, edit: impl FnOnce(&mut [f32])) -> PathBuf {
    let n = shape.iter().product();
    let mut data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 103) as f32 / 51.0 - 1.0)
        .collect();
    edit(&mut data);
    let path = dir.join(name);
    npy::write_f32(&path, &Tensor::new(shape, data)).unwrap();
    path
}

/// A .npy file with a hand-written header (the data is whatever `data` holds).
fn npy_raw(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut h = header.as_bytes().to_vec();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(b' ');
    }
    h.push(b'\n');
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A noisy RGB test picture.
fn noise(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 31 + y * 17 + seed * 101) ^ (x * y + seed);
        image::Rgb([
            (v % 251) as u8,
            (v * 7 % 253) as u8,
            ((x + y) * 4 % 256) as u8,
        ])
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header declares `w`×`h` 8-bit grayscale, with a token IDAT: a decompression
/// bomb is refused from its header, before any of it is decoded.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block).
    png_chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xFB, 0xFF, 0, 0, 0, 0, 0, 0x04, 0, 0x01,
        ],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A 16-bit PNG (color type 0 gray, 2 RGB) from big-endian samples, unfiltered.
fn png16(w: u32, h: u32, color: u8, samples: &[u16]) -> Vec<u8> {
    let per_row = samples.len() / h as usize;
    let mut raw = vec![];
    for row in samples.chunks(per_row) {
        raw.push(0u8);
        for v in row {
            raw.extend_from_slice(&v.to_be_bytes());
        }
    }
    // zlib with stored blocks (each at most 65535 bytes).
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(if i + 1 == blocks.len() { 1 } else { 0 });
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut bsum) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        bsum = (bsum + a) % 65521;
    }
    z.extend_from_slice(&((bsum << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[16, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &z);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Truncated JPEGs

/// Five cuts of a baseline and a progressive JPEG, as found in the wild: 700 bytes, half, all
/// but 10 bytes, all but the 2-byte EOI marker, and a progressive one at half. Each is skipped
/// with "image file is truncated" (Pillow's words); the whole files are explained.
#[test]
fn truncated_jpegs_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let mut whole = vec![];
    JpegEncoder::new_with_quality(&mut whole, 90)
        .encode_image(&noise(64, 48, 1))
        .unwrap();
    assert!(whole.len() > 1400, "{}", whole.len());
    // Written by Pillow: Image.save(f, quality=90, progressive=True) (no encoder here makes
    // progressive JPEGs).
    let progressive = std::fs::read(common::fixture("fuzz/images/progressive.jpg")).unwrap();
    assert!(progressive.windows(2).any(|w| w == [0xFF, 0xC2]), "SOF2");
    let n = whole.len();
    let cuts: [(&str, &[u8]); 5] = [
        ("cut700.jpg", &whole[..700]),
        ("half.jpg", &whole[..n / 2]),
        ("minus10.jpg", &whole[..n - 10]),
        ("no_eoi.jpg", &whole[..n - 2]),
        (
            "progressive_half.jpg",
            &progressive[..progressive.len() / 2],
        ),
    ];
    for (name, bytes) in cuts {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    std::fs::write(d.join("whole.jpg"), &whole).unwrap();
    std::fs::write(d.join("whole_progressive.jpg"), &progressive).unwrap();
    let out = tmp.path().join("out");
    let o = explain(&seed_weights(), &out, &[s(&d)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for (name, _) in cuts {
        assert!(
            e.lines().any(|l| l.starts_with("skipped ")
                && l.contains(name)
                && l.contains("image file is truncated")),
            "{name}: {e}"
        );
        let stem = name.trim_end_matches(".jpg");
        assert!(!out.join(format!("{stem}.cam.png")).exists());
    }
    assert!(e.contains("2 images explained, 5 skipped"), "{e}");
    assert_eq!(json_lines(&o).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Non-finite numbers

/// A NaN or an infinity in the weights (f32 or f16) is an error at load naming the tensor and
/// the index: ReLU and max-pool would otherwise turn NaN into 0 and give a confident answer.
#[test]
fn non_finite_weights_are_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let img = image_fixture("gray.png");
    let nan = edited_weights(&seed_weights(), d, "nan.safetensors", |t| {
        tensor(t, "conv1.weight").3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let o = explain(&nan, &d.join("o1"), &[s(&img)]);
    fails(
        &o,
        1,
        &["'conv1.weight'", "non-finite value (NaN)", "[0, 0, 0, 1]"],
    );
    assert_eq!(stderr(&o).lines().count(), 1);

    let inf = edited_weights(&seed_weights(), d, "inf.safetensors", |t| {
        let e = tensor(t, "fc2.weight");
        let at = e.3.len() - 4;
        e.3[at..].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    fails(
        &explain(&inf, &d.join("o2"), &[s(&img)]),
        1,
        &["'fc2.weight'", "(inf)"],
    );

    let f16 = edited_weights(&seed_weights(), d, "f16.safetensors", |t| {
        let e = tensor(t, "conv2.bias");
        let vals: Vec<u8> =
            e.3.chunks_exact(4)
                .enumerate()
                .flat_map(|(i, b)| {
                    let v = f32::from_le_bytes(b.try_into().unwrap());
                    let h = if i == 2 {
                        0x7C00u16
                    } else {
                        half::f16::from_f32(v).to_bits()
                    };
                    h.to_le_bytes()
                })
                .collect();
        e.1 = Dtype::F16;
        e.3 = vals;
    });
    fails(
        &explain(&f16, &d.join("o3"), &[s(&img)]),
        1,
        &["'conv2.bias'", "(inf)", "[2]"],
    );
    // Training from such weights is refused the same way.
    let o = gradcam(&[
        "train",
        "--init",
        s(&nan),
        "--data",
        "shapes",
        "--epochs",
        "1",
        "--lr",
        "0.1",
        "--out",
        s(&d.join("t.safetensors")),
    ]);
    fails(&o, 1, &["'conv1.weight'", "NaN"]);
}

/// Finite weights so large that the logits overflow: the image is skipped with the reason,
/// nothing is written for it.
#[test]
fn overflowing_logits_skip_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let big = edited_weights(&seed_weights(), d, "big.safetensors", |t| {
        let e = tensor(t, "fc2.weight");
        e.3 =
            e.3.chunks_exact(4)
                .flat_map(|_| 3e38f32.to_le_bytes())
                .collect();
    });
    let out = d.join("out");
    let o = explain(&big, &out, &[s(&image_fixture("gray.png"))]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("skipped") && e.contains("gray.png") && e.contains("not finite"),
        "{e}"
    );
    assert!(e.contains("0 images explained, 1 skipped"), "{e}");
    assert!(!out.join("gray.cam.png").exists());
    assert!(o.stdout.is_empty());
}

/// A NaN or infinity in an input tensor skips that image (its rows of the results are NaN, so
/// indices still match); the others are explained; exit status 1.
#[test]
fn non_finite_input_tensor_values_skip_their_image() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let x = npy_input(d, "x.npy", vec![3, 3, 32, 32], |v| {
        v[3 * 32 * 32 + 5] = f32::NAN; // image 1, channel 0, row 0, column 5
        v[2 * 3 * 32 * 32 + 2 * 1024 + 33] = f32::NEG_INFINITY; // image 2, [2, 1, 1]
    });
    let out = d.join("out");
    let o = explain(&seed_weights(), &out, &["--input-tensor", s(&x)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("x.npy image 1: non-finite input value NaN at [1, 0, 0, 5]"),
        "{e}"
    );
    assert!(
        e.contains("x.npy image 2: non-finite input value -inf at [2, 2, 1, 1]"),
        "{e}"
    );
    assert!(e.contains("1 of 3 images explained, 2 skipped"), "{e}");
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["index"], 0);
    let cams = npy::read_f32(&out.join("cams.npy")).unwrap();
    let logits = npy::read_f32(&out.join("logits.npy")).unwrap();
    assert!(cams.data[..1024].iter().all(|v| v.is_finite()));
    assert!(cams.data[1024..].iter().all(|v| v.is_nan()));
    assert!(logits.data[..10].iter().all(|v| v.is_finite()));
    assert!(logits.data[10..].iter().all(|v| v.is_nan()));
}

/// Normalization that cannot give finite values is a usage error up front (exit 2): a
/// non-finite or non-positive std, a non-finite mean, a std so small that x/std overflows.
/// A negative mean is valid.
#[test]
fn normalization_options_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_fixture("gray.png");
    for (args, needle) in [
        (&["--std", "nan"][..], "finite and positive"),
        (&["--std", "-0.5"], "finite and positive"),
        (&["--std", "0"], "finite and positive"),
        (&["--std", "0.5,0.5,inf"], "finite and positive"),
        (&["--mean", "inf"], "must be finite"),
        (&["--std", "1e-45"], "normalized inputs must be finite"),
    ] {
        let o = explain(
            &seed_weights(),
            &tmp.path().join("o"),
            &[s(&img), args[0], args[1]],
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.starts_with("error:") && e.contains(needle),
            "{args:?}: {e}"
        );
    }
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &[s(&img), "--mean", "-0.5,-0.2,0.1", "--std", "0.25"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// 3. Numeric arguments; 6. misleading messages

/// Sizes that do not fit, zero, negative numbers, absurd thread counts: a usage error at once
/// (exit 2) with the reason, not a silent cast or "unexpected argument '-1'".
#[test]
fn numeric_options_are_range_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_fixture("gray.png");
    let out = tmp.path().join("o");
    for (args, needle) in [
        (
            &["--crop", "4294967297"][..],
            "more than the largest accepted",
        ),
        (&["--crop", "4294967296"], "more than the largest accepted"),
        (&["--crop", "0"], "at least 1"),
        (&["--resize", "-3"], "negative"),
        (&["--size", "0x32"], "at least 1"),
        (
            &["--size", "99999999999x2"],
            "more than the largest accepted",
        ),
        (
            &["--class", "-1"],
            "'-1' is negative; classes are numbered from 0",
        ),
        (
            &["--class", "18446744073709551617"],
            "more than the largest",
        ),
        (&["--image-weight", "-1"], "not a weight between 0 and 1"),
        (&["--top-k", "0"], "at least 1"),
        (&["--batch-size", "0"], "at least 1"),
        (&["--batch-size", "100000000"], "more than the largest"),
        (&["--max-image-pixels", "0"], "at least 1"),
    ] {
        let mut v = vec![s(&img)];
        v.extend_from_slice(args);
        let o = explain(&seed_weights(), &out, &v);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.starts_with("error:") && e.contains(needle),
            "{args:?}: {e}"
        );
    }
    for (threads, needle) in [("100000", "more than the cap of 1024"), ("0", "at least 1")] {
        let start = Instant::now();
        let o = gradcam(&[
            "--threads",
            threads,
            "inspect",
            "--weights",
            s(&seed_weights()),
        ]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(needle), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let o = gradcam(&["--threads", "2", "inspect", "--weights", s(&seed_weights())]);
    assert!(o.status.success());
}

/// The other commands' numbers: negative values parse and are refused with the reason; counts
/// whose images would not fit in memory are refused up front.
#[test]
fn other_commands_check_their_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.safetensors");
    let train = |extra: &[&str]| {
        let mut v = vec![
            "train",
            "--arch",
            "seed-cnn",
            "--data",
            "shapes",
            "--out",
            s(&out),
        ];
        v.extend_from_slice(extra);
        for (opt, default) in [("--epochs", "1"), ("--lr", "0.1")] {
            if !extra.contains(&opt) {
                v.extend_from_slice(&[opt, default]);
            }
        }
        gradcam(&v)
    };
    for (extra, code, needle) in [
        (&["--momentum", "-0.9"][..], 2, "finite and at least 0"),
        (&["--weight-decay", "nan"], 2, "finite and at least 0"),
        (&["--lr", "-1"], 2, "finite and positive"),
        (&["--epochs", "0"], 2, "at least 1"),
        (&["--batch-size", "-1"], 2, "negative"),
        (&["--train-count", "99999999"], 1, "of memory available"),
    ] {
        let o = train(extra);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{extra:?}: {e}");
        assert!(
            e.starts_with("error:") && e.contains(needle),
            "{extra:?}: {e}"
        );
    }
    assert!(!out.exists());
    for args in [
        &["bench", "--arch", "resnet18", "--iters", "0"][..],
        &["bench", "--arch", "resnet18", "--batch", "0"],
        &["shapes-samples", "--scale", "0", "--out", "x"],
        &["shapes-samples", "--count", "-1", "--out", "x"],
        &["eval-pointing", "--weights", "w", "--count", "0"],
    ] {
        let o = gradcam(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = gradcam(&[
        "bench",
        "--arch",
        "resnet18",
        "--size",
        "60000",
        "--backend",
        "cpu",
    ]);
    fails(&o, 1, &["needs about", "of memory available"]);
}

/// Sizes against the model and the pixel limit: a network input or resized image beyond the
/// limit is refused before anything runs; --top-k beyond the classes is an error;
/// --layer with guided-backprop is refused rather than ignored.
#[test]
fn options_against_the_model_and_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_fixture("gray.png");
    let out = tmp.path().join("o");
    let o = explain(
        &resnet_weights(),
        &out,
        &[s(&img), "--size", "100000x100000"],
    );
    fails(
        &o,
        2,
        &[
            "100000x100000 network input",
            "10000000000 pixels",
            "--max-image-pixels",
        ],
    );
    let o = explain(&resnet_weights(), &out, &[s(&img), "--resize", "100000"]);
    fails(&o, 2, &["shorter side of 100000", "--max-image-pixels"]);
    let o = explain(&seed_weights(), &out, &[s(&img), "--top-k", "11"]);
    fails(&o, 1, &["--top-k 11 is more than the model's 10 classes"]);
    let o = explain(
        &seed_weights(),
        &out,
        &[s(&img), "--method", "guided-backprop", "--layer", "conv2"],
    );
    fails(
        &o,
        2,
        &["--layer has no effect with --method guided-backprop"],
    );
}

/// Raising the pixel limit does not let a plan exceed the memory there is: the CPU backend
/// refuses a batch whose activations do not fit, with the figures.
#[test]
fn plans_beyond_the_available_memory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_fixture("gray.png");
    let o = explain(
        &resnet_weights(),
        &tmp.path().join("o"),
        &[
            s(&img),
            "--size",
            "60000x60000",
            "--max-image-pixels",
            "4000000000",
        ],
    );
    fails(
        &o,
        1,
        &["needs about", "more than the", "of memory available"],
    );
    // A tensor file whose header declares more than the memory there is: refused before its
    // data is read.
    let x = npy_raw(
        tmp.path(),
        "huge.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 3, 60000, 60000), }",
        &[0; 64],
    );
    let o = explain(
        &resnet_weights(),
        &tmp.path().join("o2"),
        &["--input-tensor", s(&x)],
    );
    fails(&o, 1, &["huge.npy", "needs about", "of memory available"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Sizes from untrusted headers

/// A .npy shape whose product wraps around (2^62 · 3 · 32 · 32) is refused, not wrapped to 0.
#[test]
fn npy_shapes_that_overflow_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let x = npy_raw(
        tmp.path(),
        "wrap.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 3, 32, 32), }",
        &[0; 4096],
    );
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &["--input-tensor", s(&x)],
    );
    fails(&o, 1, &["wrap.npy", "too large"]);
    assert_eq!(stderr(&o).lines().count(), 1);
    let short = npy_raw(
        tmp.path(),
        "short.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), }",
        &[0; 100],
    );
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &["--input-tensor", s(&short)],
    );
    fails(&o, 1, &["short.npy", "truncated", "12288 bytes"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Memory and time

/// Decompression bombs are refused from their header (Pillow's MAX_IMAGE_PIXELS, 89,478,485
/// pixels), quickly and without the memory; --max-image-pixels raises the limit.
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("in");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("bomb1.png"), bomb_png(23000, 23000)).unwrap();
    std::fs::write(d.join("bomb2.png"), bomb_png(23000, 23000)).unwrap();
    std::fs::copy(image_fixture("gray.png"), d.join("good.png")).unwrap();
    let start = Instant::now();
    let o = explain(&seed_weights(), &tmp.path().join("o"), &[s(&d)]);
    let e = stderr(&o);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{e}");
    for b in ["bomb1.png", "bomb2.png"] {
        assert!(
            e.lines().any(|l| l.contains(b)
                && l.contains("decompression bomb: 23000x23000 is 529000000 pixels")
                && l.contains("89478485")),
            "{e}"
        );
    }
    assert!(e.contains("1 image explained, 2 skipped"), "{e}");
    // Just under the limit by the header, then refused for what it is (a token IDAT).
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o2"),
        &[s(&d.join("bomb1.png")), "--max-image-pixels", "600000000"],
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        !e.contains("decompression bomb") && e.contains("cannot decode"),
        "{e}"
    );
}

/// A 100000×3 image is within the pixel limit, but Resize(256) would make it 256×8,533,333:
/// refused with the size, before any of it is built.
#[test]
fn resized_images_beyond_the_limit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("long.png");
    noise(100_000, 3, 2).save(&p).unwrap();
    let o = explain(&resnet_weights(), &tmp.path().join("o"), &[s(&p)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("long.png")
            && e.contains("resized image would be 8533333x256")
            && e.contains("--max-image-pixels"),
        "{e}"
    );
    // The exact seed-cnn resize to 32×32 is fine.
    let o = explain(&seed_weights(), &tmp.path().join("o2"), &[s(&p)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `/dev/zero` as weights, image, labels or tensor is refused after a few bytes, not read
/// until memory runs out.
#[test]
fn endless_files_are_not_read_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let zero = Path::new("/dev/zero");
    let img = image_fixture("gray.png");
    let start = Instant::now();
    let o = explain(zero, &tmp.path().join("o"), &[s(&img)]);
    fails(&o, 1, &["/dev/zero", "not a valid safetensors file"]);
    let o = explain(&seed_weights(), &tmp.path().join("o"), &["/dev/zero"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("skipped /dev/zero: not a supported image"),
        "{e}"
    );
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &[s(&img), "--labels", "/dev/zero"],
    );
    fails(&o, 1, &["/dev/zero"]);
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &["--input-tensor", "/dev/zero"],
    );
    fails(&o, 1, &["/dev/zero", "not a valid .npy file"]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

/// Symlink cycles (two links back to `.`, one to `..`) are walked once per directory, quickly;
/// the output directory inside the input folder is not walked, so a rerun does not explain
/// its own outputs; a file given twice is explained once.
#[test]
fn walks_end_and_visit_each_directory_and_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::copy(image_fixture("gray.png"), root.join("a.png")).unwrap();
    std::fs::copy(image_fixture("rgb_odd.png"), root.join("sub/b.png")).unwrap();
    std::os::unix::fs::symlink(".", root.join("loop1")).unwrap();
    std::os::unix::fs::symlink(".", root.join("loop2")).unwrap();
    std::os::unix::fs::symlink("..", root.join("sub/m_up")).unwrap();
    let out = root.join("out");
    let start = Instant::now();
    for run in 0..2 {
        let o = explain(&seed_weights(), &out, &[s(&root)]);
        let e = stderr(&o);
        assert!(o.status.success(), "run {run}: {e}");
        assert!(
            e.contains("2 images explained, 0 skipped"),
            "run {run}: {e}"
        );
        assert!(e.contains("loop1: a directory already walked"), "{e}");
        assert!(e.contains("m_up: a directory already walked"), "{e}");
        if run == 1 {
            assert!(
                e.contains("out: the output directory (--out), not walked"),
                "{e}"
            );
        }
        assert_eq!(json_lines(&o).len(), 2);
    }
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(!out.join("out").exists(), "no outputs of outputs");

    std::fs::remove_dir_all(&out).unwrap();
    let a = root.join("a.png");
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o2"),
        &[s(&a), s(&a), s(&root)],
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("already an input (the same file), explained once"),
        "{e}"
    );
    assert!(e.contains("2 images explained"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 6. Misleading messages

/// A weight stored as an integer type is named with its dtype, not reported as missing; so is
/// an integer tensor that would have decided the architecture.
#[test]
fn integer_weights_are_named_with_their_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let img = image_fixture("gray.png");
    for (dtype, name) in [
        (Dtype::I32, "I32"),
        (Dtype::U8, "U8"),
        (Dtype::BOOL, "BOOL"),
    ] {
        let w = edited_weights(&seed_weights(), d, &format!("{name}.safetensors"), |t| {
            let e = tensor(t, "conv2.weight");
            e.1 = dtype;
            let n: usize = e.2.iter().product();
            e.3 = vec![0; n * if dtype == Dtype::I32 { 4 } else { 1 }];
        });
        let o = explain(&w, &d.join("o"), &[s(&img)]);
        fails(
            &o,
            1,
            &["tensor 'conv2.weight' is stored as", name, "must be float"],
        );
        assert!(!stderr(&o).contains("missing"), "{}", stderr(&o));
    }
    let w = edited_weights(&resnet_weights(), d, "resnet_i32.safetensors", |t| {
        let e = tensor(t, "layer1.0.conv1.weight");
        e.1 = Dtype::I32;
    });
    fails(
        &explain(&w, &d.join("o"), &[s(&img)]),
        1,
        &["'layer1.0.conv1.weight' is stored as I32"],
    );
}

/// Blank lines between class names are an error naming the line (dropping them would shift
/// every later name); trailing blank lines, CRLF and a byte order mark are fine.
#[test]
fn labels_with_blank_lines_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image_fixture("gray.png");
    let labels = tmp.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let mut gap = names.clone();
    gap.insert(3, String::new());
    std::fs::write(&labels, gap.join("\n")).unwrap();
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &[s(&img), "--labels", s(&labels)],
    );
    fails(&o, 1, &["labels.txt", "line 4 is blank"]);
    std::fs::write(&labels, format!("\u{feff}{}\r\n\r\n\n", names.join("\r\n"))).unwrap();
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &[s(&img), "--labels", s(&labels)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let l = &json_lines(&o)[0];
    assert_eq!(l["class_name"], format!("n{}", l["class"]));
}

// ---------------------------------------------------------------------------------------------
// 7. Failed and interrupted writes

/// A write that fails half-way (here a file size limit, as a full disk would) skips the
/// image with the reason and leaves no temporary file.
#[test]
fn failed_writes_leave_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let img = image_fixture("rgb_odd.png");
    // The overlay of a 1024×1024 input is far above 64 KiB; sh's `ulimit -f` counts 512- or
    // 1024-byte blocks, so 64 blocks is 32 or 64 KiB.
    let cmd = format!(
        "ulimit -f 64 && exec '{}' explain --weights '{}' --backend cpu --size 1024 --out '{}' '{}'",
        env!("CARGO_BIN_EXE_gradcam"),
        s(&resnet_weights()),
        s(&out),
        s(&img)
    );
    let o = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("skipped") && e.contains("rgb_odd.png"), "{e}");
    assert!(
        e.contains("cannot write") && e.contains("File too large"),
        "{e}"
    );
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
    assert!(o.stdout.is_empty());
}

/// Makes `n` small PNGs in `dir`.
fn many_images(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        noise(40, 30, i as u32)
            .save(dir.join(format!("img{i:03}.png")))
            .unwrap();
    }
}

/// Spawns a slow `explain` (1024×1024 inputs, one image per batch, one thread) over `dir`.
fn spawn_slow(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["--threads", "1", "explain", "--weights"])
        .arg(resnet_weights())
        .args([
            "--backend",
            "cpu",
            "--size",
            "1024",
            "--batch-size",
            "1",
            "--out",
        ])
        .arg(out)
        .args(extra)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `k` overlays exist in `out`, then sends `signal` to the still-running child.
fn interrupt_after(child: &mut std::process::Child, out: &Path, k: usize, signal: &str) {
    let start = Instant::now();
    while count(out, ".overlay.png") < k {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the signal"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no outputs");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the signal"
    );
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// SIGINT in the middle of a run: the files being written are finished, no temporary file
/// is left, exit status 130; `--skip-existing` then resumes where it stopped and reports how
/// many it left out; every output is there in the end.
#[test]
fn interrupted_runs_leave_no_temporary_files_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    let n = 24;
    many_images(&dir, n);
    let mut child = spawn_slow(&dir, &out, &[]);
    interrupt_after(&mut child, &out, 3, "-INT");
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted by SIGINT"), "{e}");
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
    let complete = (0..n)
        .filter(|i| {
            ["cam", "overlay"]
                .iter()
                .all(|k| out.join(format!("img{i:03}.{k}.png")).exists())
        })
        .count();
    assert!((3..n).contains(&complete), "{complete} done");

    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["explain", "--weights"])
        .arg(resnet_weights())
        .args([
            "--backend",
            "cpu",
            "--size",
            "1024",
            "--skip-existing",
            "--out",
        ])
        .arg(&out)
        .arg(&dir)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains(&format!(
            "{} images explained, 0 skipped, {complete} already done",
            n - complete
        )),
        "{e}"
    );
    assert_eq!(json_lines(&o).len(), n - complete);
    for i in 0..n {
        for kind in ["cam", "overlay"] {
            assert!(
                out.join(format!("img{i:03}.{kind}.png")).exists(),
                "img{i:03}.{kind}"
            );
        }
    }
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
}

/// SIGTERM likewise: exit status 143, no temporary file.
#[test]
fn sigterm_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    many_images(&dir, 12);
    let mut child = spawn_slow(&dir, &out, &[]);
    interrupt_after(&mut child, &out, 1, "-TERM");
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{e}");
    assert!(e.contains("interrupted by SIGTERM"), "{e}");
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
}

/// --skip-existing checks every output the options write: with --save-raw an image with only
/// its PNGs is redone; with --top-k, K classes must be complete.
#[test]
fn skip_existing_checks_every_expected_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    many_images(&dir, 3);
    let o = explain(&seed_weights(), &out, &[s(&dir)]);
    assert!(o.status.success());
    let o = explain(&seed_weights(), &out, &[s(&dir), "--skip-existing"]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("0 images explained, 0 skipped, 3 already done"),
        "{e}"
    );
    std::fs::remove_file(out.join("img001.overlay.png")).unwrap();
    let o = explain(&seed_weights(), &out, &[s(&dir), "--skip-existing"]);
    let e = stderr(&o);
    assert!(
        e.contains("1 image explained, 0 skipped, 2 already done"),
        "{e}"
    );
    assert_eq!(json_lines(&o)[0]["path"], s(&dir.join("img001.png")));
    let o = explain(
        &seed_weights(),
        &out,
        &[s(&dir), "--skip-existing", "--save-raw"],
    );
    assert!(stderr(&o).contains("3 images explained, 0 skipped, 0 already done"));
    let o = explain(
        &seed_weights(),
        &out,
        &[s(&dir), "--skip-existing", "--top-k", "2"],
    );
    assert!(stderr(&o).contains("3 images explained, 0 skipped, 0 already done"));
    let o = explain(
        &seed_weights(),
        &out,
        &[s(&dir), "--skip-existing", "--top-k", "2"],
    );
    assert!(stderr(&o).contains("0 images explained, 0 skipped, 3 already done"));
    let o = explain(
        &seed_weights(),
        &out,
        &[s(&dir), "--skip-existing", "--top-k", "3"],
    );
    assert!(stderr(&o).contains("3 images explained, 0 skipped, 0 already done"));
}

// ---------------------------------------------------------------------------------------------
// 8. Smaller ones

/// 16-bit PNGs are reduced to 8 bits as Pillow's convert("RGB") does (checked with Pillow
/// 13.0: grayscale I;16 is clipped to 255; 16-bit RGB keeps the high byte), not scaled by
/// 1/257.
#[test]
fn sixteen_bit_pngs_convert_like_pillow() {
    let vals: [u16; 12] = [
        0, 1, 100, 255, 256, 300, 1000, 32768, 65535, 12345, 40000, 511,
    ];
    let gray = gradcam::internal::imaging::load::decode_bytes(&png16(4, 3, 0, &vals)).unwrap();
    let got: Vec<u8> = gray.pixels().map(|p| p.0[0]).collect();
    assert_eq!(
        got,
        [0, 1, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255]
    );
    assert!(gray.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
    let rgb: Vec<u16> = vals.iter().flat_map(|&v| [v, 65535 - v, v / 2]).collect();
    let img = gradcam::internal::imaging::load::decode_bytes(&png16(4, 3, 2, &rgb)).unwrap();
    let got: Vec<u8> = img.as_raw().clone();
    let want: Vec<u8> = rgb.iter().map(|&v| (v >> 8) as u8).collect();
    assert_eq!(got, want);
}

/// A file name that is not UTF-8: `path` is the lossy form, `path_bytes` the exact bytes.
#[test]
fn non_utf8_file_names_keep_their_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    let p = tmp.path().join(name);
    std::fs::copy(image_fixture("gray.png"), &p).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["explain", "--weights"])
        .arg(seed_weights())
        .args(["--backend", "cpu", "--out"])
        .arg(tmp.path().join("o"))
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let l = &json_lines(&o)[0];
    assert!(
        l["path"].as_str().unwrap().ends_with("caf\u{fffd}.png"),
        "{l}"
    );
    let bytes: Vec<u8> = l["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, p.as_os_str().as_bytes());
    // UTF-8 paths have no path_bytes.
    let o = explain(
        &seed_weights(),
        &tmp.path().join("o"),
        &[s(&image_fixture("gray.png"))],
    );
    assert!(json_lines(&o)[0].get("path_bytes").is_none());
}
