//! torchvision MNASNet 0.5/0.75/1.0/1.3 (torchvision/models/mnasnet.py, the B1 variant): a stem
//! `layers.0-7` (3×3 s2 conv, BN, ReLU, depthwise 3×3, BN, ReLU, 1×1 conv, BN), six stacks of
//! inverted residuals `layers.8-13`, a 1×1 conv, BN, ReLU `layers.14-16`, `x.mean([2, 3])` (no
//! module) and a Dropout–Linear classifier.
//!
//! From the weights: every width (so both stems: version 2's, scaled by alpha, and the fixed
//! 32/16 stem that `MNASNet._load_from_state_dict` restores for a checkpoint saved with version 1
//! metadata and alpha != 1, which is named after its alpha like torchvision's builder that loads
//! it), the blocks per stack, the depthwise kernel sizes, the expansion (the mid width), the
//! classes. From torchvision's definition: the stacks' strides (2, 2, 2, 1, 2, 1), ReLU
//! everywhere, BatchNorm eps 1e-5 (only the momentum is changed), a residual add when a block
//! keeps its width at stride 1 (out of place), the variant names by alpha (`_get_depths`).
//!
//! Default Grad-CAM layer: `layers` (its last module, the ReLU layers.16). Preprocessing:
//! MNASNet*_Weights.IMAGENET1K_V1 from tests/fixtures/families/manifests/preprocess_v1.json
//! (resize 256 for 0.5 and 1.0, 232 for 0.75 and 1.3; crop 224; bilinear).

use super::mobilenet_v3::{count_from, kernel_of, unsupported};
use super::{Built, Filter, Preprocess};
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("layers.0.weight") && store.contains("layers.8.0.layers.0.weight")
}

pub const VARIANT_NAMES: &[&str] = &["mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3"];

/// Each stack's stride (the `_stack` calls of `MNASNet.__init__`).
const STRIDES: [usize; 6] = [2, 2, 2, 1, 2, 1];
/// Each stack's kernel, expansion and repeats in torchvision's definition.
const STACKS: [(usize, usize, usize); 6] = [
    (3, 3, 3),
    (5, 3, 3),
    (5, 6, 3),
    (3, 6, 2),
    (5, 6, 4),
    (3, 6, 1),
];

/// `_get_depths(alpha)` of each variant, and its preprocessing (resize, weights).
const VARIANTS: [(&str, [usize; 8], usize, &str); 4] = [
    (
        "mnasnet0_5",
        [16, 8, 16, 24, 40, 48, 96, 160],
        256,
        "MNASNet0_5_Weights.IMAGENET1K_V1",
    ),
    (
        "mnasnet0_75",
        [24, 16, 24, 32, 64, 72, 144, 240],
        232,
        "MNASNet0_75_Weights.IMAGENET1K_V1",
    ),
    (
        "mnasnet1_0",
        [32, 16, 24, 40, 80, 96, 192, 320],
        256,
        "MNASNet1_0_Weights.IMAGENET1K_V1",
    ),
    (
        "mnasnet1_3",
        [40, 24, 32, 56, 104, 128, 248, 416],
        232,
        "MNASNet1_3_Weights.IMAGENET1K_V1",
    ),
];

/// The fixed stem of MNASNet version 1 (`v1_stem` in `_load_from_state_dict`).
const V1_STEM: [usize; 2] = [32, 16];

fn conv_bn(
    b: &mut Builder,
    prefix: &str,
    i: usize,
    x: ValueId,
    c: usize,
    spec: ConvSpec,
) -> Result<(ValueId, usize)> {
    let (v, ch) = b.conv(&format!("{prefix}.{i}"), x, Some(c), spec)?;
    Ok((b.batch_norm(&format!("{prefix}.{}", i + 1), v, ch)?, ch))
}

/// `_InvertedResidual`: 1×1 expand, BN, ReLU, depthwise k×k (stride), BN, ReLU, 1×1, BN.
fn inverted_residual(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    stride: usize,
) -> Result<(ValueId, usize, usize, usize)> {
    let m = b.begin(name, "_InvertedResidual");
    let seq = format!("{name}.layers");
    let sm = b.begin(&seq, "Sequential");
    let (v, mid) = conv_bn(b, &seq, 0, x, c, ConvSpec::k(1))?;
    let v = b.relu(Some(&format!("{seq}.2")), v);
    let k = kernel_of(b, &format!("{seq}.3"))?;
    let spec = ConvSpec::k(k).stride(stride).groups(mid);
    let (v, _) = conv_bn(b, &seq, 3, v, mid, spec)?;
    let v = b.relu(Some(&format!("{seq}.5")), v);
    let (v, out) = conv_bn(b, &seq, 6, v, mid, ConvSpec::k(1))?;
    b.end(sm, v);
    let y = if stride == 1 && c == out {
        b.add(v, x)
    } else {
        v
    };
    b.end(m, y);
    Ok((y, out, k, mid))
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let stacks = count_from(store, 8, |s| format!("layers.{s}.0.layers.0.weight"));
    if stacks != STRIDES.len() {
        return Err(unsupported(
            store,
            format!(
                "mnasnet with {stacks} stacks of inverted residuals (layers.8..): torchvision's \
                 has 6, and their strides are only known from its definition"
            ),
        ));
    }
    let layers = b.begin("layers", "Sequential");
    let (x, d0) = b.conv("layers.0", Builder::INPUT, None, ConvSpec::k(3).stride(2))?;
    let x = b.batch_norm("layers.1", x, d0)?;
    let x = b.relu(Some("layers.2"), x);
    let (x, _) = b.conv("layers.3", x, Some(d0), ConvSpec::k(3).groups(d0))?;
    let x = b.batch_norm("layers.4", x, d0)?;
    let x = b.relu(Some("layers.5"), x);
    let (x, d1) = b.conv("layers.6", x, Some(d0), ConvSpec::k(1))?;
    let mut x = b.batch_norm("layers.7", x, d1)?;
    let mut c = d1;
    let mut depths = vec![d0, d1];
    let mut standard_stacks = true;
    for (s, &stride) in STRIDES.iter().enumerate() {
        let name = format!("layers.{}", s + 8);
        let repeats = count_from(store, 0, |r| format!("{name}.{r}.layers.0.weight"));
        let m = b.begin(&name, "Sequential");
        for r in 0..repeats {
            let c_in = c;
            let (y, out, k, mid) = inverted_residual(
                b,
                &format!("{name}.{r}"),
                x,
                c,
                if r == 0 { stride } else { 1 },
            )?;
            let (k0, t, n) = STACKS[s];
            standard_stacks &= k == k0 && mid == c_in * t && repeats == n;
            (x, c) = (y, out);
        }
        b.end(m, x);
        depths.push(c);
    }
    let (x, last) = b.conv("layers.14", x, Some(c), ConvSpec::k(1))?;
    let x = b.batch_norm("layers.15", x, last)?;
    let x = b.relu(Some("layers.16"), x);
    b.end(layers, x);
    let x = b.mean_hw(x);
    let classifier = b.begin("classifier", "Sequential");
    let x = b.dropout("classifier.0", x);
    let (output, num_classes) = b.linear("classifier.1", x, Some(last))?;
    b.end(classifier, output);

    let found = VARIANTS.iter().find(|(_, d, _, _)| {
        standard_stacks
            && last == 1280
            && d[2..] == depths[2..]
            && (d[..2] == depths[..2] || depths[..2] == V1_STEM)
    });
    let (variant, preprocess) = match found {
        Some(&(name, _, resize, weights)) => (
            name.to_owned(),
            Preprocess::imagenet_sized(weights, resize, 224, Filter::Bilinear),
        ),
        None => (
            format!("mnasnet (custom, depths {depths:?}, last {last})"),
            Preprocess::imagenet("MNASNet1_0_Weights.IMAGENET1K_V1"),
        ),
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "layers".into(),
        variant,
        preprocess: Some(preprocess),
    })
}
