//! Fuzz targets for every parser of untrusted bytes, as bounded property tests (proptest, on
//! the stable toolchain, no network): the safetensors header and tensor table as the model
//! loader reads them (then the architecture and a plan), the .npy reader, image decoding plus
//! preprocessing, and the labels file. Each target mutates the seed corpus in
//! tests/fixtures/fuzz/<target>/ (scripts/make_fuzz_corpus.py; plus the test fixtures'
//! models) — bit flips, byte overwrites, insertions, deletions, truncation, and
//! structure-aware edits of the numbers in a header (shapes, offsets, image sizes) towards
//! edge values — and also tries plain random bytes. The property: no panic, no unbounded
//! allocation (sizes come with limits), and results that are consistent when parsing
//! succeeds. `FUZZ_CASES=N` runs N cases per target (default 300,000: about 15 s for all four on 2
//! cores);
//! failures are shrunk by proptest and printed with the input.

use gradcam::internal::imaging::labels;
use gradcam::internal::imaging::load::{self, Limits};
use gradcam::internal::imaging::preprocess::{Filter, Resize, Transform};
use gradcam::internal::model::weights::WeightStore;
use gradcam::internal::model::Model;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

mod common;

/// Counts of cases that were accepted at each stage, printed at the end of a target (run with
/// `--nocapture` to see how deep the mutated inputs get).
struct Stages(&'static str, Vec<(&'static str, AtomicUsize)>);

impl Stages {
    fn new(target: &'static str, names: &[&'static str]) -> Self {
        Stages(
            target,
            names.iter().map(|n| (*n, AtomicUsize::new(0))).collect(),
        )
    }

    fn hit(&self, i: usize) {
        self.1[i].1.fetch_add(1, Relaxed);
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        let counts: Vec<String> = self
            .1
            .iter()
            .map(|(n, c)| format!("{n} {}", c.load(Relaxed)))
            .collect();
        eprintln!("{}: {}", self.0, counts.join(", "));
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = common::fixture("fuzz").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "{}", dir.display());
    seeds
}

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking a failure can take long on large inputs; a few hundred steps find a small
        // enough case.
        max_shrink_iters: 512,
        ..Config::default()
    })
}

/// Numbers that break size arithmetic.
const EDGES: [u64; 12] = [
    0,
    1,
    2,
    3,
    255,
    65535,
    1 << 31,
    1 << 32,
    (1 << 32) + 1,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Replaces the `n`-th run of ASCII digits (a number in a JSON or Python header, or in a
    /// labels file) by an edge value or a random one.
    Number(usize, u64),
    /// Writes a big-endian or little-endian u32 at a position (binary headers: PNG's IHDR,
    /// BMP, TIFF).
    Word(usize, u32, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    let pos = any::<prop::sample::Index>();
    prop_oneof![
        (pos.clone(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p.index(usize::MAX), b)),
        (pos.clone(), any::<u8>()).prop_map(|(p, v)| Edit::Set(p.index(usize::MAX), v)),
        (pos.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Edit::Insert(p.index(usize::MAX), v)),
        (pos.clone(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p.index(usize::MAX), n)),
        pos.clone()
            .prop_map(|p| Edit::Truncate(p.index(usize::MAX))),
        (
            0usize..64,
            prop_oneof![
                prop::sample::select(EDGES.to_vec()),
                any::<u64>(),
                0u64..100
            ]
        )
            .prop_map(|(n, v)| Edit::Number(n, v)),
        (
            pos,
            prop_oneof![
                prop::sample::select(vec![0u32, 1, 0xFFFF, 0x7FFF_FFFF, u32::MAX, 23000]),
                any::<u32>()
            ],
            any::<bool>()
        )
            .prop_map(|(p, v, be)| Edit::Word(p.index(usize::MAX), v, be)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let len = b.len();
        match e {
            Edit::Flip(p, bit) if len > 0 => b[p % len] ^= 1 << bit,
            Edit::Set(p, v) if len > 0 => b[p % len] = *v,
            Edit::Insert(p, v) => {
                let at = p % (len + 1);
                b.splice(at..at, v.iter().copied());
            }
            Edit::Remove(p, n) if len > 0 => {
                let at = p % len;
                b.drain(at..(at + n).min(len));
            }
            Edit::Truncate(p) => b.truncate(p % (len + 1)),
            Edit::Number(n, v) => {
                let runs: Vec<(usize, usize)> = digit_runs(&b);
                if !runs.is_empty() {
                    let (s, e) = runs[n % runs.len()];
                    b.splice(s..e, v.to_string().into_bytes());
                }
            }
            Edit::Word(p, v, be) if len >= 4 => {
                let at = p % (len - 3);
                let w = if *be {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[at..at + 4].copy_from_slice(&w);
            }
            _ => {}
        }
    }
    b
}

fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// A seed from `seeds`, edited, or plain random bytes.
fn input(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        9 => (0..n, prop::collection::vec(edit(), 1..4))
            .prop_map(move |(i, e)| apply(&seeds[i], &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// The safetensors loader: header, tensor table, dtypes, finiteness; then architecture
/// detection, the graph, and a plan for a 32×32 input.
#[test]
fn fuzz_safetensors() {
    let mut seeds = corpus("safetensors");
    seeds.push(std::fs::read(common::fixture("seed_cnn/model.safetensors")).unwrap());
    let stages = Stages::new("safetensors", &["cases", "parsed", "model", "planned"]);
    runner(cases(300_000))
        .run(&input(seeds), |bytes| {
            stages.hit(0);
            match WeightStore::parse(Path::new("fuzz.safetensors"), &bytes) {
                Err(e) => prop_assert!(!e.to_string().is_empty()),
                Ok(store) => {
                    stages.hit(1);
                    for t in store.tensors().values() {
                        let n = gradcam::internal::limits::checked_product(
                            t.shape.iter().map(|&d| d as u64),
                        );
                        prop_assert_eq!(n, Some(t.data.len() as u64));
                        prop_assert!(t.data.iter().all(|v| v.is_finite()));
                    }
                    if let Ok(model) = Model::from_store(&store, None) {
                        stages.hit(2);
                        if model
                            .graph
                            .plan(&[1, model.graph.in_channels, 32, 32])
                            .is_ok()
                        {
                            stages.hit(3);
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The .npy reader: magic, version, header dictionary, shape arithmetic, data length.
#[test]
fn fuzz_npy() {
    let stages = Stages::new("npy", &["cases", "parsed"]);
    runner(cases(300_000))
        .run(&input(corpus("npy")), |bytes| {
            stages.hit(0);
            if let Ok(t) = gradcam::internal::npy::parse_f32(&bytes) {
                stages.hit(1);
                // Checked: a product that wraps around would pass an unchecked comparison.
                let n =
                    gradcam::internal::limits::checked_product(t.shape.iter().map(|&d| d as u64));
                prop_assert_eq!(n, Some(t.data.len() as u64));
                prop_assert!(t.data.len() * 4 <= bytes.len());
            }
            Ok(())
        })
        .unwrap();
}

/// Image decoding (every format, the JPEG completeness check, the pixel limit from the
/// header) and then preprocessing with a random small transform.
#[test]
fn fuzz_images() {
    let transform = (
        prop_oneof![
            (1usize..48).prop_map(Resize::Shorter),
            (1usize..48, 1usize..48).prop_map(|(h, w)| Resize::Exact(h, w)),
        ],
        prop::option::of((1usize..40, 1usize..40)),
        prop_oneof![Just(Filter::Bilinear), Just(Filter::Bicubic)],
    );
    // Small enough that a mutated header cannot make a case slow.
    let limits = Limits {
        max_pixels: 1 << 18,
    };
    let stages = Stages::new("images", &["cases", "header", "decoded", "preprocessed"]);
    runner(cases(300_000))
        .run(
            &(input(corpus("images")), transform),
            |(bytes, (resize, crop, filter))| {
                stages.hit(0);
                let Ok(enc) = load::check(bytes, &limits) else {
                    return Ok(());
                };
                stages.hit(1);
                let (w, h) = (enc.width, enc.height);
                prop_assert!(w as u64 * h as u64 <= limits.max_pixels);
                let Ok(img) = enc.decode() else {
                    return Ok(());
                };
                stages.hit(2);
                prop_assert_eq!((img.width(), img.height()), (w, h));
                let t = Transform {
                    resize,
                    filter,
                    crop,
                    mean: [0.5; 3],
                    std: [0.25; 3],
                };
                if t.check(h as usize, w as usize, limits.max_pixels).is_ok() {
                    stages.hit(3);
                    let p = t.apply(&img);
                    let (ih, iw) = p.geometry.input;
                    prop_assert_eq!(p.tensor.len(), 3 * ih * iw);
                    prop_assert!(p.tensor.iter().all(|v| v.is_finite()));
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The labels file: UTF-8, lines, blank lines, the count.
#[test]
fn fuzz_labels() {
    let strings = prop::collection::vec("[a-z \\t\\r\\n\u{feff}é]{0,12}", 0..14)
        .prop_map(|v| v.join("\n").into_bytes());
    let inputs = prop_oneof![input(corpus("labels")), strings];
    let stages = Stages::new("labels", &["cases", "parsed"]);
    runner(cases(300_000))
        .run(&(inputs, 0usize..14), |(bytes, classes)| {
            stages.hit(0);
            if let Ok(names) = labels::parse(&bytes, classes) {
                stages.hit(1);
                prop_assert_eq!(names.len(), classes);
                prop_assert!(names
                    .iter()
                    .all(|n| !n.is_empty() && !n.contains('\n') && n.trim() == n));
            }
            Ok(())
        })
        .unwrap();
}

/// The seed corpus itself parses as expected, so that the targets start from valid files.
#[test]
fn the_seed_corpus_is_valid() {
    let limits = Limits::default();
    for bytes in corpus("images") {
        let enc = load::check(bytes, &limits).unwrap();
        enc.decode().unwrap();
    }
    let npy: Vec<_> = corpus("npy")
        .iter()
        .map(|b| gradcam::internal::npy::parse_f32(b).is_ok())
        .collect();
    assert_eq!(npy.iter().filter(|&&ok| ok).count(), 5, "{npy:?}");
    let st = corpus("safetensors");
    let ok = st
        .iter()
        .filter(|b| WeightStore::parse(Path::new("x"), b).is_ok())
        .count();
    assert_eq!(ok, 4, "all but f64 and nan");
}
