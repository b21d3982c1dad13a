use super::{BackendKind, ModelArgs};
use crate::engine::{Classes, Method, MethodOptions, Score};
use crate::error::{Error, Result};
use crate::explainer::{Explainer, Targets};
use crate::imaging::preprocess::{Filter, Resize, Transform};
use crate::pipeline::{self, Options};
use crate::runner::AnyEngine;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Image options that make no sense with --input-tensor.
const IMAGE_ONLY: [&str; 13] = [
    "resize",
    "interpolation",
    "crop",
    "size",
    "mean",
    "std",
    "image_weight",
    "overlay_original",
    "save_raw",
    "labels",
    "top_k",
    "max_image_pixels",
    "skip_existing",
];

#[derive(clap::Args)]
#[command(
    after_help = "Preprocessing defaults: the evaluation transform of the family's torchvision
  IMAGENET1K_V1 weights (`gradcam inspect` prints it for a checkpoint; README lists every family):
  most families --resize 256 --crop 224 --interpolation bilinear with ImageNet's mean
  0.485,0.456,0.406 and std 0.229,0.224,0.225; inception_v3 --resize 342 --crop 299;
  efficientnet_b0..b7, efficientnet_v2_l and regnet_y_128gf bicubic; efficientnet_b1..b7 and
  _v2 larger; seed-cnn --size 32x32 (no crop) --mean 0.5 --std 0.5.
Default --layer: the family's (`gradcam inspect` prints it), e.g. VGG the last ReLU of features,
  ResNet layer4, DenseNet/MobileNet/EfficientNet/ConvNeXt features, seed-cnn conv3.

Outputs per image, in --out, named after the input's path relative to its PATH argument:
  Grad-CAM: NAME.cam.png (JET heatmap), NAME.overlay.png, NAME.cam.npy (--save-raw);
  another CAM method M: NAME.M.cam.png, NAME.M.overlay.png, NAME.M.cam.npy;
  gradient methods and occlusion: NAME.M.png, NAME.M.npy (e.g. NAME.guided-backprop.png);
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
    /// Default: the family's (see below and `gradcam inspect`). Several (`--layer a,b` or
    /// repeated): each layer's CAM normalized and resized, then their mean, normalized again.
    #[arg(long, value_delimiter = ',')]
    layer: Vec<String>,
    /// Class to explain for every image (default: each image's top-1 prediction).
    #[arg(long = "class", conflicts_with = "top_k", allow_hyphen_values = true, value_parser = parse_class)]
    class: Option<usize>,
    /// Explain each image's K most probable classes (output names carry the class id).
    #[arg(long, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, u32::MAX as u64))]
    top_k: Option<u64>,
    /// Methods, comma-separated (`--method gradcam,gradcam++,scorecam`); one forward pass and
    /// the backward passes are shared. README lists what each computes.
    #[arg(long, value_parser = super::named::<Method>(), value_delimiter = ',', default_value = "gradcam")]
    method: Vec<Method>,
    /// The score explained: the class's logit (pytorch-grad-cam's ClassifierOutputTarget) or
    /// its softmax probability (ClassifierOutputSoftmaxTarget).
    #[arg(long, value_parser = super::named::<Score>(), default_value = "logit")]
    target: Score,
    /// The mean CAM over 6 augmented inputs (horizontal flip × brightness 0.9, 1, 1.1), as
    /// pytorch-grad-cam's aug_smooth (CAM methods only).
    #[arg(long)]
    aug_smooth: bool,
    /// The first principal component of the weighted activations instead of their sum, as
    /// pytorch-grad-cam's eigen_smooth.
    #[arg(long)]
    eigen_smooth: bool,
    /// Occlusion: side of the square patch, in input pixels.
    #[arg(long, default_value_t = 35, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, super::MAX_SIDE))]
    patch: u64,
    /// Occlusion: step between patch centres, in input pixels (1 is one pass per pixel).
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, super::MAX_SIDE))]
    stride: u64,
    /// Integrated gradients: points of the Gauss–Legendre rule on the path from 0.
    #[arg(long, default_value_t = 50, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 4096))]
    steps: u64,
    /// SmoothGrad: average saliency, guided-backprop and integrated-gradients over N noisy
    /// copies of the input.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 65536))]
    smooth: Option<u64>,
    /// SmoothGrad's noise: standard deviation in network-input (normalized) units.
    #[arg(long, default_value_t = 0.15, requires = "smooth", allow_hyphen_values = true, value_parser = parse_noise)]
    noise: f32,
    /// Seeds the random method, SmoothGrad's noise and the ROAD imputer's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Score every CAM with pytorch-grad-cam's faithfulness metrics (CamMultImageConfidenceChange,
    /// Drop/IncreaseInConfidence, ROAD MoRF/LeRF at --road-percentiles, their averages,
    /// ROADCombined): stdout has one JSON line per image, class and CAM method instead of one
    /// per image, and stderr a table of the means per method. The pictures are written as usual.
    #[arg(long)]
    metrics: bool,
    /// ROAD's percentiles (--metrics).
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,40,50,60,70,80,90", requires = "metrics", value_parser = |s: &str| super::parse_count(s, 0, 100).map(|v| v as u32))]
    road_percentiles: Vec<u32>,
    /// ROAD imputer's Gaussian noise, in network-input units (pytorch-grad-cam's 0.01).
    #[arg(long, default_value_t = 0.01, requires = "metrics", value_parser = parse_noise)]
    road_noise: f32,
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "auto")]
    backend: BackendKind,
    /// float32 .npy array [N, 3, H, W], already normalized, used as is (instead of images).
    /// Writes cams.npy [N, H, W] (guided methods: guided.npy [N, 3, H, W]) and logits.npy.
    #[arg(long, conflicts_with_all = IMAGE_ONLY)]
    input_tensor: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Resize the shorter side to N (torchvision Resize(N), Pillow's antialiased filter).
    #[arg(long, conflicts_with = "size", allow_hyphen_values = true, value_parser = parse_side)]
    resize: Option<usize>,
    /// Pillow's resampling filter for the resize (default: the family's weights', bilinear for
    /// most, bicubic for EfficientNet B0–B7 and V2-L).
    #[arg(long, value_parser = super::named::<Filter>())]
    interpolation: Option<Filter>,
    /// Center crop to N×N after resizing (torchvision CenterCrop(N)).
    #[arg(long, conflicts_with = "size", allow_hyphen_values = true, value_parser = parse_side)]
    crop: Option<usize>,
    /// Resize exactly to HxW (or N for N×N), no crop.
    #[arg(long, allow_hyphen_values = true, value_parser = super::parse_size)]
    size: Option<(usize, usize)>,
    /// Per-channel mean, "R,G,B" or one value for all (finite; may be negative).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_mean)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, "R,G,B" or one value for all (finite, positive).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_std)]
    std: Option<[f32; 3]>,
    /// Weight of the image in the overlay, as show_cam_on_image's image_weight.
    #[arg(long, default_value_t = 0.5, allow_hyphen_values = true, value_parser = parse_weight)]
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
    /// Images per forward/backward pass (1 to 65536); for scorecam, ablationcam, occlusion and
    /// integrated-gradients also the perturbed inputs (masks, ablations, patches, path points)
    /// per forward pass.
    #[arg(long, default_value_t = 8, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 65536))]
    batch_size: u64,
    /// Refuse images (and resized images and network inputs) with more pixels than this, as
    /// Pillow's MAX_IMAGE_PIXELS guards against decompression bombs.
    #[arg(long, default_value_t = crate::limits::DEFAULT_MAX_IMAGE_PIXELS, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1 << 40))]
    max_image_pixels: u64,
    /// Skip images whose outputs (every file these options write) are all in --out already,
    /// e.g. to resume an interrupted run. Outputs are written to a temporary name and renamed,
    /// so a file that exists is complete; existing files are assumed to come from a run with
    /// the same options.
    #[arg(long)]
    skip_existing: bool,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long, short)]
    quiet: bool,
}

fn parse_class(s: &str) -> std::result::Result<usize, String> {
    super::parse_count(s, 0, u32::MAX as u64)
        .map(|c| c as usize)
        .map_err(|e| format!("{e}; classes are numbered from 0"))
}

fn parse_side(s: &str) -> std::result::Result<usize, String> {
    super::parse_count(s, 1, super::MAX_SIDE).map(|n| n as usize)
}

fn parse_mean(s: &str) -> std::result::Result<[f32; 3], String> {
    let v = parse_triple(s)?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("'{s}': the mean must be finite"));
    }
    Ok(v)
}

fn parse_std(s: &str) -> std::result::Result<[f32; 3], String> {
    let v = parse_triple(s)?;
    if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
        return Err(format!(
            "'{s}': the standard deviation must be finite and positive"
        ));
    }
    Ok(v)
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

fn parse_noise(s: &str) -> std::result::Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("'{s}' is not a finite non-negative standard deviation"))
}

fn method_options(a: &Args) -> MethodOptions {
    MethodOptions {
        score: a.target,
        aug_smooth: a.aug_smooth,
        eigen_smooth: a.eigen_smooth,
        batch_size: a.batch_size as usize,
        patch: a.patch as usize,
        stride: a.stride as usize,
        fill: 0.0,
        steps: a.steps as usize,
        smooth: a.smooth.unwrap_or(0) as usize,
        noise: a.noise,
        seed: a.seed,
    }
}

/// Checks of options against each other, before anything is read.
fn check_options(a: &Args) -> Result<()> {
    if !a.layer.is_empty() && !a.method.iter().any(|m| m.uses_layer()) {
        return Err(Error::BadOption(format!(
            "--layer has no effect with --method {} (no CAM of a layer); leave it out",
            a.method
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    Ok(())
}

/// Normalization must give finite values for every 8-bit level: `(x - mean) / std` for x in
/// [0, 1] must not overflow f32 (e.g. `--std 1e-45`).
fn check_normalization(mean: [f32; 3], std: [f32; 3]) -> Result<()> {
    for c in 0..3 {
        for x in [0f32, 1.0] {
            let v = (x - mean[c]) / std[c];
            if !v.is_finite() {
                return Err(Error::BadOption(format!(
                    "--mean {:?} / --std {:?} (channel {c}) turns the pixel value {x} into {v}; \
                     normalized inputs must be finite",
                    mean[c], std[c]
                )));
            }
        }
    }
    Ok(())
}

/// The network input (crop, exact size) and the resized image must respect the pixel limit.
fn check_sizes(t: &Transform, max_pixels: u64) -> Result<()> {
    let over = |what: String, px: u128| {
        Error::BadOption(format!(
            "{what} would have {px} pixels, more than the limit of {max_pixels} \
             (--max-image-pixels)"
        ))
    };
    if let Some((h, w)) = t.input_size() {
        let px = h as u128 * w as u128;
        if px > max_pixels as u128 {
            return Err(over(format!("a {h}x{w} network input"), px));
        }
    }
    match t.resize {
        Resize::Exact(h, w) if h as u128 * w as u128 > max_pixels as u128 => Err(over(
            format!("an image resized to {h}x{w}"),
            h as u128 * w as u128,
        )),
        Resize::Shorter(n) if n as u128 * n as u128 > max_pixels as u128 => Err(over(
            format!("an image resized to a shorter side of {n}"),
            n as u128 * n as u128,
        )),
        _ => Ok(()),
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    check_options(&a)?;
    crate::interrupt::install();
    let model = a.model.load()?;
    let classes = match (a.class, a.top_k) {
        (Some(c), _) => Classes::Fixed(c),
        (None, Some(k)) if k as usize > model.num_classes => {
            return Err(Error::Usage(format!(
                "--top-k {k} is more than the model's {} classes",
                model.num_classes
            )))
        }
        (None, Some(k)) => Classes::TopK(k as usize),
        (None, None) => Classes::TopK(1),
    };
    if let Some(x) = &a.input_tensor {
        let x = x.clone();
        return run_tensor(a, model, &x, classes);
    }
    // Defaults: the model's (`inspect` shows it); the flags replace its parts.
    let default = model.preprocessing();
    let transform = Transform {
        resize: match (a.size, a.resize) {
            (Some((h, w)), _) => Resize::Exact(h, w),
            (None, Some(n)) => Resize::Shorter(n),
            // seed-cnn's exact 32×32 makes no sense before a crop: torchvision's 256 then
            (None, None) if a.crop.is_some() && model.preprocess.is_none() => Resize::Shorter(256),
            (None, None) => default.resize,
        },
        filter: a.interpolation.unwrap_or(default.filter),
        crop: match (a.size, a.crop) {
            (Some(_), _) => None,
            (None, Some(c)) => Some((c, c)),
            (None, None) => default.crop,
        },
        mean: a.mean.unwrap_or(default.mean),
        std: a.std.unwrap_or(default.std),
    };
    check_normalization(transform.mean, transform.std)?;
    check_sizes(&transform, a.max_image_pixels)?;
    let labels = crate::imaging::labels::load(a.labels.as_deref(), &model.arch, model.num_classes)?;
    let engine = AnyEngine::new(a.backend, model)?;
    let method_options = method_options(&a);
    let opts = Options {
        paths: a.paths,
        out: a.out,
        transform,
        method_options,
        layers: a.layer,
        classes,
        methods: a.method,
        image_weight: a.image_weight,
        overlay_original: a.overlay_original,
        save_raw: a.save_raw,
        labels,
        batch_size: a.batch_size as usize,
        progress: !a.quiet,
        max_image_pixels: a.max_image_pixels,
        skip_existing: a.skip_existing,
        metrics: a.metrics.then(|| crate::metrics::RoadConfig {
            percentiles: a.road_percentiles.clone(),
            noise: a.road_noise,
        }),
    };
    let summary = pipeline::run(&engine, &opts)?;
    Ok(if summary.skipped > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The file of a method's results with --input-tensor: cams.npy for Grad-CAM and guided.npy
/// for guided backpropagation (their names before there were other methods), M.npy for any
/// other method M.
fn tensor_file(m: Method) -> String {
    match m {
        Method::Gradcam => "cams.npy".into(),
        Method::GuidedBackprop => "guided.npy".into(),
        m => format!("{}.npy", m.name()),
    }
}

/// --input-tensor: one batch through the library's explainer, which withholds (NaN rows) the
/// images whose input, logits or maps are not finite, so that indices still match the input.
fn run_tensor(
    a: Args,
    model: crate::model::Model,
    path: &std::path::Path,
    classes: Classes,
) -> Result<ExitCode> {
    let x = crate::npy::read_f32(path)?;
    let targets = match classes {
        Classes::Fixed(c) => Targets::Class(c),
        // --top-k is refused with --input-tensor: one set of results per image.
        _ => Targets::Top,
    };
    let explainer = Explainer::builder(model)
        .backend(a.backend)
        .methods(&a.method)
        .layers(a.layer.iter().cloned())
        .options(method_options(&a))
        .build()?;
    let n = x.shape.first().copied().unwrap_or(0);
    let e = explainer.explain_owned(x, targets).map_err(|e| match e {
        Error::InputShape { .. } => Error::Input {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        e => e,
    })?;
    if let Some(sig) = crate::interrupt::requested() {
        eprintln!(
            "interrupted by {} before the results were written",
            crate::interrupt::name(sig)
        );
        return Err(Error::Interrupted(sig));
    }
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Write {
        path: a.out.clone(),
        source,
    })?;
    for map in &e.maps {
        crate::npy::write_f32(&a.out.join(tensor_file(map.method)), &map.data)?;
    }
    crate::npy::write_f32(&a.out.join("logits.npy"), &e.logits)?;
    let skipped = &e.failures;
    let mut stdout = std::io::stdout().lock();
    for (i, (c, s)) in e.classes.iter().zip(&e.probabilities).enumerate() {
        match &skipped[i] {
            Some(reason) => eprintln!("skipped {} image {i}: {reason}", path.display()),
            None => {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::json!({ "index": i, "class": c, "score": s })
                );
            }
        }
    }
    let bad = skipped.iter().filter(|s| s.is_some()).count();
    if bad > 0 {
        eprintln!(
            "{} of {n} images explained, {bad} skipped (their rows of the results are NaN); results in {}",
            n - bad,
            a.out.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
