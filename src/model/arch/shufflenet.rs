//! torchvision ShuffleNet V2 x0.5/x1.0/x1.5/x2.0 (`torchvision/models/shufflenetv2.py`):
//! `conv1` (3×3 stride-2 conv, BatchNorm, ReLU), `maxpool` (3, stride 2, padding 1), three
//! stages of `InvertedResidual` blocks, `conv5` (1×1 conv, BatchNorm, ReLU), `x.mean([2, 3])`
//! and `fc`.
//!
//! From the weights: the number of stages' blocks and every width (stage output widths from
//! each branch's last 1×1 conv, `conv1`'s and `conv5`'s from theirs), and which blocks have
//! a `branch1` (those with stride 2, the first of each stage in torchvision). From
//! torchvision's definition: a stride-2 block is `cat(branch1(x), branch2(x))`, a stride-1
//! block `x1, x2 = x.chunk(2, 1)`, `cat(x1, branch2(x2))` (its empty `branch1` Sequential is
//! never called and so not listed); then `channel_shuffle(out, 2)`. branch1 = depthwise 3×3
//! stride 2 + BN, 1×1 + BN + ReLU; branch2 = 1×1 + BN + ReLU, depthwise 3×3 (stride) + BN,
//! 1×1 + BN + ReLU; biasless convs, padding 1 on the 3×3s, BatchNorm eps 1e-5.
//!
//! The variant is named from stage repeats [4, 8, 4] and the stage widths of
//! `_shufflenetv2`'s callers; anything else is `shufflenet_v2 (custom, …)`. The default
//! Grad-CAM layer is `conv5`. Preprocessing: the variant's IMAGENET1K_V1 weights (resize 256
//! for x0.5/x1.0, 232 for x1.5/x2.0, crop 224, bilinear;
//! tests/fixtures/families/manifests/preprocess_v1.json); a custom model gets x0.5's.

use super::{Built, Filter, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("conv1.0.weight")
        && store.contains("stage2.0.branch1.0.weight")
        && store.contains("stage2.0.branch2.0.weight")
}

pub const VARIANT_NAMES: &[&str] = &[
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
];

const REPEATS: [usize; 3] = [4, 8, 4];

/// (name, stages_out_channels, weights' transform).
const VARIANTS: [(&str, [usize; 5], Preprocess); 4] = [
    (
        "shufflenet_v2_x0_5",
        [24, 48, 96, 192, 1024],
        Preprocess::imagenet("ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1"),
    ),
    (
        "shufflenet_v2_x1_0",
        [24, 116, 232, 464, 1024],
        Preprocess::imagenet("ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1"),
    ),
    (
        "shufflenet_v2_x1_5",
        [24, 176, 352, 704, 1024],
        Preprocess::imagenet_sized(
            "ShuffleNet_V2_X1_5_Weights.IMAGENET1K_V1",
            232,
            224,
            Filter::Bilinear,
        ),
    ),
    (
        "shufflenet_v2_x2_0",
        [24, 244, 488, 976, 2048],
        Preprocess::imagenet_sized(
            "ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1",
            232,
            224,
            Filter::Bilinear,
        ),
    ),
];

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let m = b.begin("conv1", "Sequential");
    let (x, c) = b.conv("conv1.0", Builder::INPUT, None, ConvSpec::k(3).stride(2))?;
    let x = b.batch_norm("conv1.1", x, c)?;
    let x = b.relu(Some("conv1.2"), x);
    b.end(m, x);
    let mut x = b.max_pool(Some("maxpool"), x, 3, 2, 1, false);
    let mut c = c;
    let mut widths = vec![c];
    let mut repeats = vec![];
    // Whether branch1 is exactly in the first block of each stage, as torchvision builds it.
    let mut standard_strides = true;
    for s in 2..=4 {
        let stage = format!("stage{s}");
        let depth = (0..)
            .take_while(|i| store.contains(&format!("{stage}.{i}.branch2.0.weight")))
            .count();
        if depth == 0 {
            return Err(Error::MissingTensor {
                path: store.path().to_owned(),
                name: format!("{stage}.0.branch2.0.weight"),
                arch: b.arch.clone(),
            });
        }
        let m = b.begin(&stage, "Sequential");
        for i in 0..depth {
            let name = format!("{stage}.{i}");
            let down = store.contains(&format!("{name}.branch1.0.weight"));
            standard_strides &= down == (i == 0);
            (x, c) = inverted_residual(b, &name, x, c, down)?;
        }
        b.end(m, x);
        widths.push(c);
        repeats.push(depth);
    }
    let m = b.begin("conv5", "Sequential");
    let (v, c5) = b.conv("conv5.0", x, Some(c), ConvSpec::k(1))?;
    let v = b.batch_norm("conv5.1", v, c5)?;
    let x = b.relu(Some("conv5.2"), v);
    b.end(m, x);
    widths.push(c5);
    let x = b.mean_hw(x);
    let (output, num_classes) = b.linear("fc", x, Some(c5))?;

    let named = VARIANTS
        .iter()
        .find(|(_, w, _)| standard_strides && repeats == REPEATS && widths == w);
    let (variant, preprocess) = match named {
        Some((n, _, p)) => (n.to_string(), *p),
        None => (
            format!("shufflenet_v2 (custom, repeats {repeats:?}, widths {widths:?})"),
            VARIANTS[0].2,
        ),
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "conv5".into(),
        variant,
        preprocess: Some(preprocess),
    })
}

/// A depthwise 3×3 conv + BatchNorm at `seq`.`i`, `seq`.`i+1`.
fn dw_bn(
    b: &mut Builder,
    seq: &str,
    i: usize,
    x: ValueId,
    c: usize,
    stride: usize,
) -> Result<ValueId> {
    let spec = ConvSpec::k(3).stride(stride).groups(c);
    let (v, ch) = b.conv(&format!("{seq}.{i}"), x, Some(c), spec)?;
    b.batch_norm(&format!("{seq}.{}", i + 1), v, ch)
}

/// A 1×1 conv + BatchNorm at `seq`.`i`, `seq`.`i+1`.
fn pw_bn(b: &mut Builder, seq: &str, i: usize, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let (v, ch) = b.conv(&format!("{seq}.{i}"), x, Some(c), ConvSpec::k(1))?;
    Ok((b.batch_norm(&format!("{seq}.{}", i + 1), v, ch)?, ch))
}

/// `InvertedResidual`: stride 2 (`down`, with branch1) or 1.
fn inverted_residual(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    down: bool,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "InvertedResidual");
    let stride = if down { 2 } else { 1 };
    let (left, c_left, x2, c2) = if down {
        let br1 = format!("{name}.branch1");
        let bm = b.begin(&br1, "Sequential");
        let v = dw_bn(b, &br1, 0, x, c, stride)?;
        let (v, ch) = pw_bn(b, &br1, 2, v, c)?;
        let v = b.relu(Some(&format!("{br1}.4")), v);
        b.end(bm, v);
        (v, ch, x, c)
    } else {
        if !c.is_multiple_of(2) {
            return Err(Error::UnknownArch {
                path: b.store.path().to_owned(),
                reason: format!("{name}: a stride-1 block splits its {c} input channels in two"),
                known: super::known().join(", "),
            });
        }
        let halves = b.chunk(x, 2, 1, c);
        (halves[0], c / 2, halves[1], c / 2)
    };
    let br2 = format!("{name}.branch2");
    let bm = b.begin(&br2, "Sequential");
    let (v, ch) = pw_bn(b, &br2, 0, x2, c2)?;
    let v = b.relu(Some(&format!("{br2}.2")), v);
    let v = dw_bn(b, &br2, 3, v, ch, stride)?;
    let (v, ch) = pw_bn(b, &br2, 5, v, ch)?;
    let right = b.relu(Some(&format!("{br2}.7")), v);
    b.end(bm, right);
    let cat = b.concat(vec![left, right], 1);
    let out = b.channel_shuffle(cat, 2);
    b.end(m, out);
    Ok((out, c_left + ch))
}
