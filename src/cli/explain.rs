use super::{BackendKind, Method, ModelArgs};
use crate::engine::{Classes, Outputs};
use crate::error::{Error, Result};
use crate::image::preprocess::{Resize, Transform};
use crate::pipeline::{self, Options};
use crate::runner::AnyEngine;
use crate::tensor::Tensor;
use std::path::PathBuf;
use std::process::ExitCode;

/// Image options that make no sense with --input-tensor.
const IMAGE_ONLY: [&str; 11] = [
    "resize",
    "crop",
    "size",
    "mean",
    "std",
    "image_weight",
    "overlay_original",
    "save_raw",
    "labels",
    "top_k",
    "batch_size",
];

#[derive(clap::Args)]
#[command(
    after_help = "Preprocessing defaults: the evaluation transform of the family's torchvision
  IMAGENET1K_V1 weights (`gradcam inspect` prints it for a checkpoint; README lists every family):
  most families --resize 256 --crop 224 with ImageNet's mean 0.485,0.456,0.406 and std
  0.229,0.224,0.225; inception_v3 --resize 342 --crop 299; efficientnet_b1..b7 and _v2 larger;
  seed-cnn --size 32x32 (no crop) --mean 0.5 --std 0.5.
Default --layer: the family's (`gradcam inspect` prints it), e.g. VGG the last ReLU of features,
  ResNet layer4, DenseNet/MobileNet/EfficientNet/ConvNeXt features, seed-cnn conv3.

Outputs per image, in --out, named after the input's path relative to its PATH argument:
  NAME.cam.png (JET heatmap), NAME.overlay.png, NAME.cam.npy (--save-raw),
  NAME.guided-backprop.png / NAME.guided-gradcam.png (guided methods);
  with --top-k, NAME.c<class>.cam.png etc. One JSON line per image and class on stdout.
Unreadable images are reported on stderr and skipped; the exit status is then 1."
)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (PNG, JPEG, WebP, BMP, TIFF) or directories (walked recursively, sorted).
    #[arg(
        required_unless_present = "input_tensor",
        conflicts_with = "input_tensor"
    )]
    paths: Vec<PathBuf>,
    /// Target layer as a PyTorch module path (e.g. features.35, layer4, layer4.1.conv2, conv3).
    /// Default: the family's (see below and `gradcam inspect`).
    #[arg(long)]
    layer: Option<String>,
    /// Class to explain for every image (default: each image's top-1 prediction).
    #[arg(long = "class", conflicts_with = "top_k")]
    class: Option<usize>,
    /// Explain each image's K most probable classes (output names carry the class id).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    top_k: Option<u64>,
    #[arg(long, value_enum, default_value = "gradcam")]
    method: Method,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// float32 .npy array [N, 3, H, W], already normalized, used as is (instead of images).
    /// Writes cams.npy [N, H, W] (guided methods: guided.npy [N, 3, H, W]) and logits.npy.
    #[arg(long, conflicts_with_all = IMAGE_ONLY)]
    input_tensor: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Resize the shorter side to N (torchvision Resize(N), Pillow's antialiased bilinear).
    #[arg(long, conflicts_with = "size")]
    resize: Option<usize>,
    /// Center crop to N×N after resizing (torchvision CenterCrop(N)).
    #[arg(long, conflicts_with = "size")]
    crop: Option<usize>,
    /// Resize exactly to HxW (or N for N×N), no crop.
    #[arg(long, value_parser = super::parse_size)]
    size: Option<(usize, usize)>,
    /// Per-channel mean, "R,G,B" or one value for all.
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, "R,G,B" or one value for all.
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
    /// Weight of the image in the overlay, as show_cam_on_image's image_weight.
    #[arg(long, default_value_t = 0.5, value_parser = parse_weight)]
    image_weight: f64,
    /// Draw the overlay on the original image (CAM mapped back through crop and resize).
    #[arg(long)]
    overlay_original: bool,
    /// Also write NAME.cam.npy (float32 H×W; guided methods: NAME.guided-*.npy, 3×H×W).
    #[arg(long)]
    save_raw: bool,
    /// Class names, one per line (default for 10-class seed-cnn models: CIFAR-10's).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Images per forward/backward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long, short)]
    quiet: bool,
}

fn parse_triple(s: &str) -> std::result::Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("'{s}' is not a number or three comma-separated numbers"))?;
    match v[..] {
        [a] => Ok([a; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(format!("'{s}': give one value or three (R,G,B)")),
    }
}

fn parse_weight(s: &str) -> std::result::Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|w| (0.0..=1.0).contains(w))
        .ok_or_else(|| format!("'{s}' is not a weight between 0 and 1"))
}

fn outputs(method: Method) -> Outputs {
    match method {
        Method::Gradcam => Outputs::CAM,
        Method::GuidedBackprop => Outputs {
            cam: false,
            guided: true,
        },
        Method::GuidedGradcam => Outputs {
            cam: true,
            guided: true,
        },
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = a.model.load()?;
    let classes = match (a.class, a.top_k) {
        (Some(c), _) => Classes::Fixed(c),
        (None, Some(k)) => Classes::TopK(k as usize),
        (None, None) => Classes::TopK(1),
    };
    if let Some(x) = &a.input_tensor {
        let x = x.clone();
        return run_tensor(a, model, &x, classes).map(|()| ExitCode::SUCCESS);
    }
    if a.std.is_some_and(|s| s.contains(&0.0)) {
        return Err(Error::Usage("--std must not contain 0".into()));
    }
    // Defaults: the evaluation transform of the family's torchvision weights (`inspect`
    // shows it); seed-cnn, which has none, the article's 32×32 with mean and std 0.5.
    let pre = model.preprocess;
    let transform = Transform {
        resize: match (a.size, a.resize, pre) {
            (Some((h, w)), _, _) => Resize::Exact(h, w),
            (None, Some(n), _) => Resize::Shorter(n),
            (None, None, Some(p)) => Resize::Shorter(p.resize),
            (None, None, None) if a.crop.is_none() => Resize::Exact(32, 32),
            (None, None, None) => Resize::Shorter(256),
        },
        crop: match (a.size, a.crop, pre) {
            (Some(_), _, _) => None,
            (None, Some(c), _) => Some((c, c)),
            (None, None, Some(p)) => Some((p.crop, p.crop)),
            (None, None, None) => None,
        },
        mean: a.mean.unwrap_or(pre.map_or([0.5; 3], |p| p.mean)),
        std: a.std.unwrap_or(pre.map_or([0.5; 3], |p| p.std)),
    };
    if [a.resize, a.crop].contains(&Some(0)) {
        return Err(Error::Usage(
            "--resize and --crop must be at least 1".into(),
        ));
    }
    let labels = crate::image::labels::load(a.labels.as_deref(), &model.arch, model.num_classes)?;
    let engine = AnyEngine::new(a.backend, model)?;
    let opts = Options {
        paths: a.paths,
        out: a.out,
        transform,
        layer: a.layer,
        classes,
        outputs: outputs(a.method),
        image_weight: a.image_weight,
        overlay_original: a.overlay_original,
        save_raw: a.save_raw,
        labels,
        batch_size: a.batch_size as usize,
        progress: !a.quiet,
    };
    let summary = pipeline::run(&engine, &opts)?;
    Ok(if summary.skipped > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn run_tensor(
    a: Args,
    model: crate::model::Model,
    path: &std::path::Path,
    classes: Classes,
) -> Result<()> {
    let x = crate::npy::read_f32(path)?;
    if x.shape.len() != 4 {
        return Err(Error::Input {
            path: path.to_owned(),
            reason: format!("shape {:?}, expected [N, C, H, W]", x.shape),
        });
    }
    let engine = AnyEngine::new(a.backend, model)?;
    let mut out = engine.attribute(&x, a.layer.as_deref(), classes, outputs(a.method))?;
    let t = out.targets.remove(0);
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Write {
        path: a.out.clone(),
        source,
    })?;
    if let Some(cams) = &t.cams {
        crate::npy::write_f32(&a.out.join("cams.npy"), cams)?;
    }
    if let Some(g) = &t.guided {
        let g = match &t.cams {
            Some(cams) => {
                let plane = cams.shape[1] * cams.shape[2];
                let data = g
                    .data
                    .chunks(g.data.len() / g.shape[0])
                    .zip(cams.data.chunks(plane))
                    .flat_map(|(g, c)| pipeline::guided_times_cam(g, c))
                    .collect();
                Tensor::new(g.shape.clone(), data)
            }
            None => g.clone(),
        };
        crate::npy::write_f32(&a.out.join("guided.npy"), &g)?;
    }
    crate::npy::write_f32(&a.out.join("logits.npy"), &out.logits)?;
    for (i, (c, s)) in t.classes.iter().zip(&t.scores).enumerate() {
        println!(
            "{}",
            serde_json::json!({ "index": i, "class": c, "score": s })
        );
    }
    Ok(())
}
