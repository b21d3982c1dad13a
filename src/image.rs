//! Images in and pictures out: decoding, the model's preprocessing, the JET heatmap and
//! pytorch-grad-cam's overlay.

use crate::error::{Error, Result};
use crate::imaging::{load, overlay as draw};
use std::path::Path;

pub use crate::imaging::preprocess::{Filter, Geometry, Prepared, Resize, Transform};
pub use ::image::RgbImage;

/// Reads and decodes an image file (PNG, JPEG, WebP, BMP, TIFF; the format is read from the
/// content) to 8-bit RGB as Pillow's `convert("RGB")` does, within the default pixel limit.
pub fn decode(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    load::decode(path).map_err(|reason| Error::Input {
        path: path.to_owned(),
        reason,
    })
}

/// [`decode`] for an encoded image in memory; `name` stands for it in the error.
pub fn decode_bytes(bytes: &[u8], name: &str) -> Result<RgbImage> {
    load::decode_bytes(bytes).map_err(|reason| Error::Input {
        path: name.into(),
        reason,
    })
}

/// Decodes the image file `path` and preprocesses it with `transform`, as `gradcam explain`
/// does each image (the same tensor, bit for bit), within the default pixel limit (the
/// decoded image, the resized image and the network input each).
pub fn prepare(path: impl AsRef<Path>, transform: &Transform) -> Result<Prepared> {
    let path = path.as_ref();
    let img = decode(path)?;
    prepare_decoded(&img, transform, path)
}

/// [`prepare`] for an encoded image in memory; `name` stands for it in the error.
pub fn prepare_bytes(bytes: &[u8], name: &str, transform: &Transform) -> Result<Prepared> {
    let img = decode_bytes(bytes, name)?;
    prepare_decoded(&img, transform, Path::new(name))
}

fn prepare_decoded(img: &RgbImage, transform: &Transform, path: &Path) -> Result<Prepared> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    transform
        .check(h, w, crate::limits::DEFAULT_MAX_IMAGE_PIXELS)
        .map_err(|reason| Error::Input {
            path: path.to_owned(),
            reason,
        })?;
    Ok(transform.apply(img))
}

/// A CAM [h, w] in [0, 1] as OpenCV's JET heatmap, as pytorch-grad-cam colours it.
pub fn heatmap(cam: &[f32], h: usize, w: usize) -> Result<RgbImage> {
    check_map(cam, h, w)?;
    Ok(draw::heatmap(cam, h, w))
}

/// pytorch-grad-cam's `show_cam_on_image(img / 255, cam, use_rgb=True, image_weight)`: the
/// JET heatmap of `cam` (the image's size, in [0, 1]) blended onto `img`.
pub fn overlay(img: &RgbImage, cam: &[f32], image_weight: f64) -> Result<RgbImage> {
    check_map(cam, img.height() as usize, img.width() as usize)?;
    if !(0.0..=1.0).contains(&image_weight) {
        return Err(Error::BadOption(format!(
            "image_weight {image_weight} is not between 0 and 1"
        )));
    }
    Ok(draw::show_cam_on_image(img, cam, image_weight))
}

fn check_map(cam: &[f32], h: usize, w: usize) -> Result<()> {
    if cam.len() != h * w {
        return Err(Error::InputShape {
            input: vec![cam.len()],
            reason: format!("a map of {} values cannot be drawn at {h}x{w}", cam.len()),
        });
    }
    if let Some(v) = cam.iter().find(|v| !v.is_finite()) {
        return Err(Error::BadOption(format!(
            "the map holds a non-finite value ({v})"
        )));
    }
    Ok(())
}
