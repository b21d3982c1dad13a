//! Request data to network inputs, checked: what a request can get wrong is found here,
//! before it joins a batch, so that it fails alone.

use super::error::ApiError;
use crate::image::{RgbImage, Transform};
use crate::imaging::load;
use crate::tensor::Tensor;

/// Encoded images whose headers were read: the pixel limits hold, and every one preprocesses
/// to the same input size.
pub struct Encoded {
    pub images: Vec<load::Encoded>,
    /// The network input's (height, width).
    pub size: (usize, usize),
}

/// Checks encoded images' headers (format, size, the pixel limits, a complete JPEG) without
/// decoding their pixels: what a request gets wrong here is known before it is queued.
pub fn check_encoded(
    encoded: &[&[u8]],
    transform: &Transform,
    max_pixels: u64,
) -> Result<Encoded, ApiError> {
    if encoded.is_empty() {
        return Err(ApiError::bad("no images in the request"));
    }
    let mut images = Vec::with_capacity(encoded.len());
    let mut size = None;
    for (i, bytes) in encoded.iter().enumerate() {
        let at = |reason: String| format!("image {i}: {reason}");
        // The pixel limit is checked here, so that its error is a 413.
        let enc = load::check(
            bytes.to_vec(),
            &load::Limits {
                max_pixels: u64::MAX,
            },
        )
        .map_err(|r| ApiError::bad(at(r)))?;
        let (w, h) = (enc.width as u64, enc.height as u64);
        if w * h > max_pixels {
            return Err(ApiError::too_large(at(format!(
                "{w}x{h} is {} pixels, more than the limit of {max_pixels} (--max-image-pixels)",
                w * h
            ))));
        }
        transform
            .check(h as usize, w as usize, max_pixels)
            .map_err(|r| {
                ApiError::too_large(at(r.replace("`max_image_pixels`", "--max-image-pixels")))
            })?;
        let input = transform
            .crop
            .unwrap_or_else(|| transform.resized_size(h as usize, w as usize));
        if *size.get_or_insert(input) != input {
            return Err(ApiError::bad(at(format!(
                "preprocessed to {input:?}, unlike the images before it ({:?}); send images of \
                 one size, or one per request",
                size.unwrap_or_default()
            ))));
        }
        images.push(enc);
    }
    Ok(Encoded {
        images,
        size: size.unwrap_or_default(),
    })
}

/// Decodes and preprocesses checked images as `gradcam explain` does each file (the same
/// tensor, bit for bit): the network input [3·H·W per image] and the cropped pictures the
/// overlays are drawn on.
pub fn decode(
    encoded: &Encoded,
    transform: &Transform,
) -> Result<(Vec<f32>, Vec<RgbImage>), ApiError> {
    let mut x = Vec::new();
    let mut rgb = Vec::with_capacity(encoded.images.len());
    for (i, enc) in encoded.images.iter().enumerate() {
        let img = enc
            .decode()
            .map_err(|r| ApiError::bad(format!("image {i}: {r}")))?;
        let p = transform.apply(&img);
        x.extend_from_slice(&p.tensor);
        rgb.push(p.rgb);
    }
    Ok((x, rgb))
}

/// The shape of a tensor input, checked before its data is read: [N, C, H, W] with the
/// model's channels, N within the batch limit and H·W within the pixel limit (413 for the
/// limits, so a huge declared size is refused before anything is allocated).
pub fn tensor_shape(
    shape: &[i64],
    in_channels: usize,
    max_batch: usize,
    max_pixels: u64,
) -> Result<[usize; 4], ApiError> {
    let &[n, c, h, w] = shape else {
        return Err(ApiError::bad(format!(
            "the input tensor's shape {shape:?} is not [N, C, H, W]"
        )));
    };
    if [n, c, h, w].iter().any(|&d| d < 1) {
        return Err(ApiError::bad(format!(
            "the input tensor's shape {shape:?} has a dimension below 1"
        )));
    }
    let [n, c, h, w] = [n, c, h, w].map(|d| d as u64);
    if c != in_channels as u64 {
        return Err(ApiError::bad(format!(
            "the input tensor has {c} channels; the model takes {in_channels}"
        )));
    }
    if n > max_batch as u64 {
        return Err(ApiError::too_large(format!(
            "{n} images in one request; the limit is {max_batch} (--max-batch)"
        )));
    }
    if h.saturating_mul(w) > max_pixels {
        return Err(ApiError::too_large(format!(
            "the input tensor is {w}x{h}, more than the limit of {max_pixels} pixels \
             (--max-image-pixels)"
        )));
    }
    Ok([n, c, h, w].map(|d| d as usize))
}

/// A tensor input with its data: the data must fill the shape exactly and be finite.
pub fn tensor(shape: [usize; 4], data: Vec<f32>) -> Result<Tensor, ApiError> {
    let len: usize = shape.iter().product();
    if data.len() != len {
        return Err(ApiError::bad(format!(
            "the input tensor's shape {shape:?} holds {len} values; its data has {}",
            data.len()
        )));
    }
    if let Some(k) = data.iter().position(|v| !v.is_finite()) {
        let [_, c, h, w] = shape;
        let at = [k / (c * h * w), k / (h * w) % c, k / w % h, k % w];
        return Err(ApiError::bad(format!(
            "image {}: non-finite input value {} at {at:?}",
            at[0], data[k]
        )));
    }
    Ok(Tensor::new(shape.to_vec(), data))
}

/// Target classes as the request gives them: one for all `n` images, or one each.
pub fn classes(given: &[i64], n: usize, num_classes: usize) -> Result<Vec<usize>, ApiError> {
    let all = match given.len() {
        1 => vec![given[0]; n],
        len if len == n => given.to_vec(),
        len => {
            return Err(ApiError::bad(format!(
                "{len} target classes for {n} images (give one, or one per image)"
            )))
        }
    };
    all.into_iter()
        .map(|c| {
            usize::try_from(c)
                .ok()
                .filter(|&c| c < num_classes)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "class {c} is out of range: the model has {num_classes} classes"
                    ))
                })
        })
        .collect()
}

/// pytorch-grad-cam's overlay of `cam` on the preprocessed image, as PNG bytes.
pub fn overlay_png(rgb: &RgbImage, cam: &[f32]) -> Result<Vec<u8>, ApiError> {
    let picture =
        crate::image::overlay(rgb, cam, 0.5).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut png = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut png, ::image::ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("cannot encode the overlay: {e}")))?;
    Ok(png.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_shape_is_checked_before_its_data() {
        let huge = tensor_shape(&[1, 3, 1 << 30, 1 << 30], 3, 8, 1 << 24).unwrap_err();
        assert_eq!(huge.status, 413);
        assert!(huge.message.contains("--max-image-pixels"), "{huge:?}");
        assert_eq!(
            tensor_shape(&[9, 3, 4, 4], 3, 8, 100).unwrap_err().status,
            413
        );
        assert_eq!(
            tensor_shape(&[1, 1, 4, 4], 3, 8, 100).unwrap_err().status,
            400
        );
        assert_eq!(
            tensor_shape(&[1, 3, 0, 4], 3, 8, 100).unwrap_err().status,
            400
        );
        assert_eq!(tensor_shape(&[3, 4, 4], 3, 8, 100).unwrap_err().status, 400);
        assert_eq!(
            tensor_shape(&[2, 3, 4, 5], 3, 8, 100).unwrap(),
            [2, 3, 4, 5]
        );
    }

    #[test]
    fn tensor_data_must_fill_the_shape_and_be_finite() {
        assert!(tensor([1, 3, 2, 2], vec![0.0; 11]).is_err());
        let mut data = vec![0.0; 24];
        data[23] = f32::NAN;
        let e = tensor([2, 3, 2, 2], data).unwrap_err();
        assert!(
            e.message.contains("image 1") && e.message.contains("[1, 2, 1, 1]"),
            "{e:?}"
        );
    }

    #[test]
    fn classes_are_one_or_one_per_image_and_in_range() {
        assert_eq!(classes(&[2], 3, 5).unwrap(), vec![2, 2, 2]);
        assert_eq!(classes(&[0, 4], 2, 5).unwrap(), vec![0, 4]);
        assert!(classes(&[5], 1, 5).is_err());
        assert!(classes(&[-1], 1, 5).is_err());
        assert!(classes(&[1, 2], 3, 5).is_err());
    }
}
