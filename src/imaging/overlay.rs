//! Pictures made from attributions: the JET heatmap, pytorch-grad-cam's `show_cam_on_image`
//! overlay (on the network input or mapped back onto the original image), and
//! kazuto1011/grad-cam-pytorch's gradient images for guided backpropagation.

use super::colormap::jet;
use super::preprocess::Geometry;
use image::{Rgb, RgbImage};

/// The CAM [h, w] as a JET heatmap at the network input's resolution.
pub fn heatmap(cam: &[f32], h: usize, w: usize) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        Rgb(jet(cam[y as usize * w + x as usize]))
    })
}

/// `show_cam_on_image(img / 255, cam, use_rgb=True, image_weight)` in float32, as numpy computes
/// it: `(1 - image_weight) * heatmap / 255 + image_weight * img`, divided by its maximum, times
/// 255, truncated to uint8.
pub fn show_cam_on_image(img: &RgbImage, cam: &[f32], image_weight: f64) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let blended: Vec<f32> = (0..h * w)
        .flat_map(|i| blend(img.as_raw(), i, jet(cam[i]), image_weight))
        .collect();
    let max = blended.iter().copied().fold(0f32, f32::max);
    RgbImage::from_raw(w as u32, h as u32, to_u8(&blended, max)).expect("buffer fits its size")
}

/// The overlay at the original image's size: the CAM is mapped back through the center crop
/// and the resize (bilinear, half-pixel centers) and blended as in `show_cam_on_image`. Pixels
/// outside the crop, which the network never saw, keep their original colour.
pub fn overlay_original(img: &RgbImage, cam: &[f32], g: &Geometry, image_weight: f64) -> RgbImage {
    let (oh, ow) = g.original;
    let (ih, iw) = g.input;
    let sy = g.resized.0 as f32 / oh as f32;
    let sx = g.resized.1 as f32 / ow as f32;
    let mut blended = vec![0f32; oh * ow * 3];
    let mut covered = vec![false; oh * ow];
    for y in 0..oh {
        // Pixel center in resized, then cropped coordinates.
        let cy = (y as f32 + 0.5) * sy - g.offset.0 as f32;
        for x in 0..ow {
            let cx = (x as f32 + 0.5) * sx - g.offset.1 as f32;
            let i = y * ow + x;
            if cy < 0.0 || cx < 0.0 || cy >= ih as f32 || cx >= iw as f32 {
                continue;
            }
            covered[i] = true;
            let v = sample(cam, ih, iw, cy - 0.5, cx - 0.5);
            blended[i * 3..i * 3 + 3].copy_from_slice(&blend(
                img.as_raw(),
                i,
                jet(v),
                image_weight,
            ));
        }
    }
    let max = blended.iter().copied().fold(0f32, f32::max);
    let mut out = to_u8(&blended, max);
    for (i, &c) in covered.iter().enumerate() {
        if !c {
            out[i * 3..i * 3 + 3].copy_from_slice(&img.as_raw()[i * 3..i * 3 + 3]);
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer fits its size")
}

/// kazuto1011's `save_gradient`: a [3, H, W] gradient as an H×W×3 image, shifted by its
/// minimum, divided by its (new) maximum, times 255, truncated. Channel 0 is red (kazuto1011
/// writes the RGB array with cv2.imwrite, which swaps red and blue on disk; we do not). A
/// constant gradient, which they would turn into NaNs, gives black.
pub fn gradient_image(grad: &[f32], h: usize, w: usize) -> RgbImage {
    let plane = h * w;
    let min = grad.iter().copied().fold(f32::INFINITY, f32::min);
    let max = grad.iter().map(|&v| v - min).fold(0f32, f32::max);
    let mut out = vec![0u8; plane * 3];
    if max > 0.0 && max.is_finite() {
        for i in 0..plane {
            for c in 0..3 {
                out[i * 3 + c] = (((grad[c * plane + i] - min) / max) * 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer fits its size")
}

/// kazuto1011's `save_sensitivity`: an occlusion map [gh, gw] of score differences, divided by
/// its largest magnitude, mapped to [0, 1] around 0.5 and drawn with matplotlib's `bwr_r`
/// (a score drop red, a rise blue, no change white), resized to H×W by nearest neighbour.
pub fn diverging(map: &[f32], gh: usize, gw: usize, h: usize, w: usize) -> RgbImage {
    let scale = map.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let v = map[(y * gh / h) * gw + x * gw / w];
            let t = v / scale * 0.5 + 0.5;
            // The 256-entry table of `bwr_r`: entry i is bwr(1 - i/255).
            let u = 1.0 - ((t * 256.0) as usize).min(255) as f32 / 255.0;
            let rgb = if u < 0.5 {
                [2.0 * u, 2.0 * u, 1.0]
            } else {
                [1.0, 2.0 - 2.0 * u, 2.0 - 2.0 * u]
            };
            for c in 0..3 {
                out[(y * w + x) * 3 + c] = (rgb[c] * 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer fits its size")
}

/// One pixel of `(1 - image_weight) * heatmap + image_weight * img`, both scaled to [0, 1].
/// The weights are Python floats (f64) that numpy applies to float32 arrays as float32.
fn blend(img: &[u8], i: usize, heat: [u8; 3], image_weight: f64) -> [f32; 3] {
    let (a, b) = ((1.0 - image_weight) as f32, image_weight as f32);
    let mut v = [0f32; 3];
    for c in 0..3 {
        let hm = heat[c] as f32 / 255.0;
        let im = img[i * 3 + c] as f32 / 255.0;
        v[c] = a * hm + b * im;
    }
    v
}

/// `np.uint8(255 * (v / max))`.
fn to_u8(v: &[f32], max: f32) -> Vec<u8> {
    v.iter()
        .map(|&x| {
            let s = 255.0f32 * (x / max);
            if s.is_nan() {
                0
            } else {
                s.clamp(0.0, 255.0) as u8
            }
        })
        .collect()
}

/// Bilinear sample of map [h, w] at fractional index (y, x), clamped at the borders.
fn sample(map: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    let y = y.clamp(0.0, (h - 1) as f32);
    let x = x.clamp(0.0, (w - 1) as f32);
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (fy, fx) = (y - y0 as f32, x - x0 as f32);
    let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
    let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}
