//! `--data shapes`: a synthetic three-class set (circle, square, triangle) with known object
//! boxes, for a demo model that trains in minutes and for the pointing game. Each image is a
//! random-coloured background with a colour gradient, clutter (thin lines and small dots of
//! random colours) and one filled shape of random colour, size and position, all under
//! Gaussian pixel noise. Image `i` of a stream depends only on (seed, i).

use super::{normalize, BBox, Dataset, Splits, IMAGE_LEN, SIDE};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub const CLASS_NAMES: [&str; 3] = ["circle", "square", "triangle"];
/// Smallest and largest side of an object's box, in pixels.
pub const MIN_SIZE: usize = 10;
pub const MAX_SIZE: usize = 20;
/// Standard deviation of the per-pixel noise, on the [0, 1] scale.
pub const NOISE: f32 = 0.06;

/// The seed stream of the test split, kept apart from every training seed a user is likely to
/// pass (training uses the seed itself).
const TEST_STREAM: u64 = 1 << 32;

/// `train` training and `test` test images; the test images are never training images.
pub fn splits(train: usize, test: usize, seed: u64) -> Splits {
    Splits {
        train: generate(train, seed),
        test: generate(test, seed.wrapping_add(TEST_STREAM)),
    }
}

/// `count` images of stream `seed`, classes in turn (balanced), normalized.
pub fn generate(count: usize, seed: u64) -> Dataset {
    let mut set = Dataset {
        images: Vec::with_capacity(count * IMAGE_LEN),
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut boxes = Vec::with_capacity(count);
    for i in 0..count {
        let label = i % CLASS_NAMES.len();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
        let (rgb, bbox) = render(label, &mut rng);
        set.images.extend(rgb.iter().map(|&v| normalize(v)));
        set.labels.push(label);
        boxes.push(bbox);
    }
    set.boxes = Some(boxes);
    set
}

/// One image, [3, 32, 32] in [0, 1], showing class `label`, and the shape's box.
pub fn render<R: Rng>(label: usize, rng: &mut R) -> (Vec<f32>, BBox) {
    let plane = SIDE * SIDE;
    let mut img = vec![0.0f32; 3 * plane];
    // Background: a random colour with a random linear gradient.
    let bg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
    let grad: [f32; 2] = std::array::from_fn(|_| rng.random_range(-0.3..0.3));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let t =
                grad[0] * (x as f32 / SIDE as f32 - 0.5) + grad[1] * (y as f32 / SIDE as f32 - 0.5);
            for c in 0..3 {
                img[c * plane + y * SIDE + x] = bg[c] + t;
            }
        }
    }
    // Clutter: thin line segments and small dots.
    for _ in 0..rng.random_range(3..7) {
        let colour: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        let (x0, y0) = (
            rng.random_range(0.0..32.0f32),
            rng.random_range(0.0..32.0f32),
        );
        let (x1, y1) = (
            rng.random_range(0.0..32.0f32),
            rng.random_range(0.0..32.0f32),
        );
        let steps = 64;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            paint(&mut img, x as usize, y as usize, colour);
        }
    }
    for _ in 0..rng.random_range(4..10) {
        let colour: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        let (x, y) = (rng.random_range(0..SIDE - 1), rng.random_range(0..SIDE - 1));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            paint(&mut img, x + dx, y + dy, colour);
        }
    }
    // The object: a colour far enough from the background to be seen.
    let colour = loop {
        let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        if c.iter().zip(&bg).map(|(a, b)| (a - b).abs()).sum::<f32>() > 0.6 {
            break c;
        }
    };
    let size = rng.random_range(MIN_SIZE..=MAX_SIZE);
    let x0 = rng.random_range(0..=SIDE - size);
    let y0 = rng.random_range(0..=SIDE - size);
    let s = size as f32;
    let (cx, cy) = (x0 as f32 + s / 2.0, y0 as f32 + s / 2.0);
    for y in y0..y0 + size {
        for x in x0..x0 + size {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let inside = match label {
                0 => (px - cx).powi(2) + (py - cy).powi(2) <= (s / 2.0).powi(2),
                1 => true,
                _ => (px - cx).abs() <= (py - y0 as f32) / 2.0,
            };
            if inside {
                paint(&mut img, x, y, colour);
            }
        }
    }
    let noise = Normal::new(0.0f32, NOISE).expect("valid std");
    for v in img.iter_mut() {
        *v = (*v + noise.sample(rng)).clamp(0.0, 1.0);
    }
    let bbox = BBox {
        x0,
        y0,
        x1: x0 + size,
        y1: y0 + size,
    };
    (img, bbox)
}

fn paint(img: &mut [f32], x: usize, y: usize, colour: [f32; 3]) {
    if x < SIDE && y < SIDE {
        for (c, &v) in colour.iter().enumerate() {
            img[c * SIDE * SIDE + y * SIDE + x] = v;
        }
    }
}
