//! Labelled 32×32 RGB image sets for training and evaluation: the CIFAR-10 binary format, and
//! a synthetic `shapes` set with known object boxes (for the pointing game). Images are stored
//! normalized with mean 0.5 and std 0.5 per channel, as the article's transforms do.

pub mod augment;
pub mod cifar;
pub mod shapes;

use crate::tensor::Tensor;

/// Side of every image in these sets.
pub const SIDE: usize = 32;
/// Floats per image: 3 channels of SIDE×SIDE.
pub const IMAGE_LEN: usize = 3 * SIDE * SIDE;

/// An object's bounding box in pixels: columns x0..x1 and rows y0..y1 (ends exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl BBox {
    pub fn contains(&self, x: usize, y: usize) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// [len, 3, 32, 32], normalized.
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// The object's box per image, for synthetic sets.
    pub boxes: Option<Vec<BBox>>,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]
    }
    /// The images at `indices` as one [n, 3, 32, 32] batch.
    pub fn batch(&self, indices: &[usize]) -> (Tensor, Vec<usize>) {
        let mut data = Vec::with_capacity(indices.len() * IMAGE_LEN);
        for &i in indices {
            data.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        (
            Tensor::new(vec![indices.len(), 3, SIDE, SIDE], data),
            labels,
        )
    }
}

/// Pixel byte → normalized value: (v/255 - 0.5)/0.5.
pub fn normalize(v: f32) -> f32 {
    (v - 0.5) / 0.5
}

/// A training split and a test split.
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}
