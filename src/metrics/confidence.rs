//! `CamMultImageConfidenceChange` and its two readings, `DropInConfidence` and
//! `IncreaseInConfidence` (pytorch-grad-cam's `metrics/cam_mult_image.py`).

/// The image multiplied by its CAM: x [C, H, W] · cam [H, W], broadcast over the channels (on
/// the normalized network input, as pytorch-grad-cam does).
pub(super) fn perturbation(x: &[f32], cam: &[f32]) -> Vec<f32> {
    x.chunks_exact(cam.len())
        .flat_map(|plane| plane.iter().zip(cam).map(|(&v, &c)| v * c))
        .collect()
}

/// The confidence change of one image under x · cam.
#[derive(Clone, Debug, PartialEq)]
pub struct CamMultImage {
    /// `CamMultImageConfidenceChange`: Δ = score(x · cam) − score(x).
    pub confidence_change: f32,
    /// `DropInConfidence`: max(−Δ, 0).
    pub drop_in_confidence: f32,
    /// `IncreaseInConfidence`: 1 if Δ > 0, else 0.
    pub increase_in_confidence: f32,
}

impl CamMultImage {
    pub fn from_scores(base: f32, perturbed: f32) -> Self {
        let change = perturbed - base;
        CamMultImage {
            confidence_change: change,
            drop_in_confidence: (-change).max(0.0),
            increase_in_confidence: if change > 0.0 { 1.0 } else { 0.0 },
        }
    }
}
