//! Faithfulness metrics of a CAM, as pytorch-grad-cam 1.5 (`pytorch_grad_cam/metrics/`)
//! computes them, for ranking CAM methods on a folder of images.
//!
//! Every metric perturbs the normalized network input x [C, H, W] with the CAM [H, W] and reports
//! score(perturbed) − score(x) for the explained class, where the score is the caller's
//! ([`Scorer`]; [`Score`] gives pytorch-grad-cam's `ClassifierOutputTarget`, the logit, and
//! `ClassifierOutputSoftmaxTarget`, the softmax probability):
//! - `CamMultImageConfidenceChange`: perturbed = x · cam; `DropInConfidence` = max(−Δ, 0),
//!   `IncreaseInConfidence` = \[Δ > 0\] ([`CamMultImage`]).
//! - ROAD (Rong et al. 2022, [`Road`]): at percentile p, `ROADMostRelevantFirst` removes the
//!   pixels with cam ≥ percentile_p(cam) (p = 80 removes the top 20 %), `ROADLeastRelevantFirst`
//!   those with 1 − cam ≥ percentile_p(1 − cam) (p = 20 removes the 80 % least relevant); removed
//!   pixels are filled by the noisy linear imputer ([`impute`]). The `*Average` variants average
//!   over [`PERCENTILES`] (10, 20, …, 90), and `ROADCombined` = (LeRF average − MoRF average) / 2.
//!
//! Deviations from pytorch-grad-cam: the imputer's Gaussian noise (σ = [`NOISE`] = 0.01 there,
//! fixed; a parameter here) comes from the caller's seeded RNG, so with noise the draws, and the
//! ROAD numbers, differ from torch's by the noise; with noise 0 they match (tests/metrics.rs). A
//! ROAD step that removes every pixel (MoRF when the CAM sits at its minimum on more than about
//! p % of the pixels, common for ReLU'd Grad-CAMs with zero regions; LeRF the same at its
//! maximum) has a singular system: it imputes 0 + noise, which is what scipy's solver returns
//! there (explicitly here, not by luck of the pivots). Non-finite inputs or CAMs, and a CAM whose
//! shape is not the image's [H, W], are errors rather than numbers.
//!
//! [`pointing`] holds the pointing game, a localisation metric for data with object boxes.

mod confidence;
pub mod pointing;
mod road;
mod summary;

pub use confidence::CamMultImage;
pub use road::{impute, removed_pixels, Order, Road, NOISE, PERCENTILES};
pub use summary::Summary;

pub use crate::engine::Score;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::Rng;
use serde_json::{json, Map, Value};

/// Scores a batch: input [B, C, H, W] → one score per image for the given class (`classes[b]`;
/// logit or softmax, chosen by the caller). A closure `FnMut(&Tensor, &[usize]) ->
/// Result<Vec<f32>>` is a `Scorer`.
pub trait Scorer {
    fn scores(&mut self, batch: &Tensor, classes: &[usize]) -> Result<Vec<f32>>;
}

impl<F: FnMut(&Tensor, &[usize]) -> Result<Vec<f32>>> Scorer for F {
    fn scores(&mut self, batch: &Tensor, classes: &[usize]) -> Result<Vec<f32>> {
        self(batch, classes)
    }
}

/// ROAD's settings: the percentiles and the imputer's noise (σ of the Gaussian added to each
/// imputed value).
#[derive(Clone, Debug, PartialEq)]
pub struct RoadConfig {
    pub percentiles: Vec<u32>,
    pub noise: f32,
}

impl Default for RoadConfig {
    /// pytorch-grad-cam's: percentiles 10, 20, …, 90, noise 0.01.
    fn default() -> Self {
        RoadConfig {
            percentiles: PERCENTILES.to_vec(),
            noise: NOISE,
        }
    }
}

/// All metrics of one image and CAM.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub cam_mult_image: CamMultImage,
    pub road: Road,
}

/// `CamMultImageConfidenceChange` and its readings for image `x` [C, H, W], `cam` [H, W] and
/// `class`: one scorer call on a batch of 2 (x, x · cam).
pub fn cam_mult_image(
    x: &Tensor,
    cam: &Tensor,
    class: usize,
    scorer: &mut impl Scorer,
) -> Result<CamMultImage> {
    check_pair(x, cam)?;
    let images = [x.data.clone(), confidence::perturbation(&x.data, &cam.data)];
    let s = score_batch(&x.shape, &images, class, scorer)?;
    Ok(CamMultImage::from_scores(s[0], s[1]))
}

/// Every metric: one scorer call on a batch of 2 + 2 · percentiles (x, x · cam, then ROAD's
/// imputed images, most relevant first, then least; 20 images with the default percentiles, which
/// a scorer may split to bound its memory). `rng` draws the imputer's noise.
pub fn evaluate<R: Rng + ?Sized>(
    x: &Tensor,
    cam: &Tensor,
    class: usize,
    config: &RoadConfig,
    rng: &mut R,
    scorer: &mut impl Scorer,
) -> Result<Metrics> {
    let (h, w) = check_pair(x, cam)?;
    let p = &config.percentiles;
    let mut images = vec![x.data.clone(), confidence::perturbation(&x.data, &cam.data)];
    images.extend(road::perturbations(
        &x.data,
        &cam.data,
        (h, w),
        p,
        config.noise,
        rng,
    )?);
    let s = score_batch(&x.shape, &images, class, scorer)?;
    let (morf, lerf) = s[2..].split_at(p.len());
    Ok(Metrics {
        cam_mult_image: CamMultImage::from_scores(s[0], s[1]),
        road: Road::from_scores(p, s[0], morf, lerf),
    })
}

/// One image's metrics for one CAM method: a JSON object per image and method.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRecord {
    pub image: String,
    pub method: String,
    pub class: usize,
    pub score: Score,
    /// The ROAD imputer's noise the record was computed with.
    pub noise: f32,
    pub metrics: Metrics,
}

impl MetricsRecord {
    /// Fields named after pytorch-grad-cam's classes in snake_case; `road_morf` / `road_lerf`
    /// map each percentile ("10", …) to its value.
    pub fn to_json(&self) -> Value {
        let m = &self.metrics;
        let per_percentile = |v: &[f32]| {
            let map: Map<String, Value> = m
                .road
                .percentiles
                .iter()
                .zip(v)
                .map(|(p, &v)| (p.to_string(), json!(v)))
                .collect();
            Value::Object(map)
        };
        json!({
            "image": self.image,
            "method": self.method,
            "class": self.class,
            "score": self.score.name(),
            "road_noise": self.noise,
            "cam_mult_image_confidence_change": m.cam_mult_image.confidence_change,
            "drop_in_confidence": m.cam_mult_image.drop_in_confidence,
            "increase_in_confidence": m.cam_mult_image.increase_in_confidence,
            "road_morf": per_percentile(&m.road.morf),
            "road_lerf": per_percentile(&m.road.lerf),
            "road_morf_average": m.road.morf_average,
            "road_lerf_average": m.road.lerf_average,
            "road_combined": m.road.combined,
        })
    }
}

/// (H, W) when `x` is a finite [C, H, W] image and `cam` a finite [H, W] map.
fn check_pair(x: &Tensor, cam: &Tensor) -> Result<(usize, usize)> {
    let &[c, h, w] = x.shape.as_slice() else {
        return Err(Error::Usage(format!(
            "metrics: the image has shape {:?}, expected [C, H, W]",
            x.shape
        )));
    };
    if c == 0 || h == 0 || w == 0 || x.data.len() != c * h * w {
        return Err(Error::Usage(format!(
            "metrics: the image has shape {:?} and {} values",
            x.shape,
            x.data.len()
        )));
    }
    if cam.shape != [h, w] || cam.data.len() != h * w {
        return Err(Error::Usage(format!(
            "metrics: the cam has shape {:?} but the image {:?}; the cam must be [H, W] = [{h}, {w}]",
            cam.shape, x.shape
        )));
    }
    check_finite("image", &x.data, &x.shape)?;
    check_finite("cam", &cam.data, &cam.shape)?;
    Ok((h, w))
}

/// An error naming the first non-finite value of `what` and its index in `shape`.
fn check_finite(what: &str, data: &[f32], shape: &[usize]) -> Result<()> {
    let Some(flat) = data.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (i, &d) in shape.iter().enumerate().rev() {
        index[i] = rest % d.max(1);
        rest /= d.max(1);
    }
    Err(Error::Usage(format!(
        "metrics: the {what} of shape {shape:?} holds a non-finite value ({}) at {index:?}",
        data[flat]
    )))
}

/// Stacks `images` (each of `shape`) into one batch and scores it for `class`.
fn score_batch(
    shape: &[usize],
    images: &[Vec<f32>],
    class: usize,
    scorer: &mut impl Scorer,
) -> Result<Vec<f32>> {
    let mut batch_shape = vec![images.len()];
    batch_shape.extend_from_slice(shape);
    let batch = Tensor::new(batch_shape, images.concat());
    let classes = vec![class; images.len()];
    let scores = scorer.scores(&batch, &classes)?;
    if scores.len() != images.len() {
        return Err(Error::Usage(format!(
            "metrics: the scorer returned {} scores for a batch of {}",
            scores.len(),
            images.len()
        )));
    }
    if let Some((b, v)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::Usage(format!(
            "metrics: the network scored image {b} of the perturbed batch as {v}"
        )));
    }
    Ok(scores)
}
