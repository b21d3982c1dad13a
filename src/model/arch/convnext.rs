//! torchvision ConvNeXt tiny/small/base/large (`torchvision/models/convnext.py`): `features`
//! = stem (`Conv2dNormActivation`: 4×4 stride-4 conv with bias + LayerNorm2d), stages of
//! `CNBlock`s with a downsampling `Sequential(LayerNorm2d, 2×2 stride-2 conv)` between them;
//! `avgpool` (AdaptiveAvgPool2d(1)); `classifier` = LayerNorm2d, Flatten, Linear.
//!
//! CNBlock: `block` = depthwise 7×7 conv (padding 3, bias) → Permute([0, 2, 3, 1]) →
//! LayerNorm(C) → Linear(C, 4C) → GELU (exact) → Linear(4C, C) → Permute([0, 3, 1, 2]); then
//! `layer_scale * block(x)` (a [C, 1, 1] parameter of the CNBlock itself), `stochastic_depth`
//! (identity at inference) and `+ x`.
//!
//! From the weights: the number of stages and of blocks per stage, every width and the
//! hidden width of each block's MLP, where the downsampling layers are. From torchvision's
//! definition: strides and paddings, LayerNorm eps 1e-6 everywhere
//! (`partial(LayerNorm2d, eps=1e-6)`, `partial(nn.LayerNorm, eps=1e-6)`), exact GELU.
//! torchvision's LayerNorm2d (permute → layer_norm over C → permute) is built as one
//! LayerNorm over axis 1 of NCHW, which computes the same numbers.
//!
//! The variant is named from the stem width and depths of `_convnext`'s callers (widths
//! doubling per stage); anything else is `convnext (custom, …)`. The default Grad-CAM layer
//! is `features`. Preprocessing: the variant's IMAGENET1K_V1 weights (resize 236/230/232/232
//! for tiny/small/base/large, crop 224, bilinear;
//! tests/fixtures/families/manifests/preprocess_v1.json); a custom model gets tiny's.

use super::{Built, Filter, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;
use crate::ops::Activation;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("features.0.0.weight") && store.contains("features.1.0.layer_scale")
}

pub const VARIANT_NAMES: &[&str] = &[
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
];

/// torchvision's LayerNorm eps in ConvNeXt.
const EPS: f32 = 1e-6;

/// (name, stem width, depths, weights' transform).
const VARIANTS: [(&str, usize, [usize; 4], Preprocess); 4] = [
    (
        "convnext_tiny",
        96,
        [3, 3, 9, 3],
        Preprocess::imagenet_sized(
            "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
            236,
            224,
            Filter::Bilinear,
        ),
    ),
    (
        "convnext_small",
        96,
        [3, 3, 27, 3],
        Preprocess::imagenet_sized(
            "ConvNeXt_Small_Weights.IMAGENET1K_V1",
            230,
            224,
            Filter::Bilinear,
        ),
    ),
    (
        "convnext_base",
        128,
        [3, 3, 27, 3],
        Preprocess::imagenet_sized(
            "ConvNeXt_Base_Weights.IMAGENET1K_V1",
            232,
            224,
            Filter::Bilinear,
        ),
    ),
    (
        "convnext_large",
        192,
        [3, 3, 27, 3],
        Preprocess::imagenet_sized(
            "ConvNeXt_Large_Weights.IMAGENET1K_V1",
            232,
            224,
            Filter::Bilinear,
        ),
    ),
];

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let features = b.begin("features", "Sequential");
    let stem = b.begin("features.0", "Conv2dNormActivation");
    let spec = ConvSpec::k(4).stride(4).pad(0).bias(true);
    let (x, c) = b.conv("features.0.0", Builder::INPUT, None, spec)?;
    let mut x = b.layer_norm("features.0.1", "LayerNorm2d", x, c, 1, EPS)?;
    b.end(stem, x);
    let mut c = c;
    let mut widths = vec![];
    let mut depths = vec![];
    // Whether every MLP is 4× wide and every downsampling doubles the width.
    let mut standard = true;
    let mut i = 1;
    loop {
        let stage = format!("features.{i}");
        let depth = (0..)
            .take_while(|j| store.contains(&format!("{stage}.{j}.layer_scale")))
            .count();
        if depth == 0 {
            break;
        }
        let m = b.begin(&stage, "Sequential");
        for j in 0..depth {
            let hidden;
            (x, hidden) = cn_block(b, &format!("{stage}.{j}"), x, c)?;
            standard &= hidden == 4 * c;
        }
        b.end(m, x);
        widths.push(c);
        depths.push(depth);
        i += 1;
        let ds = format!("features.{i}");
        if !store.contains(&format!("{ds}.1.weight")) {
            break;
        }
        let m = b.begin(&ds, "Sequential");
        let v = b.layer_norm(&format!("{ds}.0"), "LayerNorm2d", x, c, 1, EPS)?;
        let spec = ConvSpec::k(2).stride(2).pad(0).bias(true);
        let (v, ch) = b.conv(&format!("{ds}.1"), v, Some(c), spec)?;
        b.end(m, v);
        standard &= ch == 2 * c;
        (x, c) = (v, ch);
        i += 1;
    }
    if depths.is_empty() {
        return Err(Error::MissingTensor {
            path: store.path().to_owned(),
            name: "features.1.0.layer_scale".into(),
            arch: b.arch.clone(),
        });
    }
    b.end(features, x);

    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let m = b.begin("classifier", "Sequential");
    let x = b.layer_norm("classifier.0", "LayerNorm2d", x, c, 1, EPS)?;
    let x = b.flatten_module("classifier.1", x);
    let (output, num_classes) = b.linear("classifier.2", x, Some(c))?;
    b.end(m, output);

    // torchvision's four stages end in the last one, without downsampling after it.
    standard &= widths.len() == 4 && widths.last() == Some(&c);
    let named = VARIANTS
        .iter()
        .find(|(_, w, d, _)| standard && widths[0] == *w && depths == d);
    let (variant, preprocess) = match named {
        Some((n, _, _, p)) => (n.to_string(), *p),
        None => (
            format!("convnext (custom, widths {widths:?}, depths {depths:?})"),
            VARIANTS[0].3,
        ),
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(preprocess),
    })
}

/// `CNBlock` of width `c`; returns its output and its MLP's hidden width.
fn cn_block(b: &mut Builder, name: &str, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "CNBlock");
    let blk = format!("{name}.block");
    let bm = b.begin(&blk, "Sequential");
    let spec = ConvSpec::k(7).groups(c).bias(true);
    let (v, _) = b.conv(&format!("{blk}.0"), x, Some(c), spec)?;
    let v = b.permute(Some(&format!("{blk}.1")), v, &[0, 2, 3, 1]);
    let v = b.layer_norm(&format!("{blk}.2"), "LayerNorm", v, c, 3, EPS)?;
    let (v, hidden) = b.linear(&format!("{blk}.3"), v, Some(c))?;
    let v = b.act(Some(&format!("{blk}.4")), "GELU", Activation::Gelu, v);
    let (v, c_out) = b.linear(&format!("{blk}.5"), v, Some(hidden))?;
    if c_out != c {
        return Err(Error::Shape {
            path: b.store.path().to_owned(),
            name: format!("{blk}.5.weight"),
            found: b
                .store
                .shape(&format!("{blk}.5.weight"))
                .unwrap_or(&[])
                .to_vec(),
            expected: format!("[{c}, {hidden}] (the block's width back)"),
        });
    }
    let v = b.permute(Some(&format!("{blk}.6")), v, &[0, 3, 1, 2]);
    b.end(bm, v);
    let v = b.scale_by_param(
        &format!("{name}.layer_scale"),
        v,
        &[Some(c), Some(1), Some(1)],
    )?;
    let v = b.identity(&format!("{name}.stochastic_depth"), "StochasticDepth", v);
    let out = b.add(v, x);
    b.end(m, out);
    Ok((out, hidden))
}
