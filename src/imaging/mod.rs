//! Images in, pictures out: discovering and decoding image files, torchvision's evaluation
//! preprocessing, and the heatmaps, overlays and gradient images written for each input.

pub mod colormap;
pub mod inputs;
pub mod labels;
pub mod load;
pub mod overlay;
pub mod preprocess;

use crate::error::Result;
use image::RgbImage;
use std::path::Path;

/// Encodes `img` as PNG and writes it to a temporary name, then renames it into place.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| crate::Error::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::npy::write_atomic(path, &bytes)
}
