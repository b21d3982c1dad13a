//! The standard CIFAR augmentation: a random 32×32 crop of the image padded by 4 pixels on
//! each side, then a horizontal flip with probability 1/2 (torchvision's
//! `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()`).

use super::{normalize, SIDE};
use rand::Rng;

pub const PAD: usize = 4;

/// Augments a normalized [n, 3, 32, 32] batch in place. The padding is black before
/// normalization, as torchvision pads the unnormalized image with zeros.
pub fn crop_and_flip<R: Rng>(batch: &mut [f32], rng: &mut R) {
    let black = normalize(0.0);
    let plane = SIDE * SIDE;
    let mut out = vec![0.0f32; 3 * plane];
    for img in batch.chunks_mut(3 * plane) {
        let dy = rng.random_range(0..=2 * PAD) as isize - PAD as isize;
        let dx = rng.random_range(0..=2 * PAD) as isize - PAD as isize;
        let flip = rng.random_bool(0.5);
        for c in 0..3 {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let sx = if flip { SIDE - 1 - x } else { x } as isize + dx;
                    let sy = y as isize + dy;
                    let inside =
                        (0..SIDE as isize).contains(&sx) && (0..SIDE as isize).contains(&sy);
                    out[c * plane + y * SIDE + x] = if inside {
                        img[c * plane + sy as usize * SIDE + sx as usize]
                    } else {
                        black
                    };
                }
            }
        }
        img.copy_from_slice(&out);
    }
}
