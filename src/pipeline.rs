//! The image run: a bounded decode → compute → write pipeline.
//!
//! A reader thread decodes and preprocesses one batch at a time (images in parallel on the
//! rayon pool) and hands it over a channel that holds at most two batches; the calling thread
//! runs the engine on each batch as it arrives; a writer thread encodes and writes the
//! pictures, prints the JSON lines in input order, and drives the progress bar. Every stage
//! waits when the next one is behind, so memory stays at a few batches however many images a
//! folder holds. Bad inputs are reported on stderr, counted, and skipped.

use crate::engine::{Classes, Outputs};
use crate::error::{Error, Result};
use crate::image::inputs::{self, Input};
use crate::image::preprocess::{Prepared, Transform};
use crate::image::{load, overlay, write_png};
use crate::runner::AnyEngine;
use crate::tensor::Tensor;
use ::image::RgbImage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub out: PathBuf,
    pub transform: Transform,
    pub layer: Option<String>,
    pub classes: Classes,
    pub outputs: Outputs,
    pub image_weight: f64,
    pub overlay_original: bool,
    pub save_raw: bool,
    pub labels: Option<Vec<String>>,
    pub batch_size: usize,
    pub progress: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub processed: usize,
    pub skipped: usize,
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
}

/// One image's result for one class.
struct ImageTarget {
    class: usize,
    probability: f32,
    /// [H, W], normalized to [0, 1].
    cam: Option<Vec<f32>>,
    /// [3, H, W]
    guided: Option<Vec<f32>>,
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
    check_model(engine, o)?;
    let (inputs, notices) = inputs::collect(&o.paths);
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
    let mut summary = Summary::default();
    for n in &notices {
        if n.skipped {
            summary.skipped += 1;
            eprintln!("skipped {}: {}", n.path.display(), n.message);
        } else {
            eprintln!("note: {}: {}", n.path.display(), n.message);
        }
    }

    let (batch_tx, batch_rx) = sync_channel::<Vec<std::result::Result<Decoded, Done>>>(2);
    let (done_tx, done_rx) = sync_channel::<Vec<Done>>(2);
    let result = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for chunk in inputs.chunks(o.batch_size) {
                let batch: Vec<_> = chunk.par_iter().map(|i| decode(i, o)).collect();
                if batch_tx.send(batch).is_err() {
                    break; // the engine stopped
                }
            }
            drop(batch_tx);
        });
        let writer = s.spawn(|| {
            let mut counts = Summary::default();
            for batch in done_rx {
                let written: Vec<_> = batch.into_par_iter().map(|d| write(d, o)).collect();
                let mut stdout = std::io::stdout().lock();
                for w in written {
                    match w {
                        Ok(lines) => {
                            counts.processed += 1;
                            for l in lines {
                                let _ = writeln!(stdout, "{l}");
                            }
                        }
                        Err(msg) => {
                            counts.skipped += 1;
                            bar.suspend(|| eprintln!("skipped {msg}"));
                        }
                    }
                    bar.inc(1);
                }
                let _ = stdout.flush();
            }
            counts
        });
        let computed = (|| -> Result<()> {
            for batch in batch_rx {
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
    eprintln!(
        "{} image{} explained, {} skipped; outputs in {}",
        summary.processed,
        if summary.processed == 1 { "" } else { "s" },
        summary.skipped,
        o.out.display()
    );
    Ok(summary)
}

/// Layer, class and input size errors concern every image: report them once, before the run.
fn check_model(engine: &AnyEngine, o: &Options) -> Result<()> {
    let model = engine.model();
    if o.outputs.cam {
        model.module(o.layer.as_deref().unwrap_or(&model.default_layer))?;
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
        if o.outputs.cam {
            let layer = o.layer.as_deref().unwrap_or(&model.default_layer);
            let shape = &plan.shapes[model.module(layer)?.value];
            if shape.len() != 4 {
                return Err(Error::NotSpatial {
                    name: layer.to_owned(),
                    shape: shape.clone(),
                });
            }
        }
    }
    if model.graph.in_channels != 3 {
        return Err(Error::Usage(format!(
            "the model takes {} input channels; images give 3",
            model.graph.in_channels
        )));
    }
    Ok(())
}

fn decode(input: &Input, o: &Options) -> std::result::Result<Decoded, Done> {
    let img = load::decode(&input.path).map_err(|reason| Done::Skipped {
        path: input.path.clone(),
        reason,
    })?;
    let prepared = o.transform.apply(&img);
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
        let mut data = Vec::with_capacity(n * 3 * h * w);
        for (_, d) in &group {
            data.extend_from_slice(&d.prepared.tensor);
        }
        let x = Tensor::new(vec![n, 3, h, w], data);
        let a = match engine.attribute(&x, o.layer.as_deref(), o.classes, o.outputs) {
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
        let plane = h * w;
        for (j, (i, decoded)) in group.into_iter().enumerate() {
            let targets = a
                .targets
                .iter()
                .map(|t| {
                    let cam = t
                        .cams
                        .as_ref()
                        .map(|c| c.data[j * plane..(j + 1) * plane].to_vec());
                    let guided = t
                        .guided
                        .as_ref()
                        .map(|g| g.data[j * 3 * plane..(j + 1) * 3 * plane].to_vec());
                    ImageTarget {
                        class: t.classes[j],
                        probability: t.scores[j],
                        cam,
                        guided,
                    }
                })
                .collect();
            slots[i] = Some(Done::Explained(Box::new(Explained { decoded, targets })));
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
        let (class, cam, guided) = (t.class, &t.cam, &t.guided);
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
        if let Some(cam) = cam {
            let p = file("cam.png");
            write_png(&p, &overlay::heatmap(cam, h, w)).map_err(path_msg)?;
            put("cam", &p);
            let p = file("overlay.png");
            let img = match &d.original {
                Some(orig) => {
                    overlay::overlay_original(orig, cam, &d.prepared.geometry, o.image_weight)
                }
                None => overlay::show_cam_on_image(&d.prepared.rgb, cam, o.image_weight),
            };
            write_png(&p, &img).map_err(path_msg)?;
            put("overlay", &p);
            if o.save_raw {
                let p = file("cam.npy");
                crate::npy::write_f32(&p, &Tensor::new(vec![h, w], cam.clone()))
                    .map_err(path_msg)?;
                put("raw", &p);
            }
        }
        if let Some(g) = guided {
            let (key, g) = match cam {
                Some(cam) => ("guided-gradcam", guided_times_cam(g, cam)),
                None => ("guided-backprop", g.clone()),
            };
            let p = file(&format!("{key}.png"));
            write_png(&p, &overlay::gradient_image(&g, h, w)).map_err(path_msg)?;
            put(key, &p);
            if o.save_raw {
                let p = file(&format!("{key}.npy"));
                crate::npy::write_f32(&p, &Tensor::new(vec![3, h, w], g)).map_err(path_msg)?;
                put(&format!("{key}-raw"), &p);
            }
        }
        let mut line = json!({
            "path": d.input.path.display().to_string(),
            "class": class,
            "class_name": o.labels.as_ref().map(|l| l[class].clone()),
            "probability": t.probability,
            "outputs": outputs,
        });
        if top_k {
            line["rank"] = json!(rank + 1);
        }
        lines.push(line.to_string());
    }
    Ok(lines)
}

/// kazuto1011's guided Grad-CAM for one image: gradient [3, H, W] times CAM [H, W].
pub fn guided_times_cam(guided: &[f32], cam: &[f32]) -> Vec<f32> {
    let plane = cam.len();
    guided
        .iter()
        .enumerate()
        .map(|(i, &g)| g * cam[i % plane])
        .collect()
}
