//! torchvision's evaluation transform, `Resize` + `CenterCrop` + `ToTensor` + `Normalize`, on
//! 8-bit RGB images.
//!
//! torchvision resizes PIL images with Pillow's bilinear (most weights) or bicubic (EfficientNet
//! B0–B7, V2-L, RegNetY-128GF) filter, which antialiases when downscaling (the filter is
//! stretched by the scale factor). `resize` re-implements Pillow's algorithm
//! (libImaging/Resample.c) step by step: the same filter, support and window bounds,
//! coefficients normalized in f64 and rounded to 22-bit fixed point, two separable passes, each
//! rounded and clipped to 8 bits. It reproduces Pillow's output exactly for torchvision's usual
//! `Resize(N)` (tests/images.rs checks it against fixtures made by PIL and torchvision), so the
//! network sees the same numbers as in a PyTorch pipeline; see `resize` for the one case where
//! it may differ by one level.

use image::RgbImage;
use std::borrow::Cow;

/// How the image is resized before the optional center crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side to N, the other side in proportion (torchvision `Resize(N)`).
    Shorter(usize),
    /// Exactly H×W (torchvision `Resize((H, W))`).
    Exact(usize, usize),
}

/// Pillow's resampling filters that torchvision's weights use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    /// Half-width of the filter at scale 1 (Resample.c's `support`).
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// Resample.c's `bilinear_filter` / `bicubic_filter` (Keys' cubic with a = -0.5).
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Filter::Bilinear => "bilinear",
            Filter::Bicubic => "bicubic",
        }
    }
}

impl crate::named::Named for Filter {
    const ALL: &'static [Self] = &[Filter::Bilinear, Filter::Bicubic];
    const WHAT: &'static str = "interpolation";

    fn name(self) -> &'static str {
        Filter::name(self)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    pub resize: Resize,
    pub filter: Filter,
    /// Center crop H×W after resizing (torchvision `CenterCrop`).
    pub crop: Option<(usize, usize)>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Where the network's input came from in the original image, to map a CAM back onto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Original (height, width).
    pub original: (usize, usize),
    /// After resizing.
    pub resized: (usize, usize),
    /// Top-left corner of the crop in the resized image (negative: zero padding).
    pub offset: (isize, isize),
    /// The network input's (height, width).
    pub input: (usize, usize),
}

/// One preprocessed image.
pub struct Prepared {
    /// The resized and cropped image, what the overlay is drawn on.
    pub rgb: RgbImage,
    /// [3, H, W], normalized.
    pub tensor: Vec<f32>,
    /// Where the input came from in the original image.
    pub geometry: Geometry,
}

impl Prepared {
    /// The network input as a batch of one, [1, 3, H, W].
    pub fn batch(&self) -> crate::tensor::Tensor {
        let (h, w) = self.geometry.input;
        crate::tensor::Tensor::new(vec![1, 3, h, w], self.tensor.clone())
    }
}

impl Transform {
    /// Preprocesses `images` into one batch [N, 3, H, W]; they must give inputs of one size
    /// (always so with a crop or an exact size).
    pub fn batch(&self, images: &[RgbImage]) -> crate::Result<crate::tensor::Tensor> {
        let mut data = Vec::new();
        let mut size = None;
        for (i, img) in images.iter().enumerate() {
            let (h, w) = (img.height() as usize, img.width() as usize);
            self.check(h, w, crate::limits::DEFAULT_MAX_IMAGE_PIXELS)
                .map_err(|reason| crate::Error::Input {
                    path: format!("image {i}").into(),
                    reason,
                })?;
            let p = self.apply(img);
            if *size.get_or_insert(p.geometry.input) != p.geometry.input {
                return Err(crate::Error::Input {
                    path: format!("image {i}").into(),
                    reason: format!(
                        "preprocessed to {:?}, the batch's first image to {:?}; give a crop or \
                         an exact size",
                        p.geometry.input,
                        size.expect("set")
                    ),
                });
            }
            data.extend_from_slice(&p.tensor);
        }
        let Some((h, w)) = size else {
            return Err(crate::Error::BadOption("a batch of no images".into()));
        };
        Ok(crate::tensor::Tensor::new(
            vec![images.len(), 3, h, w],
            data,
        ))
    }

    /// The network input's (height, width), when it does not depend on the image.
    pub fn input_size(&self) -> Option<(usize, usize)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Resize::Exact(h, w)) => Some((h, w)),
            (None, Resize::Shorter(_)) => None,
        }
    }

    /// The resized (height, width) of an h×w image.
    pub fn resized_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self.resize {
            Resize::Exact(rh, rw) => (rh, rw),
            Resize::Shorter(n) => shorter_side(h, w, n),
        }
    }

    /// Checks that an h×w image can be preprocessed within `max_pixels` per image (the resized
    /// image and the network input both count) and returns the bytes preprocessing allocates
    /// at most: the two resampling passes, the crop and the f32 tensor.
    pub fn check(&self, h: usize, w: usize, max_pixels: u64) -> Result<u64, String> {
        let (rh, rw) = self.resized_size(h, w);
        let (ih, iw) = self.crop.unwrap_or((rh, rw));
        for (what, (a, b)) in [("resized image", (rh, rw)), ("network input", (ih, iw))] {
            let px = a as u128 * b as u128;
            if px > max_pixels as u128 || a > u32::MAX as usize >> 1 || b > u32::MAX as usize >> 1 {
                return Err(format!(
                    "the {what} would be {b}x{a}, {px} pixels, more than the limit of \
                     {max_pixels} (`max_image_pixels`)"
                ));
            }
        }
        // Horizontal pass (or vertical, whichever runs first), then the other one.
        let first = (rw * h).max(w * rh) as u64 * 3;
        let resized = (rh * rw) as u64 * 3;
        let input = (ih * iw) as u64 * (3 + 4 * 3);
        Ok(first + resized + input)
    }

    pub fn apply(&self, img: &RgbImage) -> Prepared {
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (rh, rw) = self.resized_size(h, w);
        let resized = resize(img, rw, rh, self.filter);
        let (rgb, offset) = match self.crop {
            Some((ch, cw)) => {
                let offset = (crop_offset(rh, ch), crop_offset(rw, cw));
                (crop(&resized, offset, (ch, cw)), offset)
            }
            None => (resized, (0, 0)),
        };
        let (ih, iw) = (rgb.height() as usize, rgb.width() as usize);
        let plane = ih * iw;
        let mut tensor = vec![0f32; 3 * plane];
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                // ToTensor then Normalize, in f32 as torchvision does: x/255, (x - m)/s.
                tensor[c * plane + i] = (p.0[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        Prepared {
            rgb,
            tensor,
            geometry: Geometry {
                original: (h, w),
                resized: (rh, rw),
                offset,
                input: (ih, iw),
            },
        }
    }
}

/// torchvision's `_compute_resized_output_size` for an int size: the shorter side to `n`, the
/// longer to `int(n * long / short)` (Python float division, truncated).
pub fn shorter_side(h: usize, w: usize, n: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((n as f64 * long as f64) / short as f64) as usize;
    if w <= h {
        (new_long, n)
    } else {
        (n, new_long)
    }
}

/// torchvision's `center_crop` offset along one axis: `int(round((size - crop) / 2))` with
/// Python's round-half-to-even, or, when the crop is larger, minus the left/top zero padding
/// `(crop - size) // 2`.
pub fn crop_offset(size: usize, crop: usize) -> isize {
    if crop > size {
        -(((crop - size) / 2) as isize)
    } else {
        let d = size - crop;
        let half = d / 2;
        // d odd: (d / 2) is half + 0.5, rounded to the even neighbour.
        if d % 2 == 1 && half % 2 == 1 {
            (half + 1) as isize
        } else {
            half as isize
        }
    }
}

/// The `size` window at `offset` of `img`; pixels outside it are black, like torchvision's
/// zero padding.
fn crop(img: &RgbImage, offset: (isize, isize), size: (usize, usize)) -> RgbImage {
    let (h, w) = (img.height() as isize, img.width() as isize);
    RgbImage::from_fn(size.1 as u32, size.0 as u32, |x, y| {
        let (sy, sx) = (y as isize + offset.0, x as isize + offset.1);
        if (0..h).contains(&sy) && (0..w).contains(&sx) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's per-output-pixel windows and fixed-point weights along one axis.
struct Coeffs {
    /// (first input index, number of inputs) per output index.
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) conversion truncates toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            *kx = filter.weight(t);
            ww += *kx;
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize(size, filter)` for RGB images: two separable passes, each rounded to
/// 8 bits; a pass is skipped when its size does not change.
///
/// Pillow ≥ 13 (python-pillow/Pillow#9549) sometimes runs the vertical pass first, which changes
/// the intermediate rounding. Its choice is reproduced where it is predictable from the sizes
/// (height shrinks while width grows: vertical first, as it did in every case we sampled);
/// elsewhere the horizontal pass runs first, which matched Pillow on every uniform
/// `Resize(N)` we sampled (the torchvision evaluation transform) and on most anisotropic
/// ones; where it does not, samples differ by at most one 8-bit level.
pub fn resize(img: &RgbImage, out_w: usize, out_h: usize, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let data = Cow::Borrowed(img.as_raw().as_slice());
    let out = if in_h > out_h && in_w < out_w {
        let v = resample_vertical(data, in_w, in_h, out_h, filter);
        resample_horizontal(v, in_w, out_h, out_w, filter)
    } else {
        let h = resample_horizontal(data, in_w, in_h, out_w, filter);
        resample_vertical(h, out_w, in_h, out_h, filter)
    };
    RgbImage::from_raw(out_w as u32, out_h as u32, out.into_owned()).expect("buffer fits its size")
}

/// Pillow's `ImagingResampleHorizontal_8bpc`: rows of width `in_w` to width `out_w`.
fn resample_horizontal(
    data: Cow<[u8]>,
    in_w: usize,
    h: usize,
    out_w: usize,
    filter: Filter,
) -> Cow<[u8]> {
    if in_w == out_w {
        return data;
    }
    let c = coeffs(in_w, out_w, filter);
    let mut out = vec![0u8; out_w * h * 3];
    for y in 0..h {
        let row = &data[y * in_w * 3..(y + 1) * in_w * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] += p[ch] as i32 * kx;
                }
            }
            for ch in 0..3 {
                out[(y * out_w + xx) * 3 + ch] = clip8(ss[ch]);
            }
        }
    }
    Cow::Owned(out)
}

/// Pillow's `ImagingResampleVertical_8bpc`: `in_h` rows of width `w` to `out_h` rows.
fn resample_vertical(
    data: Cow<[u8]>,
    w: usize,
    in_h: usize,
    out_h: usize,
    filter: Filter,
) -> Cow<[u8]> {
    if in_h == out_h {
        return data;
    }
    let c = coeffs(in_h, out_h, filter);
    let stride = w * 3;
    let mut out = vec![0u8; out_h * stride];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for i in 0..stride {
            let mut ss = 1i32 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += data[(ymin + y) * stride + i] as i32 * ky;
            }
            out[yy * stride + i] = clip8(ss);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even_like_python() {
        // int(round((size - crop) / 2)): 0.5 → 0, 1.5 → 2, 2.5 → 2, 3.5 → 4.
        assert_eq!(crop_offset(21, 20), 0);
        assert_eq!(crop_offset(23, 20), 2);
        assert_eq!(crop_offset(25, 20), 2);
        assert_eq!(crop_offset(27, 20), 4);
        assert_eq!(crop_offset(24, 20), 2);
        // Larger crop: minus the left/top padding (crop - size) // 2.
        assert_eq!(crop_offset(10, 13), -1);
    }

    #[test]
    fn shorter_side_truncates_the_longer_like_torchvision() {
        assert_eq!(shorter_side(480, 640, 256), (256, 341)); // 341.33
        assert_eq!(shorter_side(640, 427, 256), (383, 256)); // 383.7
        assert_eq!(shorter_side(300, 300, 256), (256, 256));
    }
}
