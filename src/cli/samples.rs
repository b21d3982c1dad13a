use crate::data::{shapes, BBox, SIDE};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Images to write.
    #[arg(long, default_value_t = 6, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 1000000))]
    count: u64,
    /// Seed of the shapes stream (default: the eval-pointing default, held out from training).
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Upscaling factor of the PNGs (nearest neighbour).
    #[arg(long, default_value_t = 4, allow_hyphen_values = true, value_parser = |s: &str| super::parse_count(s, 1, 64))]
    scale: u64,
    /// Output directory: sample_K.png, inputs.npy [N, 3, 32, 32] (normalized, for
    /// `gradcam explain --input-tensor`) and samples.json (labels and boxes).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    crate::limits::check_memory("the samples", a.count * (crate::data::IMAGE_LEN as u64 * 4))
        .map_err(Error::Usage)?;
    let set = shapes::generate(a.count as usize, a.seed);
    std::fs::create_dir_all(&a.out).map_err(|source| Error::Write {
        path: a.out.clone(),
        source,
    })?;
    let boxes = set.boxes.as_ref().expect("shapes have boxes");
    let mut meta = vec![];
    for (i, &BBox { x0, y0, x1, y1 }) in boxes.iter().enumerate() {
        let path = a.out.join(format!("sample_{i}.png"));
        write_png(&path, set.image(i), a.scale as usize)?;
        meta.push(serde_json::json!({
            "file": format!("sample_{i}.png"),
            "label": set.labels[i],
            "class": set.class_names[set.labels[i]],
            "box": [x0, y0, x1, y1],
        }));
    }
    let x = Tensor::new(vec![set.len(), 3, SIDE, SIDE], set.images.clone());
    crate::npy::write_f32(&a.out.join("inputs.npy"), &x)?;
    let json = serde_json::to_string_pretty(&meta).expect("json") + "\n";
    crate::npy::write_atomic(&a.out.join("samples.json"), json.as_bytes())?;
    println!("wrote {} samples to {}", set.len(), a.out.display());
    Ok(())
}

/// A normalized [3, 32, 32] image as an RGB PNG, each pixel repeated scale×scale times.
fn write_png(path: &Path, img: &[f32], scale: usize) -> Result<()> {
    let side = SIDE * scale;
    let plane = SIDE * SIDE;
    let mut rgb = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let at = (y / scale) * SIDE + x / scale;
            for c in 0..3 {
                let v = img[c * plane + at] * 0.5 + 0.5;
                rgb.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    let img = image::RgbImage::from_raw(side as u32, side as u32, rgb).expect("side² RGB pixels");
    crate::imaging::write_png(path, &img)
}
