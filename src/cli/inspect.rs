use super::{parse_size, ModelArgs};
use crate::error::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Input size HxW for the output shapes (default: 32x32 for seed-cnn, 224x224 otherwise).
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
}

pub fn run(a: Args) -> Result<()> {
    let model = a.model.load()?;
    let (h, w) = a.size.unwrap_or(model.input_size());
    let layers = model.layers(Some((h, w)))?;
    println!("architecture: {} (family {})", model.arch, model.family);
    match &model.embedded {
        Some(producer) => println!("graph: embedded in the weights file (written by {producer})"),
        None => println!(
            "graph: the built-in {} builder, from the tensor names and shapes",
            model.family
        ),
    }
    println!("classes: {}", model.num_classes);
    println!("input: [N, {}, {h}, {w}]", model.graph.in_channels);
    match model.preprocess {
        Some(p) => println!(
            "preprocessing: resize {} ({}), center crop {}, mean {:?}, std {:?} (as {})",
            p.resize,
            p.filter.name(),
            p.crop,
            p.mean,
            p.std,
            p.weights
        ),
        None => println!("preprocessing: resize to 32x32, mean 0.5, std 0.5 (the article's)"),
    }
    if let Some(on) = model.transform_input {
        println!(
            "transform_input: {} (torchvision's re-normalization before the first conv{})",
            if on { "on" } else { "off" },
            if on {
                "; --no-transform-input turns it off"
            } else {
                ""
            }
        );
    }
    println!("default layer: {}", model.default_layer);
    let targets = layers.iter().filter(|l| l.is_spatial()).count();
    println!(
        "layers ({} modules; the {targets} with a [N, C, H, W] output are Grad-CAM targets):",
        layers.len()
    );
    let width = layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in &layers {
        let dims: Vec<String> = l
            .shape
            .iter()
            .enumerate()
            .map(|(i, d)| if i == 0 { "N".into() } else { d.to_string() })
            .collect();
        println!("  {:width$}  {:18}  [{}]", l.name, l.kind, dims.join(", "));
    }
    Ok(())
}
