use super::{BackendKind, Method, ModelArgs};
use crate::error::{Error, Result};
use crate::runner::AnyEngine;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Target layer as a PyTorch module path (e.g. features.35, layer4, layer4.1.conv2, conv3).
    /// Default: VGG the last ReLU of features, ResNet layer4, seed-cnn conv3.
    #[arg(long)]
    layer: Option<String>,
    /// Class to explain for every image (default: each image's top-1 prediction).
    #[arg(long = "class")]
    class: Option<usize>,
    #[arg(long, value_enum, default_value = "gradcam")]
    method: Method,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// float32 .npy array [N, 3, H, W], already normalized, used as is.
    #[arg(long)]
    input_tensor: PathBuf,
    /// Output directory: cams.npy [N, H, W] and logits.npy [N, classes].
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let Method::Gradcam = a.method;
    let model = a.model.load()?;
    let x = crate::npy::read_f32(&a.input_tensor)?;
    if x.shape.len() != 4 {
        return Err(Error::Input {
            path: a.input_tensor.clone(),
            reason: format!("shape {:?}, expected [N, C, H, W]", x.shape),
        });
    }
    let engine = AnyEngine::new(a.backend, model)?;
    let out = engine.explain(&x, a.layer.as_deref(), a.class)?;
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Write {
        path: a.out.clone(),
        source,
    })?;
    crate::npy::write_f32(&a.out.join("cams.npy"), &out.cams)?;
    crate::npy::write_f32(&a.out.join("logits.npy"), &out.logits)?;
    for (i, (c, s)) in out.classes.iter().zip(&out.scores).enumerate() {
        println!(
            "{}",
            serde_json::json!({ "index": i, "class": c, "score": s })
        );
    }
    Ok(())
}
