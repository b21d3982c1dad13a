//! The pointing game: is a Grad-CAM map's maximum inside the object's bounding box? For each
//! image the CAM of its true class is computed (so the score measures localisation, not
//! classification), and the first maximum of the full-resolution map is the point.

use crate::backend::cpu::CpuBackend;
use crate::data::{Dataset, SIDE};
use crate::engine::{argmax, Engine};
use crate::error::{Error, Result};
use crate::model::Model;

#[derive(Clone, Copy, Debug)]
pub struct PointingReport {
    pub images: usize,
    /// Images whose CAM maximum lies inside the box.
    pub hits: usize,
    /// Images the model classifies correctly.
    pub correct: usize,
}

impl PointingReport {
    pub fn accuracy(&self) -> f64 {
        self.hits as f64 / self.images.max(1) as f64
    }
    pub fn classification_accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

/// Plays the pointing game on every image of `set` (which must carry boxes) at `layer`
/// (None: the model's default layer).
pub fn evaluate(model: Model, set: &Dataset, layer: Option<&str>) -> Result<PointingReport> {
    let boxes = set.boxes.as_ref().ok_or_else(|| {
        Error::Usage("the pointing game needs a data set with object boxes (--data shapes)".into())
    })?;
    let engine = Engine::new(CpuBackend::default(), model)?;
    let mut report = PointingReport {
        images: set.len(),
        hits: 0,
        correct: 0,
    };
    const BATCH: usize = 100;
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(BATCH) {
        for class in 0..set.classes() {
            let ids: Vec<usize> = chunk
                .iter()
                .copied()
                .filter(|&i| set.labels[i] == class)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let (x, _) = set.batch(&ids);
            let out = engine.explain(&x, layer, Some(class))?;
            let classes = out.logits.shape[1];
            for (k, &i) in ids.iter().enumerate() {
                let cam = &out.cams.data[k * SIDE * SIDE..(k + 1) * SIDE * SIDE];
                let at = argmax(cam);
                report.hits += usize::from(boxes[i].contains(at % SIDE, at / SIDE));
                let logits = &out.logits.data[k * classes..(k + 1) * classes];
                report.correct += usize::from(argmax(logits) == class);
            }
        }
    }
    Ok(report)
}
