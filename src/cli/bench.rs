//! A benchmark, not a test: medians of repeated runs, reported as images/s.

use super::{parse_size, BackendKind};
use crate::error::Result;
use crate::model::{weights::WeightStore, zoo, Model};
use crate::runner::AnyEngine;
use crate::tensor::Tensor;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Weights to benchmark; without them, random weights for --arch.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Architecture (random weights when --weights is not given).
    #[arg(long, default_value = "resnet50")]
    arch: String,
    /// Classes of the random model.
    #[arg(long, default_value_t = 1000, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1000000))]
    classes: u64,
    /// Input size HxW or N.
    #[arg(long, value_parser = parse_size, default_value = "224")]
    size: (usize, usize),
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 65536))]
    batch: u64,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1000000))]
    iters: u64,
    /// Target layer (default: the architecture's default).
    #[arg(long)]
    layer: Option<String>,
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "auto")]
    backend: BackendKind,
    /// GPU backends: convolution kernel variant to time (v1 plain FP32; v2 tiled: FP32 on wgpu,
    /// TF32 tensor cores on CUDA; CUDA only: v3 3xTF32 (the default), v4 TF32).
    #[arg(long, value_parser = super::named::<crate::backend::ConvKernel>())]
    conv_kernel: Option<crate::backend::ConvKernel>,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(a: Args) -> Result<()> {
    let (model, source) = match &a.weights {
        Some(w) => (Model::load(w)?, w.display().to_string()),
        None => {
            let store = WeightStore::from_tensors(
                "random weights",
                zoo::random_state_dict(&a.arch, a.classes as usize, 0)?,
            );
            (
                Model::from_store(&store, Some(&a.arch))?,
                "random weights".into(),
            )
        }
    };
    let arch = model.arch.clone();
    let layer = a
        .layer
        .clone()
        .unwrap_or_else(|| model.default_layer.clone());
    let opts = crate::runner::BackendOptions {
        conv_kernel: a.conv_kernel,
    };
    let mut engine = AnyEngine::with_options(a.backend, model, &opts)?;
    let (h, w) = a.size;
    let shape = vec![a.batch as usize, engine.model().graph.in_channels, h, w];
    let input_bytes = shape.iter().map(|&d| d as f64).product::<f64>() * 4.0;
    crate::limits::check_memory("the input batch", input_bytes.min(u64::MAX as f64) as u64)
        .map_err(crate::Error::Usage)?;
    engine.check_activations(&shape)?;
    let mut rng = StdRng::seed_from_u64(1);
    let n = shape.iter().product();
    let x = Tensor::new(
        shape,
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect(),
    );
    let iters = a.iters as usize;

    engine.explain(&x, Some(&layer), None)?; // warm-up
    let mut cam_s = vec![];
    for _ in 0..iters {
        let t = Instant::now();
        engine.explain(&x, Some(&layer), None)?;
        cam_s.push(t.elapsed().as_secs_f64());
    }
    let mut fwd_s = vec![];
    for _ in 0..iters {
        let t = Instant::now();
        engine.forward(&x)?;
        fwd_s.push(t.elapsed().as_secs_f64());
    }
    engine.start_kernel_timing();
    engine.explain(&x, Some(&layer), None)?;
    let timing = engine.take_kernel_timing()?;
    let profile = timing.profile;

    let (cam, fwd) = (median(cam_s), median(fwd_s));
    let ips = |s: f64| a.batch as f64 / s;
    if a.json {
        let kernels: serde_json::Map<String, serde_json::Value> = profile
            .iter()
            .map(|(k, (d, c))| {
                (
                    k.clone(),
                    serde_json::json!({"seconds": d.as_secs_f64(), "calls": c}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "arch": arch, "weights": source, "backend": engine.backend_name(),
                "batch": a.batch, "height": h, "width": w, "layer": layer, "iters": iters,
                "gradcam_images_per_s": ips(cam), "forward_images_per_s": ips(fwd),
                "gradcam_median_s": cam, "forward_median_s": fwd, "kernels": kernels,
                "kernel_timing": timing.source,
            })
        );
        return Ok(());
    }
    println!(
        "{arch} ({source}) | backend {} | input {}x{}x{h}x{w} | layer {layer}",
        engine.backend_name(),
        a.batch,
        engine.model().graph.in_channels
    );
    println!(
        "grad-cam: {:8.2} images/s  (median {cam:.3} s per batch of {}, {iters} runs)",
        ips(cam),
        a.batch
    );
    println!(
        "forward:  {:8.2} images/s  (median {fwd:.3} s per batch of {}, {iters} runs)",
        ips(fwd),
        a.batch
    );
    let total: f64 = profile.values().map(|(d, _)| d.as_secs_f64()).sum();
    println!("time per kernel, one Grad-CAM batch ({}):", timing.source);
    let mut rows: Vec<_> = profile.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    for (k, (d, c)) in rows {
        let s = d.as_secs_f64();
        println!(
            "  {k:28} {:9.2} ms  {c:4} calls  {:5.1}%",
            s * 1e3,
            100.0 * s / total
        );
    }
    Ok(())
}
