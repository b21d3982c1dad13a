//! torchvision AlexNet (torchvision/models/alexnet.py, `AlexNet`): five biased convolutions
//! with ReLUs and three 3×3/2 max-pools in `features`, an adaptive average pool, and a
//! Dropout–Linear–ReLU–Dropout–Linear–ReLU–Linear classifier.
//!
//! From the weights: every width (conv output channels, hidden features, classes) and the
//! avgpool's output size (read off `classifier.1`'s input features). From torchvision's
//! definition: the kernel sizes, strides and paddings (11/4/2, 5/1/2, 3/1/1 ×3; the kernels are
//! checked against the weights), the pools (MaxPool2d(3, 2), no ceil_mode) and the module
//! indices. The default Grad-CAM layer is `features.11`, the ReLU after the last conv.
//! Preprocessing: AlexNet_Weights.IMAGENET1K_V1 (resize 256, crop 224, bilinear;
//! tests/fixtures/families/manifests/preprocess_v1.json).

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &["alexnet"];

/// torchvision's conv widths and hidden features.
const WIDTHS: [usize; 5] = [64, 192, 384, 256, 256];
const HIDDEN: usize = 4096;

/// (features index, kernel, stride, padding) of the five convolutions.
const CONVS: [(usize, usize, usize, usize); 5] = [
    (0, 11, 4, 2),
    (3, 5, 1, 2),
    (6, 3, 1, 1),
    (8, 3, 1, 1),
    (10, 3, 1, 1),
];

pub fn matches(store: &WeightStore) -> bool {
    store
        .shape("features.0.weight")
        .is_some_and(|s| s.len() == 4 && s[2] == 11 && s[3] == 11)
        && store.contains("features.10.weight")
        && store.contains("classifier.1.weight")
        && store.contains("classifier.6.weight")
        && !store.contains("classifier.0.weight")
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let features = b.begin("features", "Sequential");
    let mut x = Builder::INPUT;
    let mut c = None;
    let mut widths = [0usize; 5];
    for (j, &(i, k, s, p)) in CONVS.iter().enumerate() {
        let (v, ch) = b.conv(
            &format!("features.{i}"),
            x,
            c,
            ConvSpec::k(k).stride(s).pad(p).bias(true),
        )?;
        widths[j] = ch;
        c = Some(ch);
        x = b.relu(Some(&format!("features.{}", i + 1)), v);
        if matches!(i, 0 | 3) {
            x = b.max_pool(Some(&format!("features.{}", i + 2)), x, 3, 2, 0, false);
        }
    }
    x = b.max_pool(Some("features.12"), x, 3, 2, 0, false);
    b.end(features, x);
    let c = widths[4];

    // torchvision: AdaptiveAvgPool2d((6, 6)) and Linear(256 * 6 * 6, 4096).
    let in_f = store.shape("classifier.1.weight").map_or(c * 36, |s| s[1]);
    let side = ((in_f / c.max(1)) as f64).sqrt().round() as usize;
    if side == 0 || side * side * c != in_f {
        return Err(Error::Shape {
            path: store.path().to_owned(),
            name: "classifier.1.weight".into(),
            found: store.shape("classifier.1.weight").unwrap_or(&[]).to_vec(),
            expected: format!(
                "[?, {c}·s·s] for a square avgpool output s×s (torchvision: [4096, {}])",
                c * 36
            ),
        });
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (side, side));
    let x = b.flatten(x);
    let classifier = b.begin("classifier", "Sequential");
    let x = b.dropout("classifier.0", x);
    let (x, f1) = b.linear("classifier.1", x, Some(in_f))?;
    let x = b.relu(Some("classifier.2"), x);
    let x = b.dropout("classifier.3", x);
    let (x, f2) = b.linear("classifier.4", x, Some(f1))?;
    let x = b.relu(Some("classifier.5"), x);
    let (output, num_classes) = b.linear("classifier.6", x, Some(f2))?;
    b.end(classifier, output);

    let variant = if widths == WIDTHS && f1 == HIDDEN && f2 == HIDDEN && side == 6 {
        "alexnet".to_string()
    } else {
        format!("alexnet (custom, widths {widths:?}, hidden [{f1}, {f2}], avgpool {side}×{side})")
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features.11".into(),
        variant,
        preprocess: Some(Preprocess::imagenet("AlexNet_Weights.IMAGENET1K_V1")),
    })
}
