use crate::data::shapes;
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A model trained on shapes (safetensors state dict).
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    arch: Option<String>,
    /// Only `shapes` (the one data set with object boxes).
    #[arg(long, default_value = "shapes")]
    data: String,
    /// Held-out images to generate.
    #[arg(long, default_value_t = 1000, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 100000000))]
    count: u64,
    /// Seed of the held-out images; the default is a stream `train` never uses by default.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Target layer (default: the model's default layer, conv3 for seed-cnn).
    #[arg(long)]
    layer: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    if a.data != "shapes" {
        return Err(Error::Usage(format!(
            "the pointing game needs object boxes, which only --data shapes has (got '{}')",
            a.data
        )));
    }
    let model = crate::model::Model::load_with(
        &a.weights,
        &crate::model::LoadOptions {
            arch: a.arch.clone(),
            ..Default::default()
        },
    )?;
    let layer = a
        .layer
        .clone()
        .unwrap_or_else(|| model.default_layer.clone());
    crate::limits::check_memory(
        "the held-out images",
        a.count * (crate::data::IMAGE_LEN as u64 * 4),
    )
    .map_err(Error::Usage)?;
    let set = shapes::generate(a.count as usize, a.seed);
    let r = crate::metrics::pointing::evaluate(model, &set, Some(&layer))?;
    println!(
        "{}",
        serde_json::json!({
            "layer": layer,
            "images": r.images,
            "pointing_accuracy": r.accuracy(),
            "classification_accuracy": r.classification_accuracy(),
        })
    );
    Ok(())
}
