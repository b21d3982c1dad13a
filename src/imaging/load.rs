//! Decoding image files to 8-bit RGB, as torchvision pipelines do with
//! `PIL.Image.open(p).convert("RGB")`: grayscale is replicated to three channels, alpha is
//! dropped (not composited), and 16-bit samples are reduced to 8 bits as Pillow does (16-bit
//! grayscale is clipped to 255, Pillow's `I;16` → `RGB`; 16-bit RGB, RGBA and gray + alpha keep
//! the high byte, Pillow's `RGB;16B` unpacking).
//!
//! Untrusted files are read with limits: at most `Limits::max_file_bytes` bytes (and nothing
//! past the first bytes of a file no format recognises), the image's size is read from its
//! header and checked against the pixel limit (Pillow's `MAX_IMAGE_PIXELS`) before anything is
//! decoded, and a JPEG must end with its end-of-image marker (Pillow: "image file is
//! truncated").

use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};
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

/// What an image may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Images with more pixels are refused (decompression bombs).
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: crate::limits::DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

impl Limits {
    /// The largest file read: an uncompressed 16-bit RGBA image of `max_pixels` pixels (8 bytes
    /// a pixel) plus 16 MiB of headers and metadata.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(16 << 20)
    }
}

/// An image file read into memory whose header has been checked: format, size, and the bytes
/// its decoded buffer takes.
pub struct Encoded {
    bytes: Vec<u8>,
    format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// The decoder's output buffer, in bytes (before the conversion to 8-bit RGB).
    pub decoded_bytes: u64,
}

/// Reads and decodes `path` with the default limits. The error is one line, without the path
/// (the caller adds it).
pub fn decode(path: &Path) -> Result<RgbImage, String> {
    read(path, &Limits::default())?.decode()
}

pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage, String> {
    check(bytes.to_vec(), &Limits::default())?.decode()
}

/// Reads `path` (bounded) and checks its header.
pub fn read(path: &Path, limits: &Limits) -> Result<Encoded, String> {
    let cannot = |e: std::io::Error| format!("cannot read: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.is_dir() {
        return Err("is a directory".into());
    }
    let mut bytes = Vec::new();
    // The format first, so that a stream of zeros or text is not read any further.
    crate::limits::read_at_most(&mut file, &mut bytes, 64).map_err(cannot)?;
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    guess(&bytes)?;
    let max = limits.max_file_bytes();
    let rest = max + 1 - bytes.len() as u64;
    crate::limits::read_at_most(&mut file, &mut bytes, rest).map_err(cannot)?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "file larger than {} bytes, the most an image of {} pixels takes (`max_image_pixels`)",
            max, limits.max_pixels
        ));
    }
    check(bytes, limits)
}

fn guess(bytes: &[u8]) -> Result<ImageFormat, String> {
    let unsupported = || "not a supported image (PNG, JPEG, WebP, BMP, TIFF)".to_owned();
    match image::guess_format(bytes) {
        Ok(
            f @ (ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Tiff),
        ) => Ok(f),
        _ => Err(unsupported()),
    }
}

/// Checks a whole file held in memory: a supported format, a complete JPEG, a size within the
/// pixel limit.
pub fn check(bytes: Vec<u8>, limits: &Limits) -> Result<Encoded, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let format = guess(&bytes)?;
    if format == ImageFormat::Jpeg {
        jpeg_complete(&bytes)?;
    }
    // The header only: a small allocation limit.
    let (width, height, decoded_bytes) = {
        let decoder = decoder(&bytes, format, 64 << 20)?;
        let (w, h) = decoder.dimensions();
        (w, h, decoder.total_bytes())
    };
    if width == 0 || height == 0 {
        return Err("image has zero width or height".into());
    }
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(format!(
            "decompression bomb: {width}x{height} is {pixels} pixels, more than the limit of {} \
             (raise it with `max_image_pixels`)",
            limits.max_pixels
        ));
    }
    Ok(Encoded {
        bytes,
        format,
        width,
        height,
        decoded_bytes,
    })
}

fn decoder(
    bytes: &[u8],
    format: ImageFormat,
    max_alloc: u64,
) -> Result<impl ImageDecoder + '_, String> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::no_limits();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    reader
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))
}

impl Encoded {
    /// The size of the file read.
    pub fn file_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Decodes to 8-bit RGB as Pillow's `convert("RGB")` does.
    pub fn decode(&self) -> Result<RgbImage, String> {
        // The decoder's buffer, and as much again for what it allocates on the way.
        let max_alloc = self
            .decoded_bytes
            .saturating_mul(2)
            .saturating_add(64 << 20);
        let decoder = decoder(&self.bytes, self.format, max_alloc)?;
        let img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
        if (img.width(), img.height()) != (self.width, self.height) {
            return Err("cannot decode: the image's size changed while decoding".into());
        }
        Ok(to_rgb8(img))
    }
}

/// Pillow's `convert("RGB")`: 16-bit grayscale (`I;16`) is clipped to 255; other 16-bit
/// images keep the high byte of each sample; 8-bit ones are replicated / stripped of alpha.
pub fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let from = |data: Vec<u8>| RgbImage::from_raw(w, h, data).expect("w·h RGB pixels");
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma16(i) => from(
            i.as_raw()
                .iter()
                .flat_map(|&v| [v.min(255) as u8; 3])
                .collect(),
        ),
        DynamicImage::ImageLumaA16(i) => from(
            i.as_raw()
                .chunks_exact(2)
                .flat_map(|p| [(p[0] >> 8) as u8; 3])
                .collect(),
        ),
        DynamicImage::ImageRgb16(i) => from(i.as_raw().iter().map(|&v| (v >> 8) as u8).collect()),
        DynamicImage::ImageRgba16(i) => from(
            i.as_raw()
                .chunks_exact(4)
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect(),
        ),
        other => other.to_rgb8(),
    }
}

/// Fails unless the JPEG in `bytes` runs from its start-of-image marker through every
/// segment and entropy-coded scan to its end-of-image marker (EOI). A file cut anywhere —
/// in a header, in a scan, or just before EOI — is truncated: Pillow (libjpeg) refuses it,
/// while a decoder that fills the missing rows would explain garbage.
pub fn jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    let truncated = |what: &str| Err(format!("image file is truncated (JPEG data ends {what})"));
    if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let n = bytes.len();
    let mut i = 2;
    loop {
        // Bytes between segments are skipped as libjpeg does (it only warns).
        while i < n && bytes[i] != 0xFF {
            i += 1;
        }
        // Fill bytes.
        while i < n && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= n {
            return truncated("before its end-of-image marker");
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length: SOI, RST0..7, TEM, and a stuffed zero.
            0xD8 | 0xD0..=0xD7 | 0x01 | 0x00 => continue,
            _ => {}
        }
        if i + 2 > n {
            return truncated("inside a marker segment");
        }
        let len = u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        if len < 2 {
            return Err(format!(
                "cannot decode: JPEG marker 0xFF{marker:02X} has an invalid length {len}"
            ));
        }
        if i + len > n {
            return truncated("inside a marker segment");
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: up to the next marker other than a stuffed zero or a
            // restart marker.
            loop {
                if i >= n {
                    return truncated("inside a scan");
                }
                if bytes[i] == 0xFF {
                    match bytes.get(i + 1) {
                        None => return truncated("inside a scan"),
                        Some(0x00 | 0xD0..=0xD7) => i += 2,
                        Some(0xFF) => i += 1,
                        Some(_) => break,
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
}
