//! torchvision MobileNetV3 small and large (torchvision/models/mobilenetv3.py): a Hardswish
//! stem, inverted-residual blocks (`features.1..N`), a Hardswish 1×1 conv, a global pool and a
//! Linear–Hardswish–Dropout–Linear classifier.
//!
//! From the weights: every width (stem, expanded, SE squeeze from fc1's shape, output, last
//! conv, classifier), each block's depthwise kernel size, whether it has an expansion conv and
//! an SE layer, the classes. From torchvision's definition (`_mobilenet_v3_conf`, which the
//! weights cannot carry): each block's stride and activation (ReLU "RE" or Hardswish "HS"),
//! taken by block index from the small (11 blocks) or large (15 blocks) table, so any
//! `width_mult` / `reduced_tail` of the two layouts loads; BatchNorm eps 1e-3 (MobileNetV3's
//! `norm_layer`); SE with ReLU and Hardsigmoid (`SqueezeExcitation` of torchvision/ops/misc.py);
//! a residual add when the stride is 1 and the block keeps its width. The `dilated=True`
//! segmentation backbones (stride 1, dilation 2 in the last stage) have the same tensors and are
//! not told apart: they load as the classification layout.
//!
//! Default Grad-CAM layer: `features` (its last Conv2dNormActivation). Preprocessing:
//! MobileNet_V3_{Small,Large}_Weights.IMAGENET1K_V1 (resize 256, crop 224, bilinear), from
//! tests/fixtures/families/manifests/preprocess_v1.json.
//!
//! The helpers shared with the other mobile families (Conv2dNormActivation and
//! SqueezeExcitation of torchvision/ops/misc.py) live here.

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;
use crate::ops::{Activation, BinaryOp};

pub fn matches(store: &WeightStore) -> bool {
    store.contains("features.1.block.0.0.weight") && store.contains("classifier.3.weight")
}

pub const VARIANT_NAMES: &[&str] = &["mobilenet_v3_small", "mobilenet_v3_large"];

/// An activation module: its PyTorch class and the op.
pub(super) type Act = (&'static str, Activation);
pub(super) const RELU: Act = ("ReLU", Activation::Relu);
pub(super) const RELU6: Act = ("ReLU6", Activation::Relu6);
pub(super) const HARDSWISH: Act = ("Hardswish", Activation::Hardswish);
pub(super) const HARDSIGMOID: Act = ("Hardsigmoid", Activation::Hardsigmoid);
pub(super) const SILU: Act = ("SiLU", Activation::Silu);
pub(super) const SIGMOID: Act = ("Sigmoid", Activation::Sigmoid);

/// The "cannot load" error of the mobile families.
pub(super) fn unsupported(store: &WeightStore, reason: String) -> Error {
    Error::UnknownArch {
        path: store.path().to_owned(),
        reason,
        known: super::known().join(", "),
    }
}

/// The shape of `name`, or the error naming it as missing.
pub(super) fn shape_of<'s>(store: &'s WeightStore, name: &str, arch: &str) -> Result<&'s [usize]> {
    store.shape(name).ok_or_else(|| Error::MissingTensor {
        path: store.path().to_owned(),
        name: name.to_owned(),
        arch: arch.to_owned(),
    })
}

/// How many of `pattern(start)`, `pattern(start + 1)`, … are present, stopping at the first gap.
pub(super) fn count_from(
    store: &WeightStore,
    start: usize,
    pattern: impl Fn(usize) -> String,
) -> usize {
    (start..)
        .take_while(|&i| store.contains(&pattern(i)))
        .count()
}

/// torchvision's `_make_divisible(v, divisor)` (torchvision/models/_utils.py): the nearest
/// multiple of `divisor`, at least `divisor`, rounded up when rounding down loses over 10%.
pub(super) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let new = divisor.max(((v + d / 2.0) as usize) / divisor * divisor);
    if (new as f64) < 0.9 * v {
        new + divisor
    } else {
        new
    }
}

/// torchvision's `Conv2dNormActivation`: `name.0` Conv2d (no bias, padding (k-1)/2),
/// `name.1` BatchNorm2d with the builder's eps, `name.2` the activation if any.
pub(super) fn conv_norm_act(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c_in: Option<usize>,
    spec: ConvSpec,
    act: Option<Act>,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "Conv2dNormActivation");
    let (v, c) = b.conv(&format!("{name}.0"), x, c_in, spec)?;
    let mut v = b.batch_norm(&format!("{name}.1"), v, c)?;
    if let Some((kind, a)) = act {
        v = b.act(Some(&format!("{name}.2")), kind, a, v);
    }
    b.end(m, v);
    Ok((v, c))
}

/// The kernel size of the square conv `name` (its weight's last dimension).
pub(super) fn kernel_of(b: &Builder, name: &str) -> Result<usize> {
    Ok(shape_of(b.store, &format!("{name}.weight"), &b.arch)?
        .last()
        .copied()
        .unwrap_or(1))
}

/// A depthwise k×k Conv2dNormActivation over `c` channels, k read from the weights.
pub(super) fn depthwise(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    stride: usize,
    act: Act,
) -> Result<(ValueId, usize)> {
    let k = kernel_of(b, &format!("{name}.0"))?;
    conv_norm_act(
        b,
        name,
        x,
        Some(c),
        ConvSpec::k(k).stride(stride).groups(c),
        Some(act),
    )
}

/// torchvision's `SqueezeExcitation` (ops/misc.py): avgpool, fc1 (1×1 conv with bias, squeeze
/// channels from its weight), activation, fc2, scale_activation; `scale * input`. Its modules
/// are registered avgpool, fc1, fc2, activation, scale_activation.
pub(super) fn squeeze_excitation(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    act: Act,
    gate: Act,
) -> Result<ValueId> {
    let m = b.begin(name, "SqueezeExcitation");
    let s = b.adaptive_avg_pool(Some(&format!("{name}.avgpool")), x, (1, 1));
    let fc1 = format!("{name}.fc1");
    let (s, squeeze) = b.conv(&fc1, s, Some(c), ConvSpec::k(1).bias(true))?;
    let act_name = format!("{name}.activation");
    let s = b.act(Some(&act_name), act.0, act.1, s);
    let fc2 = format!("{name}.fc2");
    let (s, back) = b.conv(&fc2, s, Some(squeeze), ConvSpec::k(1).bias(true))?;
    if back != c {
        return Err(unsupported(
            b.store,
            format!("{fc2} gives {back} channels to scale the {c} of its input"),
        ));
    }
    let s = b.act(Some(&format!("{name}.scale_activation")), gate.0, gate.1, s);
    let y = b.binary(BinaryOp::Mul, s, x);
    b.end(m, y);
    b.list_after(&act_name, &fc2);
    Ok(y)
}

/// One row of torchvision's `_mobilenet_v3_conf` at width_mult 1: input, kernel, expanded,
/// output, SE, Hardswish ("HS", else ReLU), stride.
type Row = (usize, usize, usize, usize, bool, bool, usize);

const LARGE: [Row; 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

const SMALL: [Row; 11] = [
    (16, 3, 16, 16, true, false, 2),
    (16, 3, 72, 24, false, false, 2),
    (24, 3, 88, 24, false, false, 1),
    (24, 5, 96, 40, true, true, 2),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 120, 48, true, true, 1),
    (48, 5, 144, 48, true, true, 1),
    (48, 5, 288, 96, true, true, 2),
    (96, 5, 576, 96, true, true, 1),
    (96, 5, 576, 96, true, true, 1),
];

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let n = count_from(store, 1, |i| format!("features.{i}.block.0.0.weight"));
    let (layout, table, last_channel): (&str, &[Row], usize) = match n {
        11 => ("small", &SMALL, 1024),
        15 => ("large", &LARGE, 1280),
        _ => {
            let why = format!(
                "mobilenet_v3 with {n} inverted-residual blocks: torchvision's small layout has 11 \
                 and its large 15, and the blocks' strides and activations are only known from \
                 those tables"
            );
            return Err(unsupported(store, why));
        }
    };
    b.bn_eps = 1e-3;

    let features = b.begin("features", "Sequential");
    let (mut x, mut c) = conv_norm_act(
        b,
        "features.0",
        Builder::INPUT,
        None,
        ConvSpec::k(3).stride(2),
        Some(HARDSWISH),
    )?;
    let mut standard = c == table[0].0;
    let mut outs = vec![];
    for (i, row) in table.iter().enumerate() {
        let &(_, _, _, _, _, hs, stride) = row;
        let act = if hs { HARDSWISH } else { RELU };
        let name = format!("features.{}", i + 1);
        let m = b.begin(&name, "InvertedResidual");
        let seq = format!("{name}.block");
        let sm = b.begin(&seq, "Sequential");
        let entries = count_from(store, 0, |j| {
            let e = format!("{seq}.{j}");
            if store.contains(&format!("{e}.fc1.weight")) {
                format!("{e}.fc1.weight")
            } else {
                format!("{e}.0.weight")
            }
        });
        let se = (0..entries).any(|j| store.contains(&format!("{seq}.{j}.fc1.weight")));
        let expand = entries == 3 + se as usize;
        let mut j = 0;
        let mut v = x;
        let mut e = c;
        if expand {
            (v, e) = conv_norm_act(
                b,
                &format!("{seq}.0"),
                v,
                Some(c),
                ConvSpec::k(1),
                Some(act),
            )?;
            j += 1;
        }
        let k = kernel_of(b, &format!("{seq}.{j}.0"))?;
        (v, _) = depthwise(b, &format!("{seq}.{j}"), v, e, stride, act)?;
        j += 1;
        if se {
            v = squeeze_excitation(b, &format!("{seq}.{j}"), v, e, RELU, HARDSIGMOID)?;
            j += 1;
        }
        let (v, out) = conv_norm_act(b, &format!("{seq}.{j}"), v, Some(e), ConvSpec::k(1), None)?;
        b.end(sm, v);
        let y = if stride == 1 && c == out {
            b.add(v, x)
        } else {
            v
        };
        b.end(m, y);
        standard &= *row == (c, k, e, out, se, hs, stride);
        outs.push(out);
        (x, c) = (y, out);
    }
    let (x, c) = conv_norm_act(
        b,
        &format!("features.{}", n + 1),
        x,
        Some(c),
        ConvSpec::k(1),
        Some(HARDSWISH),
    )?;
    b.end(features, x);

    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let classifier = b.begin("classifier", "Sequential");
    let (x, hidden) = b.linear("classifier.0", x, Some(c))?;
    let x = b.act(Some("classifier.1"), HARDSWISH.0, HARDSWISH.1, x);
    let x = b.dropout("classifier.2", x);
    let (output, num_classes) = b.linear("classifier.3", x, Some(hidden))?;
    b.end(classifier, output);
    standard &= hidden == last_channel && c == 6 * table[table.len() - 1].3;

    let variant = if standard {
        format!("mobilenet_v3_{layout}")
    } else {
        format!("mobilenet_v3 (custom, {layout} layout, block widths {outs:?}, last {hidden})")
    };
    let weights = if layout == "small" {
        "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    } else {
        "MobileNet_V3_Large_Weights.IMAGENET1K_V1"
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(Preprocess::imagenet(weights)),
    })
}
