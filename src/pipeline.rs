//! The image run: a bounded decode → compute → write pipeline.
//!
//! A reader thread decodes and preprocesses one batch at a time (images in parallel on the
//! rayon pool) and hands it over a channel that holds at most two batches; the calling thread
//! runs the engine on each batch as it arrives; a writer thread encodes and writes the
//! pictures, prints the JSON lines in input order, and drives the progress bar. Every stage
//! waits when the next one is behind, so memory stays at a few batches however many images a
//! folder holds. Bad inputs are reported on stderr, counted, and skipped.
//!
//! Limits: every image's size is checked against the pixel limit before it is decoded, and
//! the memory its decoding and preprocessing take is counted against half the memory available
//! when the run starts (images wait for one another when they would not fit together); on the
//! CPU backend a batch whose activations would not fit in memory is refused. Results that are
//! not finite (NaN or infinite logits, CAMs or gradients) are reported and skipped, never
//! written. A SIGINT or SIGTERM stops the run after the files being written.

use crate::engine::{Classes, MapKind, Method, MethodOptions};
use crate::error::{Error, Result};
use crate::imaging::inputs::{self, Input};
use crate::imaging::load::Limits;
use crate::imaging::preprocess::{Prepared, Transform};
use crate::imaging::{load, overlay, write_png};
use crate::interrupt;
use crate::runner::AnyEngine;
use crate::tensor::Tensor;
use ::image::RgbImage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Condvar, Mutex};

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub out: PathBuf,
    pub transform: Transform,
    /// Target layers; empty: the model's default.
    pub layers: Vec<String>,
    pub classes: Classes,
    pub methods: Vec<Method>,
    pub method_options: MethodOptions,
    pub image_weight: f64,
    pub overlay_original: bool,
    pub save_raw: bool,
    pub labels: Option<Vec<String>>,
    pub batch_size: usize,
    pub progress: bool,
    /// Images, resized images and network inputs with more pixels are refused.
    pub max_image_pixels: u64,
    /// Leave out images whose outputs are all present.
    pub skip_existing: bool,
    /// `--metrics`: score every CAM with pytorch-grad-cam's faithfulness metrics; stdout then
    /// has one JSON line per image, class and CAM method, and stderr a summary table.
    pub metrics: Option<crate::metrics::RoadConfig>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub processed: usize,
    pub skipped: usize,
    /// Left out by --skip-existing.
    pub existing: usize,
}

/// One decoded input on its way to the engine.
struct Decoded {
    input: Input,
    prepared: Prepared,
    original: Option<RgbImage>,
}

/// One input's results on its way to the writer.
enum Done {
    Skipped { path: PathBuf, reason: String },
    Explained(Box<Explained>),
}

struct Explained {
    decoded: Decoded,
    /// One per target rank.
    targets: Vec<ImageTarget>,
    /// With --metrics: one per class and CAM method.
    records: Vec<crate::metrics::MetricsRecord>,
}

/// One image's result for one class.
struct ImageTarget {
    class: usize,
    probability: f32,
    /// One per method: the image's map and its shape (`MapKind`).
    maps: Vec<(Method, Tensor)>,
}

/// Decoded images of one input size, with their index in the batch.
type SizeGroup = ((usize, usize), Vec<(usize, Decoded)>);

/// Runs the whole image explanation; `Err` only for problems that concern every input (the
/// output directory, the model); bad inputs are counted in the summary.
pub fn run(engine: &AnyEngine, o: &Options) -> Result<Summary> {
    std::fs::create_dir_all(&o.out).map_err(|source| Error::Write {
        path: o.out.clone(),
        source,
    })?;
    let (inputs, notices) = inputs::collect(&o.paths, Some(&o.out));
    check_model(engine, o, inputs.len())?;
    let mut summary = Summary::default();
    for n in &notices {
        if n.skipped {
            summary.skipped += 1;
            eprintln!(
                "skipped {}: {}",
                n.path.display(),
                crate::cli::flags(&n.message)
            );
        } else {
            eprintln!(
                "note: {}: {}",
                n.path.display(),
                crate::cli::flags(&n.message)
            );
        }
    }
    let inputs = if o.skip_existing {
        let mut listings = HashMap::new();
        let (done, todo): (Vec<_>, Vec<_>) = inputs
            .into_iter()
            .partition(|i| outputs_exist(o, i, &mut listings));
        summary.existing = done.len();
        if !done.is_empty() {
            eprintln!(
                "note: {} image{} left out: {} outputs are in {} already (--skip-existing)",
                done.len(),
                if done.len() == 1 { "" } else { "s" },
                if done.len() == 1 { "its" } else { "their" },
                o.out.display()
            );
        }
        todo
    } else {
        inputs
    };
    let bar = if o.progress && std::io::stderr().is_terminal() {
        let bar =
            ProgressBar::with_draw_target(Some(inputs.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}  {wide_msg}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let budget = Budget::new(crate::limits::available_memory().map_or(u64::MAX, |m| m / 2));

    let (batch_tx, batch_rx) = sync_channel::<Vec<std::result::Result<Decoded, Done>>>(2);
    let (done_tx, done_rx) = sync_channel::<Vec<Done>>(2);
    let result = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for chunk in inputs.chunks(o.batch_size) {
                if interrupt::requested().is_some() {
                    break;
                }
                let batch: Vec<_> = chunk.par_iter().map(|i| decode(i, o, &budget)).collect();
                if batch_tx.send(batch).is_err() {
                    break; // the engine stopped
                }
            }
            drop(batch_tx);
        });
        let writer = s.spawn(|| {
            let mut counts = Summary::default();
            let mut table = crate::metrics::Summary::default();
            for batch in done_rx {
                let written: Vec<_> = batch
                    .into_par_iter()
                    .map(|d| {
                        let records = match &d {
                            Done::Explained(e) => e.records.clone(),
                            Done::Skipped { .. } => vec![],
                        };
                        // After SIGINT/SIGTERM no new image is started.
                        interrupt::requested()
                            .is_none()
                            .then(|| write(d, o).map(|lines| (lines, records)))
                    })
                    .collect();
                let mut stdout = std::io::stdout().lock();
                for w in written.into_iter().flatten() {
                    match w {
                        Ok((lines, records)) => {
                            counts.processed += 1;
                            records.iter().for_each(|r| table.add(r));
                            for l in lines {
                                let _ = writeln!(stdout, "{l}");
                            }
                        }
                        Err(msg) => {
                            counts.skipped += 1;
                            bar.suspend(|| eprintln!("skipped {}", crate::cli::flags(&msg)));
                        }
                    }
                    bar.inc(1);
                }
                let _ = stdout.flush();
            }
            if o.metrics.is_some() && counts.processed > 0 {
                bar.suspend(|| eprint!("{}", table.table()));
            }
            counts
        });
        let computed = (|| -> Result<()> {
            for batch in batch_rx {
                if interrupt::requested().is_some() {
                    break;
                }
                let done = compute(engine, o, batch)?;
                if done_tx.send(done).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        drop(done_tx);
        let _ = reader.join();
        let counts = writer.join().expect("writer thread");
        computed.map(|()| counts)
    });
    bar.finish_and_clear();
    let counts = result?;
    summary.processed += counts.processed;
    summary.skipped += counts.skipped;
    let existing = if o.skip_existing {
        format!(", {} already done", summary.existing)
    } else {
        String::new()
    };
    let counts = format!(
        "{} image{} explained, {} skipped{existing}; outputs in {}",
        summary.processed,
        if summary.processed == 1 { "" } else { "s" },
        summary.skipped,
        o.out.display()
    );
    if let Some(sig) = interrupt::requested() {
        eprintln!("interrupted by {}: {counts}", interrupt::name(sig));
        return Err(Error::Interrupted(sig));
    }
    eprintln!("{counts}");
    Ok(summary)
}

/// Memory for decoding and preprocessing, shared by the images decoded in parallel: an image
/// waits until the ones before it release what it needs. Holders never wait on anything else,
/// so waiting cannot deadlock.
struct Budget {
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    fn new(total: u64) -> Self {
        Budget {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, bytes: u64) -> std::result::Result<Permit<'_>, String> {
        if bytes > self.total {
            return Err(format!(
                "decoding and preprocessing it needs about {}, more than the {} of memory \
                 available for it (half of the memory available)",
                crate::limits::fmt_bytes(bytes),
                crate::limits::fmt_bytes(self.total)
            ));
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free < bytes {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= bytes;
        Ok(Permit {
            budget: self,
            bytes,
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.budget.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += self.bytes;
        self.budget.freed.notify_all();
    }
}

/// The files one image's outputs for one class take: (JSON key, file suffix). Grad-CAM's
/// are NAME.cam.png, NAME.overlay.png, NAME.cam.npy; another CAM method M's carry its name,
/// NAME.M.cam.png, NAME.M.overlay.png, NAME.M.cam.npy; gradient maps and occlusion are
/// NAME.M.png and NAME.M.npy. Method names are distinct and none is `cam` or `overlay`, so
/// no two outputs share a name.
fn suffixes(o: &Options) -> Vec<(String, String)> {
    o.methods
        .iter()
        .flat_map(|&m| method_files(m, o.save_raw))
        .collect()
}

/// One method's (JSON key, file suffix) pairs, in the order `write` writes them: a CAM's
/// heatmap, overlay and (with --save-raw) .npy; another map's picture and .npy.
fn method_files(m: Method, save_raw: bool) -> Vec<(String, String)> {
    let mut v = Vec::new();
    match m.kind() {
        MapKind::Cam => {
            let infix = match m {
                Method::Gradcam => String::new(),
                m => format!("{}.", m.name()),
            };
            v.push((format!("{infix}cam"), format!("{infix}cam.png")));
            v.push((format!("{infix}overlay"), format!("{infix}overlay.png")));
            if save_raw {
                v.push((format!("{infix}raw"), format!("{infix}cam.npy")));
            }
        }
        MapKind::Gradient | MapKind::Signed => {
            v.push((m.name().into(), format!("{}.png", m.name())));
            if save_raw {
                v.push((format!("{}-raw", m.name()), format!("{}.npy", m.name())));
            }
        }
    }
    v
}

/// --skip-existing: whether every output of `input` is in the output directory. With
/// `--top-k K`, whose file names carry classes not known before the run, K classes must each
/// have every file. `listings` caches directory listings.
fn outputs_exist(
    o: &Options,
    input: &Input,
    listings: &mut HashMap<PathBuf, HashSet<String>>,
) -> bool {
    let base = o.out.join(&input.name);
    let sfx = suffixes(o);
    match o.classes {
        Classes::TopK(k) if k > 1 => {
            let (Some(dir), Some(file)) = (base.parent(), base.file_name()) else {
                return false;
            };
            let names = listings.entry(dir.to_owned()).or_insert_with(|| {
                std::fs::read_dir(dir)
                    .map(|r| {
                        r.filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            });
            let prefix = format!("{}.c", file.to_string_lossy());
            let classes: HashSet<&str> = names
                .iter()
                .filter_map(|n| n.strip_prefix(&prefix)?.split_once('.'))
                .filter(|(c, _)| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                .map(|(c, _)| c)
                .collect();
            let complete = classes
                .iter()
                .filter(|c| {
                    sfx.iter()
                        .all(|(_, s)| names.contains(&format!("{prefix}{c}.{s}")))
                })
                .count();
            complete >= k
        }
        _ => sfx.iter().all(|(_, s)| {
            let mut p = base.clone().into_os_string();
            p.push(format!(".{s}"));
            Path::new(&p).is_file()
        }),
    }
}

/// The JSON fields naming an input: `path`, valid UTF-8 always (bytes that are not UTF-8
/// become U+FFFD), and, only for a path that is not UTF-8, `path_bytes`: the path's exact bytes
/// as an array of numbers (`bytes(line["path_bytes"])` in Python).
pub fn json_path(path: &Path, line: &mut serde_json::Value) {
    use std::os::unix::ffi::OsStrExt;
    line["path"] = json!(path.to_string_lossy());
    if path.to_str().is_none() {
        line["path_bytes"] = json!(path.as_os_str().as_bytes());
    }
}

/// Layer, class and input size errors concern every image: report them once, before the run.
fn check_model(engine: &AnyEngine, o: &Options, inputs: usize) -> Result<()> {
    let model = engine.model();
    let uses_layer = o.methods.iter().any(|m| m.uses_layer());
    let default = [model.default_layer.clone()];
    let layers = if o.layers.is_empty() {
        &default[..]
    } else {
        &o.layers[..]
    };
    if uses_layer {
        for layer in layers {
            model.module(layer)?;
        }
    }
    if let Classes::Fixed(c) = o.classes {
        if c >= model.num_classes {
            return Err(Error::ClassOutOfRange {
                class: c,
                classes: model.num_classes,
            });
        }
    }
    if let Some((h, w)) = o.transform.input_size() {
        let plan = model.graph.plan(&[1, model.graph.in_channels, h, w])?;
        for layer in layers.iter().filter(|_| uses_layer) {
            let shape = &plan.shapes[model.module(layer)?.value];
            if shape.len() != 4 {
                return Err(Error::NotSpatial {
                    name: layer.to_owned(),
                    shape: shape.clone(),
                });
            }
        }
        let n = o.batch_size.min(inputs).max(1);
        engine.check_activations(&[n, model.graph.in_channels, h, w])?;
    }
    if model.graph.in_channels != 3 {
        return Err(Error::Usage(format!(
            "the model takes {} input channels; images give 3",
            model.graph.in_channels
        )));
    }
    Ok(())
}

fn decode(input: &Input, o: &Options, budget: &Budget) -> std::result::Result<Decoded, Done> {
    let skip = |reason: String| Done::Skipped {
        path: input.path.clone(),
        reason,
    };
    let limits = Limits {
        max_pixels: o.max_image_pixels,
    };
    let enc = load::read(&input.path, &limits).map_err(skip)?;
    let (h, w) = (enc.height as usize, enc.width as usize);
    let preprocess = o.transform.check(h, w, o.max_image_pixels).map_err(skip)?;
    // Every buffer: the file, the decoder's output, the RGB image, preprocessing.
    let need = enc.file_bytes() + enc.decoded_bytes + (h * w * 3) as u64 + preprocess;
    let _permit = budget.acquire(need).map_err(skip)?;
    let img = enc.decode().map_err(skip)?;
    let prepared = o.transform.apply(&img);
    if let Some(i) = prepared.tensor.iter().position(|v| !v.is_finite()) {
        return Err(skip(format!(
            "normalization gives a non-finite value ({}) at [{}, {}, {}]",
            prepared.tensor[i],
            i / (prepared.rgb.width() * prepared.rgb.height()) as usize,
            i / prepared.rgb.width() as usize % prepared.rgb.height() as usize,
            i % prepared.rgb.width() as usize
        )));
    }
    Ok(Decoded {
        input: input.clone(),
        prepared,
        original: o.overlay_original.then_some(img),
    })
}

/// Runs the engine on the decoded images of a batch, grouped by input size (sizes differ only
/// with --resize and no crop).
fn compute(
    engine: &AnyEngine,
    o: &Options,
    batch: Vec<std::result::Result<Decoded, Done>>,
) -> Result<Vec<Done>> {
    let mut slots: Vec<Option<Done>> = Vec::with_capacity(batch.len());
    let mut groups: Vec<SizeGroup> = Vec::new();
    for (i, item) in batch.into_iter().enumerate() {
        match item {
            Err(done) => slots.push(Some(done)),
            Ok(d) => {
                slots.push(None);
                let size = d.prepared.geometry.input;
                match groups.iter_mut().find(|(s, _)| *s == size) {
                    Some((_, g)) => g.push((i, d)),
                    None => groups.push((size, vec![(i, d)])),
                }
            }
        }
    }
    for ((h, w), group) in groups {
        let n = group.len();
        // Sizes vary only with --resize and no crop; then a group may not fit in memory.
        if let Err(e) = engine.check_activations(&[n, 3, h, w]) {
            for (i, d) in group {
                slots[i] = Some(Done::Skipped {
                    path: d.input.path,
                    reason: e.to_string(),
                });
            }
            continue;
        }
        let mut data = Vec::with_capacity(n * 3 * h * w);
        for (_, d) in &group {
            data.extend_from_slice(&d.prepared.tensor);
        }
        let x = Tensor::new(vec![n, 3, h, w], data);
        let req = crate::engine::Request {
            methods: &o.methods,
            layers: &o.layers,
            classes: o.classes.clone(),
            options: &o.method_options,
        };
        let a = match engine.attribute(&x, &req) {
            Ok(a) => a,
            // Only possible when sizes vary: this size does not fit the network.
            Err(e @ Error::InputShape { .. }) => {
                for (i, d) in group {
                    slots[i] = Some(Done::Skipped {
                        path: d.input.path,
                        reason: e.to_string(),
                    });
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        for (j, (i, decoded)) in group.into_iter().enumerate() {
            if let Some(reason) = a.non_finite(j) {
                slots[i] = Some(Done::Skipped {
                    path: decoded.input.path,
                    reason,
                });
                continue;
            }
            let targets: Vec<ImageTarget> = a
                .targets
                .iter()
                .map(|t| ImageTarget {
                    class: t.classes[j],
                    probability: t.scores[j],
                    maps: t
                        .maps
                        .iter()
                        .map(|m| {
                            let per = m.data.len() / n;
                            let data = m.data.data[j * per..(j + 1) * per].to_vec();
                            (m.method, Tensor::new(m.data.shape[1..].to_vec(), data))
                        })
                        .collect(),
                })
                .collect();
            let records = match &o.metrics {
                Some(cfg) => match score_image(engine, o, cfg, &decoded, &targets) {
                    Ok(r) => r,
                    Err(e) => {
                        slots[i] = Some(Done::Skipped {
                            path: decoded.input.path,
                            reason: format!("metrics: {e}"),
                        });
                        continue;
                    }
                },
                None => vec![],
            };
            slots[i] = Some(Done::Explained(Box::new(Explained {
                decoded,
                targets,
                records,
            })));
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect())
}

/// Writes one input's pictures; returns its JSON lines, or the message for a skipped input.
fn write(done: Done, o: &Options) -> std::result::Result<Vec<String>, String> {
    let e = match done {
        Done::Skipped { path, reason } => return Err(format!("{}: {reason}", path.display())),
        Done::Explained(e) => e,
    };
    let d = &e.decoded;
    let path_msg = |err: Error| format!("{}: {err}", d.input.path.display());
    let (h, w) = d.prepared.geometry.input;
    let base = o.out.join(&d.input.name);
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent).map_err(|source| {
            path_msg(Error::Write {
                path: parent.to_owned(),
                source,
            })
        })?;
    }
    let top_k = matches!(o.classes, Classes::TopK(k) if k > 1);
    let mut lines = Vec::new();
    for (rank, t) in e.targets.iter().enumerate() {
        let class = t.class;
        let stem = if top_k {
            format!("{}.c{class}", d.input.name)
        } else {
            d.input.name.clone()
        };
        let file = |suffix: &str| o.out.join(format!("{stem}.{suffix}"));
        let mut outputs = serde_json::Map::new();
        let mut put = |key: &str, path: &Path| {
            outputs.insert(key.into(), json!(path.display().to_string()));
        };
        for (m, map) in &t.maps {
            let files = method_files(*m, o.save_raw);
            let images = match m.kind() {
                MapKind::Cam => {
                    let cam = &map.data;
                    let overlay = match &d.original {
                        Some(orig) => overlay::overlay_original(
                            orig,
                            cam,
                            &d.prepared.geometry,
                            o.image_weight,
                        ),
                        None => overlay::show_cam_on_image(&d.prepared.rgb, cam, o.image_weight),
                    };
                    vec![overlay::heatmap(cam, h, w), overlay]
                }
                MapKind::Gradient => vec![overlay::gradient_image(&map.data, h, w)],
                MapKind::Signed => vec![overlay::diverging(
                    &map.data,
                    map.shape[0],
                    map.shape[1],
                    h,
                    w,
                )],
            };
            // The pictures, then (with --save-raw) the raw map, as `method_files` lists them.
            for (i, (key, suffix)) in files.iter().enumerate() {
                let p = file(suffix);
                match images.get(i) {
                    Some(img) => write_png(&p, img).map_err(path_msg)?,
                    None => crate::npy::write_f32(&p, map).map_err(path_msg)?,
                }
                put(key, &p);
            }
        }
        let mut line = json!({
            "class": class,
            "class_name": o.labels.as_ref().map(|l| l[class].clone()),
            "probability": t.probability,
            "outputs": outputs,
        });
        if top_k {
            line["rank"] = json!(rank + 1);
        }
        json_path(&d.input.path, &mut line);
        if o.metrics.is_none() {
            lines.push(line.to_string());
        }
    }
    for r in &e.records {
        let mut line = r.to_json();
        json_path(&d.input.path, &mut line);
        lines.push(line.to_string());
    }
    Ok(lines)
}

/// --metrics for one image: every CAM method's map of every class, scored by perturbed
/// forward passes of the engine (one batch of 2 + 2 · percentiles per map). The imputer's
/// noise is seeded by --seed, the same for every image and method, so methods are compared
/// on the same draws.
fn score_image(
    engine: &AnyEngine,
    o: &Options,
    cfg: &crate::metrics::RoadConfig,
    d: &Decoded,
    targets: &[ImageTarget],
) -> Result<Vec<crate::metrics::MetricsRecord>> {
    use rand::SeedableRng;
    let (h, w) = d.prepared.geometry.input;
    let x = Tensor::new(vec![3, h, w], d.prepared.tensor.clone());
    let score = o.method_options.score;
    let mut scorer = |b: &Tensor, classes: &[usize]| score.of(&engine.forward(b)?, classes);
    let mut records = Vec::new();
    for t in targets {
        for (m, map) in t.maps.iter().filter(|(m, _)| m.kind() == MapKind::Cam) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(o.method_options.seed);
            let metrics = crate::metrics::evaluate(&x, map, t.class, cfg, &mut rng, &mut scorer)?;
            records.push(crate::metrics::MetricsRecord {
                image: d.input.name.clone(),
                method: m.name().into(),
                class: t.class,
                score,
                noise: cfg.noise,
                metrics,
            });
        }
    }
    Ok(records)
}
