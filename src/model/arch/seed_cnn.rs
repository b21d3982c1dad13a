//! The small CIFAR-10 CNN of the article this project grew from, with padding 2 so that it
//! runs on 32×32 input. Reference PyTorch definition: `scripts/models.py::SeedCNN`.

use super::Built;
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::weights::WeightStore;

/// Most of its tensors present: with one missing, the error names the missing one.
pub fn matches(store: &WeightStore) -> bool {
    [
        "conv1.weight",
        "conv2.weight",
        "conv3.weight",
        "fc1.weight",
        "fc2.weight",
    ]
    .iter()
    .filter(|n| store.contains(n))
    .count()
        >= 3
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let mut x = Builder::INPUT;
    let mut c = None;
    for i in 1..=3 {
        let (v, ch) = b.conv(&format!("conv{i}"), x, c, ConvSpec::k(5).bias(true))?;
        let v = b.relu(Some(&format!("relu{i}")), v);
        x = b.max_pool(Some(&format!("pool{i}")), v, 3, 3, 0, false);
        c = Some(ch);
    }
    let x = b.flatten(x);
    let (x, f) = b.linear("fc1", x, None)?;
    let x = b.relu(Some("relu4"), x);
    let (output, num_classes) = b.linear("fc2", x, Some(f))?;
    Ok(Built {
        output,
        num_classes,
        preprocess: None,
        default_layer: "conv3".into(),
        variant: "seed-cnn".into(),
    })
}
