//! torchvision VGG 11/13/16/19, with or without BatchNorm. The layout of `features` is read
//! from which indices hold convolutions and BatchNorms; every width comes from the weights.

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("features.0.weight") && store.names().any(|n| n.starts_with("classifier."))
}

pub const VARIANT_NAMES: &[&str] = &[
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
];

/// Convolutions per stage of torchvision's configurations A, B, D, E.
const VARIANTS: [(&str, [usize; 5]); 4] = [
    ("vgg11", [1, 1, 2, 2, 2]),
    ("vgg13", [2, 2, 2, 2, 2]),
    ("vgg16", [2, 2, 3, 3, 3]),
    ("vgg19", [2, 2, 4, 4, 4]),
];

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let is_conv = |i: usize| {
        store
            .shape(&format!("features.{i}.weight"))
            .is_some_and(|s| s.len() == 4)
    };
    let last = store
        .names()
        .filter_map(|n| {
            n.strip_prefix("features.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let bn = store.contains("features.1.running_mean");
    let unsupported = |reason: String| Error::UnknownArch {
        path: store.path().to_owned(),
        reason,
        known: super::known().join(", "),
    };

    let features = b.begin("features", "Sequential");
    let mut x = Builder::INPUT;
    let mut c = None;
    let mut i = 0;
    let mut stages = vec![0usize];
    let mut last_relu = String::new();
    while i <= last {
        if is_conv(i) {
            let (v, ch) = b.conv(&format!("features.{i}"), x, c, ConvSpec::k(3).bias(true))?;
            x = v;
            c = Some(ch);
            if bn {
                x = b.batch_norm(&format!("features.{}", i + 1), x, ch)?;
                i += 1;
            }
            last_relu = format!("features.{}", i + 1);
            x = b.relu(Some(&last_relu), x);
            i += 2;
            *stages.last_mut().expect("stage") += 1;
        } else if i == 0 || !is_conv(i + 1) {
            return Err(unsupported(format!(
                "features.{i} is neither a convolution nor a max-pool between convolutions"
            )));
        } else {
            x = b.max_pool(Some(&format!("features.{i}")), x, 2, 2, 0, false);
            i += 1;
            stages.push(0);
        }
    }
    // torchvision ends `features` with a max-pool that has no weights.
    x = b.max_pool(Some(&format!("features.{i}")), x, 2, 2, 0, false);
    b.end(features, x);
    let c = c.ok_or_else(|| unsupported("no convolution in features".into()))?;

    let in_f = store.shape("classifier.0.weight").map_or(c * 49, |s| s[1]);
    let side = ((in_f / c) as f64).sqrt().round() as usize;
    if side == 0 || side * side * c != in_f {
        return Err(Error::Shape {
            path: store.path().to_owned(),
            name: "classifier.0.weight".into(),
            found: store.shape("classifier.0.weight").unwrap_or(&[]).to_vec(),
            expected: format!(
                "[?, {c}·s·s] for a square avgpool output s×s (torchvision: [4096, {}])",
                c * 49
            ),
        });
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (side, side));
    let x = b.flatten(x);
    let classifier = b.begin("classifier", "Sequential");
    let (x, f) = b.linear("classifier.0", x, Some(in_f))?;
    let x = b.relu(Some("classifier.1"), x);
    let x = b.dropout("classifier.2", x);
    let (x, f) = b.linear("classifier.3", x, Some(f))?;
    let x = b.relu(Some("classifier.4"), x);
    let x = b.dropout("classifier.5", x);
    let (output, num_classes) = b.linear("classifier.6", x, Some(f))?;
    b.end(classifier, output);

    let variant = VARIANTS
        .iter()
        .find(|(_, s)| s.as_slice() == stages.as_slice())
        .map_or_else(
            || format!("vgg (custom, stages {stages:?})"),
            |(n, _)| n.to_string(),
        );
    Ok(Built {
        output,
        num_classes,
        preprocess: Some(Preprocess::imagenet("VGG*_Weights.IMAGENET1K_V1")),
        default_layer: last_relu,
        variant: if bn { format!("{variant}_bn") } else { variant },
    })
}
