//! torchvision RegNet X and Y (`torchvision/models/regnet.py`): `SimpleStemIN` (3×3 stride-2
//! conv, BatchNorm, ReLU), four `AnyStage`s of `ResBottleneckBlock`s in `trunk_output`, then
//! `avgpool` (AdaptiveAvgPool2d (1, 1)), `x.flatten(start_dim=1)` and `fc`.
//!
//! From the weights: the stem width, the number of stages and of blocks per stage, every width
//! (the bottleneck width `w_b` from `f.a`, the output width from `f.c`), the group count of
//! each grouped 3×3 conv (`w_b` over the weight's input channels per group), whether a block
//! has a projection shortcut (`proj`) and whether it has Squeeze-and-Excitation (`f.se`,
//! which makes it RegNet Y) with its squeeze width. From torchvision's definition: the stride
//! 2 of every stage's first block (`BlockParams.from_init_params`: `STRIDE = 2`), padding
//! `(k - 1) / 2` of `Conv2dNormActivation`, biasless convs before BatchNorm (eps 1e-5, see
//! `_regnet`'s `norm_layer`), ReLU everywhere, the SE gate `x · sigmoid(fc2(relu(fc1(avgpool
//! x))))` (`ops/misc.py::SqueezeExcitation`, whose children register fc2 before its
//! activation), and `activation(proj(x) + f(x))` (or `x + f(x)`).
//!
//! The variant is named from depths, widths, group widths, stem width and SE ratio 0.25
//! (tests/fixtures/families/facts.json); anything else is `regnet_x (custom, …)`. The default
//! Grad-CAM layer is `trunk_output`. Preprocessing: each variant's IMAGENET1K_V1 weights
//! (resize 256, crop 224, bilinear), except regnet_y_128gf, which has only
//! IMAGENET1K_SWAG_E2E_V1 (resize 384, crop 384, bicubic)
//! (tests/fixtures/families/manifests/preprocess_v1.json); a custom model gets the V1 one.

use super::{Built, Filter, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;
use crate::ops::{Activation, BinaryOp};

const FIRST_BLOCK: &str = "trunk_output.block1.block1-0";

fn is_regnet(store: &WeightStore) -> bool {
    store.contains("stem.0.weight") && store.contains(&format!("{FIRST_BLOCK}.f.a.0.weight"))
}

fn has_se(store: &WeightStore) -> bool {
    store.contains(&format!("{FIRST_BLOCK}.f.se.fc1.weight"))
}

/// RegNet X: no Squeeze-and-Excitation.
pub fn matches_x(store: &WeightStore) -> bool {
    is_regnet(store) && !has_se(store)
}

/// RegNet Y: Squeeze-and-Excitation in every block.
pub fn matches_y(store: &WeightStore) -> bool {
    is_regnet(store) && has_se(store)
}

pub const VARIANT_NAMES_X: &[&str] = &[
    "regnet_x_400mf",
    "regnet_x_800mf",
    "regnet_x_1_6gf",
    "regnet_x_3_2gf",
    "regnet_x_8gf",
    "regnet_x_16gf",
    "regnet_x_32gf",
];

pub const VARIANT_NAMES_Y: &[&str] = &[
    "regnet_y_400mf",
    "regnet_y_800mf",
    "regnet_y_1_6gf",
    "regnet_y_3_2gf",
    "regnet_y_8gf",
    "regnet_y_16gf",
    "regnet_y_32gf",
    "regnet_y_128gf",
];

/// One torchvision variant: its name, whether it has SE, depths, widths and group widths per
/// stage (all with stem width 32 and bottleneck multiplier 1), and its weights' transform.
struct Variant {
    name: &'static str,
    se: bool,
    depths: [usize; 4],
    widths: [usize; 4],
    group_widths: [usize; 4],
    preprocess: Preprocess,
}

const fn v(
    name: &'static str,
    se: bool,
    depths: [usize; 4],
    widths: [usize; 4],
    group_widths: [usize; 4],
    weights: &'static str,
) -> Variant {
    Variant {
        name,
        se,
        depths,
        widths,
        group_widths,
        preprocess: Preprocess::imagenet(weights),
    }
}

/// torchvision's regnet_* builders, through `BlockParams.from_init_params` (the values are
/// those facts.json records).
const VARIANTS: [Variant; 15] = [
    v(
        "regnet_x_400mf",
        false,
        [1, 2, 7, 12],
        [32, 64, 160, 400],
        [16; 4],
        "RegNet_X_400MF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_800mf",
        false,
        [1, 3, 7, 5],
        [64, 128, 288, 672],
        [16; 4],
        "RegNet_X_800MF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_1_6gf",
        false,
        [2, 4, 10, 2],
        [72, 168, 408, 912],
        [24; 4],
        "RegNet_X_1_6GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_3_2gf",
        false,
        [2, 6, 15, 2],
        [96, 192, 432, 1008],
        [48; 4],
        "RegNet_X_3_2GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_8gf",
        false,
        [2, 5, 15, 1],
        [80, 240, 720, 1920],
        [80, 120, 120, 120],
        "RegNet_X_8GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_16gf",
        false,
        [2, 6, 13, 1],
        [256, 512, 896, 2048],
        [128; 4],
        "RegNet_X_16GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_x_32gf",
        false,
        [2, 7, 13, 1],
        [336, 672, 1344, 2520],
        [168; 4],
        "RegNet_X_32GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_400mf",
        true,
        [1, 3, 6, 6],
        [48, 104, 208, 440],
        [8; 4],
        "RegNet_Y_400MF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_800mf",
        true,
        [1, 3, 8, 2],
        [64, 144, 320, 784],
        [16; 4],
        "RegNet_Y_800MF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_1_6gf",
        true,
        [2, 6, 17, 2],
        [48, 120, 336, 888],
        [24; 4],
        "RegNet_Y_1_6GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_3_2gf",
        true,
        [2, 5, 13, 1],
        [72, 216, 576, 1512],
        [24; 4],
        "RegNet_Y_3_2GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_8gf",
        true,
        [2, 4, 10, 1],
        [224, 448, 896, 2016],
        [56; 4],
        "RegNet_Y_8GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_16gf",
        true,
        [2, 4, 11, 1],
        [224, 448, 1232, 3024],
        [112; 4],
        "RegNet_Y_16GF_Weights.IMAGENET1K_V1",
    ),
    v(
        "regnet_y_32gf",
        true,
        [2, 5, 12, 1],
        [232, 696, 1392, 3712],
        [232; 4],
        "RegNet_Y_32GF_Weights.IMAGENET1K_V1",
    ),
    Variant {
        name: "regnet_y_128gf",
        se: true,
        depths: [2, 7, 17, 1],
        widths: [528, 1056, 2904, 7392],
        group_widths: [264; 4],
        // The only ImageNet weights of regnet_y_128gf are SWAG ones.
        preprocess: Preprocess::imagenet_sized(
            "RegNet_Y_128GF_Weights.IMAGENET1K_SWAG_E2E_V1",
            384,
            384,
            Filter::Bicubic,
        ),
    },
];

/// torchvision's stem width.
const STEM_WIDTH: usize = 32;

/// What the weights say about one stage (from its first block).
#[derive(Debug)]
struct Stage {
    depth: usize,
    width: usize,
    bottleneck: usize,
    group_width: usize,
}

/// `int(round(0.25 * w))` with Python's round half to even: the squeeze width of SE ratio 0.25.
fn quarter(w: usize) -> usize {
    let (q, r) = (w / 4, w % 4);
    match r {
        0 | 1 => q,
        2 => q + (q % 2),
        _ => q + 1,
    }
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let se = has_se(store);
    let family = if se { "regnet_y" } else { "regnet_x" };

    let stem = b.begin("stem", "SimpleStemIN");
    let (x, c) = b.conv("stem.0", Builder::INPUT, None, ConvSpec::k(3).stride(2))?;
    let x = b.batch_norm("stem.1", x, c)?;
    let mut x = b.relu(Some("stem.2"), x);
    b.end(stem, x);
    let stem_width = c;

    let mut c = c;
    let mut stages: Vec<Stage> = vec![];
    // Whether every SE squeeze width is round(0.25 · block input width), as torchvision's.
    let mut se_standard = true;
    let trunk = b.begin("trunk_output", "Sequential");
    for s in 1.. {
        let stage = format!("trunk_output.block{s}");
        let block = |i: usize| format!("{stage}.block{s}-{i}");
        let depth = (0..)
            .take_while(|&i| store.contains(&format!("{}.f.a.0.weight", block(i))))
            .count();
        if depth == 0 {
            break;
        }
        let m = b.begin(&stage, "AnyStage");
        let mut first = None;
        for i in 0..depth {
            let stride = if i == 0 { 2 } else { 1 };
            let out = res_bottleneck_block(b, &block(i), x, c, stride)?;
            se_standard &= out.squeeze.is_none_or(|sq| sq == quarter(c));
            x = out.value;
            c = out.width;
            first.get_or_insert(Stage {
                depth,
                width: out.width,
                bottleneck: out.bottleneck,
                group_width: out.group_width,
            });
        }
        b.end(m, x);
        stages.extend(first);
    }
    if stages.is_empty() {
        return Err(Error::MissingTensor {
            path: store.path().to_owned(),
            name: format!("{FIRST_BLOCK}.f.a.0.weight"),
            arch: b.arch.clone(),
        });
    }
    b.end(trunk, x);

    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let (output, num_classes) = b.linear("fc", x, Some(c))?;

    let named = VARIANTS.iter().find(|v| {
        v.se == se
            && se_standard
            && stem_width == STEM_WIDTH
            && stages.len() == 4
            && stages.iter().enumerate().all(|(i, s)| {
                s.depth == v.depths[i]
                    && s.width == v.widths[i]
                    && s.bottleneck == s.width
                    && s.group_width == v.group_widths[i]
            })
    });
    let (variant, preprocess) = match named {
        Some(v) => (v.name.to_owned(), v.preprocess),
        None => {
            let list = |f: fn(&Stage) -> usize| stages.iter().map(f).collect::<Vec<_>>();
            let bottleneck = match stages.iter().all(|s| s.bottleneck == s.width) {
                true => String::new(),
                false => format!(", bottleneck widths {:?}", list(|s| s.bottleneck)),
            };
            let name = format!(
                "{family} (custom, stem {stem_width}, depths {:?}, widths {:?}{bottleneck}, \
                 group widths {:?})",
                list(|s| s.depth),
                list(|s| s.width),
                list(|s| s.group_width),
            );
            let weights = if se {
                "RegNet_Y_*_Weights.IMAGENET1K_V1"
            } else {
                "RegNet_X_*_Weights.IMAGENET1K_V1"
            };
            (name, Preprocess::imagenet(weights))
        }
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "trunk_output".into(),
        variant,
        preprocess: Some(preprocess),
    })
}

/// What one block produced and read.
struct BlockOut {
    value: ValueId,
    width: usize,
    bottleneck: usize,
    group_width: usize,
    squeeze: Option<usize>,
}

/// `Conv2dNormActivation(c_in, ?, k, stride, groups, BatchNorm2d, ReLU or None)` as module
/// `name` (children `0` conv, `1` BatchNorm, `2` ReLU).
fn conv_norm_act(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c_in: usize,
    spec: ConvSpec,
    relu: bool,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "Conv2dNormActivation");
    let (v, c) = b.conv(&format!("{name}.0"), x, Some(c_in), spec)?;
    let mut v = b.batch_norm(&format!("{name}.1"), v, c)?;
    if relu {
        v = b.relu(Some(&format!("{name}.2")), v);
    }
    b.end(m, v);
    Ok((v, c))
}

/// `ResBottleneckBlock`: `activation(proj(x) + f(x))`, f = a (1×1), b (3×3 grouped, stride),
/// [se], c (1×1, no activation).
fn res_bottleneck_block(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c_in: usize,
    stride: usize,
) -> Result<BlockOut> {
    let store = b.store;
    let m = b.begin(name, "ResBottleneckBlock");
    let proj_name = format!("{name}.proj");
    let proj = if store.contains(&format!("{proj_name}.0.weight")) {
        let spec = ConvSpec::k(1).stride(stride);
        Some(conv_norm_act(b, &proj_name, x, c_in, spec, false)?)
    } else {
        None
    };

    let f = format!("{name}.f");
    let fm = b.begin(&f, "BottleneckTransform");
    let (v, w_b) = conv_norm_act(b, &format!("{f}.a"), x, c_in, ConvSpec::k(1), true)?;
    // Grouped 3×3: [w_b, w_b / groups, 3, 3].
    let conv_b = format!("{f}.b");
    let per_group = store
        .shape(&format!("{conv_b}.0.weight"))
        .and_then(|s| s.get(1).copied())
        .filter(|&g| g > 0 && w_b % g == 0)
        .unwrap_or(w_b);
    let groups = w_b / per_group;
    let spec = ConvSpec::k(3).stride(stride).groups(groups);
    let (mut v, _) = conv_norm_act(b, &conv_b, v, w_b, spec, true)?;

    let se = format!("{f}.se");
    let squeeze = if store.contains(&format!("{se}.fc1.weight")) {
        let sm = b.begin(&se, "SqueezeExcitation");
        let s = b.adaptive_avg_pool(Some(&format!("{se}.avgpool")), v, (1, 1));
        let (s, sq) = b.conv(
            &format!("{se}.fc1"),
            s,
            Some(w_b),
            ConvSpec::k(1).bias(true),
        )?;
        let act = format!("{se}.activation");
        let s = b.relu(Some(&act), s);
        let fc2 = format!("{se}.fc2");
        let (s, _) = b.conv(&fc2, s, Some(sq), ConvSpec::k(1).bias(true))?;
        let s = b.act(
            Some(&format!("{se}.scale_activation")),
            "Sigmoid",
            Activation::Sigmoid,
            s,
        );
        v = b.binary(BinaryOp::Mul, s, v);
        b.end(sm, v);
        // SqueezeExcitation registers fc2 before activation.
        b.list_after(&act, &fc2);
        Some(sq)
    } else {
        None
    };

    let (fv, width) = conv_norm_act(b, &format!("{f}.c"), v, w_b, ConvSpec::k(1), false)?;
    b.end(fm, fv);

    let shortcut = match proj {
        Some((p, _)) => p,
        None if stride == 1 && c_in == width => x,
        None => {
            return Err(Error::MissingTensor {
                path: store.path().to_owned(),
                name: format!("{proj_name}.0.weight"),
                arch: b.arch.clone(),
            })
        }
    };
    let sum = b.add(shortcut, fv);
    let out = b.relu(Some(&format!("{name}.activation")), sum);
    b.end(m, out);
    Ok(BlockOut {
        value: out,
        width,
        bottleneck: w_b,
        group_width: per_group,
        squeeze,
    })
}
