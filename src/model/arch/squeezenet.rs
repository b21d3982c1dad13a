//! torchvision SqueezeNet 1.0 and 1.1 (torchvision/models/squeezenet.py, `SqueezeNet`, `Fire`):
//! a biased stem conv, ReLU, then Fire modules (1×1 squeeze, ReLU, then 1×1 and 3×3 expands
//! with their ReLUs, concatenated) and MaxPool2d(3, 2, ceil_mode=True) pools; the classifier
//! is Dropout, a 1×1 conv to the classes, ReLU and AdaptiveAvgPool2d(1), flattened.
//!
//! From the weights: every width, the stem's kernel (7 for 1.0, 3 for 1.1; checked against
//! the version's), and which `features` indices hold Fire modules (the gaps are the pools).
//! From torchvision's definition: the stem stride 2 without padding, the 3×3 expand's padding
//! 1, the pools' 3/2 and ceil_mode. Variant: 1.0 or 1.1 from the stem kernel and the Fire
//! positions, named when every width is torchvision's. The default Grad-CAM layer is
//! `features` (the last Fire's concatenation). Preprocessing: SqueezeNet1_0_Weights /
//! SqueezeNet1_1_Weights.IMAGENET1K_V1 (resize 256, crop 224, bilinear;
//! tests/fixtures/families/manifests/preprocess_v1.json).

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &["squeezenet1_0", "squeezenet1_1"];

/// A version's stem (kernel, width), Fire indices and (squeeze, expand1x1, expand3x3) widths.
struct Version {
    name: &'static str,
    stem: (usize, usize),
    fires: [usize; 8],
    widths: [(usize, usize, usize); 8],
}

const WIDTHS: [(usize, usize, usize); 8] = [
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
];

const VERSIONS: [Version; 2] = [
    Version {
        name: "squeezenet1_0",
        stem: (7, 96),
        fires: [3, 4, 5, 7, 8, 9, 10, 12],
        widths: WIDTHS,
    },
    Version {
        name: "squeezenet1_1",
        stem: (3, 64),
        fires: [3, 4, 6, 7, 9, 10, 11, 12],
        widths: WIDTHS,
    },
];

fn stem_kernel(store: &WeightStore) -> Option<usize> {
    store
        .shape("features.0.weight")
        .filter(|s| s.len() == 4 && s[2] == s[3])
        .map(|s| s[2])
}

pub fn matches(store: &WeightStore) -> bool {
    stem_kernel(store).is_some()
        && store.contains("features.3.squeeze.weight")
        && store
            .shape("classifier.1.weight")
            .is_some_and(|s| s.len() == 4)
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let unsupported = |reason: String| Error::UnknownArch {
        path: store.path().to_owned(),
        reason,
        known: super::known().join(", "),
    };
    let k = stem_kernel(store)
        .ok_or_else(|| unsupported("features.0.weight is not a square conv kernel".into()))?;
    let version = VERSIONS.iter().find(|v| v.stem.0 == k).ok_or_else(|| {
        unsupported(format!(
            "squeezenet's stem kernel is 7 (1.0) or 3 (1.1), not {k}"
        ))
    })?;
    let is_fire = |i: usize| store.contains(&format!("features.{i}.squeeze.weight"));
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

    let features = b.begin("features", "Sequential");
    let (x, stem) = b.conv(
        "features.0",
        Builder::INPUT,
        None,
        ConvSpec::k(k).stride(2).pad(0).bias(true),
    )?;
    let x = b.relu(Some("features.1"), x);
    let mut x = b.max_pool(Some("features.2"), x, 3, 2, 0, true);
    let mut c = stem;
    let mut fires = vec![];
    let mut widths = vec![];
    for i in 3..=last {
        if is_fire(i) {
            let w;
            (x, c, w) = fire(b, &format!("features.{i}"), x, c)?;
            fires.push(i);
            widths.push(w);
        } else if is_fire(i - 1) && is_fire(i + 1) {
            x = b.max_pool(Some(&format!("features.{i}")), x, 3, 2, 0, true);
        } else {
            return Err(unsupported(format!(
                "features.{i} is neither a Fire module nor a max-pool between two"
            )));
        }
    }
    b.end(features, x);

    let classifier = b.begin("classifier", "Sequential");
    let x = b.dropout("classifier.0", x);
    let (x, num_classes) = b.conv("classifier.1", x, Some(c), ConvSpec::k(1).bias(true))?;
    let x = b.relu(Some("classifier.2"), x);
    let x = b.adaptive_avg_pool(Some("classifier.3"), x, (1, 1));
    b.end(classifier, x);
    let output = b.flatten(x);

    let named = fires == version.fires && widths == version.widths && stem == version.stem.1;
    let variant = if named {
        version.name.to_string()
    } else {
        let layout = version.name.trim_start_matches("squeezenet");
        format!(
            "squeezenet (custom, {layout} stem, {stem} wide, Fire at {fires:?}, widths {widths:?})"
        )
    };
    let weights = match version.name {
        "squeezenet1_0" => "SqueezeNet1_0_Weights.IMAGENET1K_V1",
        _ => "SqueezeNet1_1_Weights.IMAGENET1K_V1",
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(Preprocess::imagenet(weights)),
    })
}

/// A Fire module: returns its output, its channels (expand1x1 + expand3x3) and its widths.
fn fire(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
) -> Result<(ValueId, usize, (usize, usize, usize))> {
    let m = b.begin(name, "Fire");
    let (v, s) = b.conv(
        &format!("{name}.squeeze"),
        x,
        Some(c),
        ConvSpec::k(1).bias(true),
    )?;
    let v = b.relu(Some(&format!("{name}.squeeze_activation")), v);
    let (e1, c1) = b.conv(
        &format!("{name}.expand1x1"),
        v,
        Some(s),
        ConvSpec::k(1).bias(true),
    )?;
    let e1 = b.relu(Some(&format!("{name}.expand1x1_activation")), e1);
    let (e3, c3) = b.conv(
        &format!("{name}.expand3x3"),
        v,
        Some(s),
        ConvSpec::k(3).pad(1).bias(true),
    )?;
    let e3 = b.relu(Some(&format!("{name}.expand3x3_activation")), e3);
    let out = b.concat(vec![e1, e3], 1);
    b.end(m, out);
    Ok((out, c1 + c3, (s, c1, c3)))
}
