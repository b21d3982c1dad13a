//! Decoding image files to 8-bit RGB, as torchvision pipelines do with
//! `PIL.Image.open(p).convert("RGB")`: grayscale is replicated to three channels, alpha is
//! dropped (not composited), 16-bit samples are scaled to 8 bits.

use image::RgbImage;
use std::io::Cursor;
use std::path::Path;

/// File extensions walked in directories. Files named explicitly are decoded whatever their
/// extension (the format is guessed from the content).
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"];

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads and decodes `path`. The error is one line, without the path (the caller adds it).
pub fn decode(path: &Path) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode_bytes(&bytes)
}

pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not a supported image (PNG, JPEG, WebP, BMP, TIFF)".into());
    }
    let img = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("image has zero width or height".into());
    }
    Ok(img.to_rgb8())
}
