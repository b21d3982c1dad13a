//! torchvision EfficientNet B0–B7 and EfficientNetV2 S/M/L (torchvision/models/efficientnet.py):
//! a SiLU stem, stages `features.1..S` of MBConv blocks (V2: FusedMBConv first), a 1×1 SiLU conv,
//! `avgpool` and a Dropout–Linear classifier. Two families of the table: `efficientnet`
//! (B0–B7, every block an MBConv) and `efficientnet_v2` (the first stage FusedMBConv).
//!
//! From the weights: every width (stem, expanded, SE squeeze from fc1's shape, stage outputs,
//! last conv), the blocks per stage, the kernel sizes, each block's kind (an SE layer marks an
//! MBConv: torchvision's MBConv always has one, its FusedMBConv never) and whether it has an
//! expansion conv, the classes. From torchvision's definition (`_efficientnet_conf`, which the
//! weights cannot carry): the stages' strides (1, 2, 2, 2, 1, 2, 1; V2-S has the first six);
//! SiLU activations and SE with SiLU and Sigmoid; StochasticDepth, the identity in eval, listed
//! (and run) only where a block has its residual add (stride 1, width kept); BatchNorm eps 1e-5
//! for B0–B4 (EfficientNet's default `norm_layer`, also taken for a custom B-layout) and 1e-3 for
//! B5–B7 and every V2 (`partial(nn.BatchNorm2d, eps=1e-03)` in their builders); the variant
//! names, from the width and depth multipliers of each B (`_make_divisible`, `ceil`) and V2's
//! tables.
//!
//! Default Grad-CAM layer: `features` (its last Conv2dNormActivation). Preprocessing: each
//! variant's IMAGENET1K_V1 weights (tests/fixtures/families/manifests/preprocess_v1.json):
//! bicubic for B0–B7 and V2-L (whose mean and std are 0.5), bilinear for V2-S/M; a custom model
//! gets B0's (V2: V2-S's).

use super::mobilenet_v3::{
    conv_norm_act, count_from, depthwise, kernel_of, make_divisible, shape_of, squeeze_excitation,
    unsupported, SIGMOID, SILU,
};
use super::{Built, Filter, Preprocess};
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &[
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
];

pub const V2_VARIANT_NAMES: &[&str] = &[
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
];

/// Whether block `prefix` (features.s.r) is an MBConv: it has a SqueezeExcitation.
fn is_mbconv(store: &WeightStore, prefix: &str) -> bool {
    (0..4).any(|j| store.contains(&format!("{prefix}.block.{j}.fc1.weight")))
}

fn is_efficientnet(store: &WeightStore) -> bool {
    store.contains("features.1.0.block.0.0.weight") && store.contains("classifier.1.weight")
}

pub fn matches(store: &WeightStore) -> bool {
    is_efficientnet(store) && is_mbconv(store, "features.1.0")
}

pub fn matches_v2(store: &WeightStore) -> bool {
    is_efficientnet(store) && !is_mbconv(store, "features.1.0")
}

/// Each stage's stride.
const STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// B0's stages (expand ratio, kernel, input, output, layers) before the multipliers.
const B_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 32, 16, 1),
    (6, 3, 16, 24, 2),
    (6, 5, 24, 40, 2),
    (6, 3, 40, 80, 3),
    (6, 5, 80, 112, 3),
    (6, 5, 112, 192, 4),
    (6, 3, 192, 320, 1),
];

/// Each B's (width_mult, depth_mult), BatchNorm eps and preprocessing (resize, crop).
const B_VARIANTS: [(f64, f64, f64, usize, usize); 8] = [
    (1.0, 1.0, 1e-5, 256, 224),
    (1.0, 1.1, 1e-5, 256, 240),
    (1.1, 1.2, 1e-5, 288, 288),
    (1.2, 1.4, 1e-5, 320, 300),
    (1.4, 1.8, 1e-5, 384, 380),
    (1.6, 2.2, 1e-3, 456, 456),
    (1.8, 2.6, 1e-3, 528, 528),
    (2.0, 3.1, 1e-3, 600, 600),
];

const B_WEIGHTS: [&str; 8] = [
    "EfficientNet_B0_Weights.IMAGENET1K_V1",
    "EfficientNet_B1_Weights.IMAGENET1K_V1",
    "EfficientNet_B2_Weights.IMAGENET1K_V1",
    "EfficientNet_B3_Weights.IMAGENET1K_V1",
    "EfficientNet_B4_Weights.IMAGENET1K_V1",
    "EfficientNet_B5_Weights.IMAGENET1K_V1",
    "EfficientNet_B6_Weights.IMAGENET1K_V1",
    "EfficientNet_B7_Weights.IMAGENET1K_V1",
];

/// V2's stages (fused, expand ratio, kernel, input, output, layers) and last conv width.
type V2Stage = (bool, usize, usize, usize, usize, usize);
const V2_S: [V2Stage; 6] = [
    (true, 1, 3, 24, 24, 2),
    (true, 4, 3, 24, 48, 4),
    (true, 4, 3, 48, 64, 4),
    (false, 4, 3, 64, 128, 6),
    (false, 6, 3, 128, 160, 9),
    (false, 6, 3, 160, 256, 15),
];
const V2_M: [V2Stage; 7] = [
    (true, 1, 3, 24, 24, 3),
    (true, 4, 3, 24, 48, 5),
    (true, 4, 3, 48, 80, 5),
    (false, 4, 3, 80, 160, 7),
    (false, 6, 3, 160, 176, 14),
    (false, 6, 3, 176, 304, 18),
    (false, 6, 3, 304, 512, 5),
];
const V2_L: [V2Stage; 7] = [
    (true, 1, 3, 32, 32, 4),
    (true, 4, 3, 32, 64, 7),
    (true, 4, 3, 64, 96, 7),
    (false, 4, 3, 96, 192, 10),
    (false, 6, 3, 192, 224, 19),
    (false, 6, 3, 224, 384, 25),
    (false, 6, 3, 384, 640, 7),
];
const V2_LAST: usize = 1280;

/// One block as the weights describe it.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Block {
    mbconv: bool,
    /// An expansion conv (torchvision: when the expanded width differs from the input's).
    expand: bool,
    c_in: usize,
    expanded: usize,
    c_out: usize,
    kernel: usize,
}

/// What the weights say of the whole network, read before building (the variant fixes eps).
struct Layout {
    stem: usize,
    stages: Vec<Vec<Block>>,
    last: usize,
}

fn read_layout(store: &WeightStore, arch: &str) -> Result<Layout> {
    let n = count_from(store, 1, |s| format!("features.{s}.0.block.0.0.weight"));
    let stem = shape_of(store, "features.0.0.weight", arch)?[0];
    let mut c = stem;
    let mut stages = vec![];
    for s in 1..=n {
        let depth = count_from(store, 0, |r| format!("features.{s}.{r}.block.0.0.weight"));
        let mut blocks = vec![];
        for r in 0..depth {
            let p = format!("features.{s}.{r}");
            let mbconv = is_mbconv(store, &p);
            let entries = count_from(store, 0, |j| {
                let e = format!("{p}.block.{j}");
                if store.contains(&format!("{e}.fc1.weight")) {
                    format!("{e}.fc1.weight")
                } else {
                    format!("{e}.0.weight")
                }
            });
            let first = shape_of(store, &format!("{p}.block.0.0.weight"), arch)?;
            let last = shape_of(store, &format!("{p}.block.{}.0.weight", entries - 1), arch)?;
            let (expand, expanded, kernel) = if mbconv {
                // [expand 1×1], depthwise k×k, SE, project: expanded = the depthwise width.
                let dw = shape_of(store, &format!("{p}.block.{}.0.weight", entries - 3), arch)?;
                (entries == 4, dw[0], dw[3])
            } else if entries == 2 {
                // k×k expand, 1×1 project.
                (true, first[0], first[3])
            } else {
                // one k×k conv.
                (false, c, first[3])
            };
            blocks.push(Block {
                mbconv,
                expand,
                c_in: c,
                expanded,
                c_out: last[0],
                kernel,
            });
            c = last[0];
        }
        stages.push(blocks);
    }
    let last = shape_of(store, &format!("features.{}.0.weight", n + 1), arch)?[0];
    Ok(Layout { stem, stages, last })
}

/// The layout torchvision builds from a table of stages (the first block of a stage has its
/// input; the others in = out; expanded = _make_divisible(in * ratio, 8)).
fn table_layout(
    stem: usize,
    stages: &[(bool, usize, usize, usize, usize, usize)],
    last: usize,
) -> Layout {
    let stages = stages
        .iter()
        .map(|&(fused, t, k, c_in, c_out, n)| {
            (0..n)
                .map(|r| {
                    let c_in = if r == 0 { c_in } else { c_out };
                    let expanded = make_divisible((c_in * t) as f64, 8);
                    Block {
                        mbconv: !fused,
                        expand: expanded != c_in,
                        c_in,
                        expanded,
                        c_out,
                        kernel: k,
                    }
                })
                .collect()
        })
        .collect();
    Layout { stem, stages, last }
}

/// EfficientNet-B(width, depth) as `_efficientnet_conf` builds it.
fn b_layout(width: f64, depth: f64) -> Layout {
    let w = |c: usize| make_divisible(c as f64 * width, 8);
    let stages: Vec<_> = B_STAGES
        .iter()
        .map(|&(t, k, c_in, c_out, n)| {
            (
                false,
                t,
                k,
                w(c_in),
                w(c_out),
                (n as f64 * depth).ceil() as usize,
            )
        })
        .collect();
    let last = 4 * w(B_STAGES[6].3);
    table_layout(w(B_STAGES[0].2), &stages, last)
}

fn same(a: &Layout, b: &Layout) -> bool {
    a.stem == b.stem && a.last == b.last && a.stages == b.stages
}

fn describe(l: &Layout) -> String {
    let widths: Vec<usize> = l
        .stages
        .iter()
        .map(|s| s.last().map_or(0, |b| b.c_out))
        .collect();
    let depths: Vec<usize> = l.stages.iter().map(Vec::len).collect();
    format!(
        "stem {}, stage widths {widths:?}, depths {depths:?}, last {}",
        l.stem, l.last
    )
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let layout = read_layout(b.store, &b.arch)?;
    let found = B_VARIANTS
        .iter()
        .position(|&(w, d, ..)| same(&layout, &b_layout(w, d)));
    let (variant, eps, preprocess) = match found {
        Some(i) => {
            let (_, _, eps, resize, crop) = B_VARIANTS[i];
            (
                VARIANT_NAMES[i].to_owned(),
                eps,
                Preprocess::imagenet_sized(B_WEIGHTS[i], resize, crop, Filter::Bicubic),
            )
        }
        None => (
            format!("efficientnet (custom, {})", describe(&layout)),
            1e-5,
            Preprocess::imagenet_sized(B_WEIGHTS[0], 256, 224, Filter::Bicubic),
        ),
    };
    build_layout(b, &layout, eps, variant, preprocess)
}

pub fn build_v2(b: &mut Builder) -> Result<Built> {
    let layout = read_layout(b.store, &b.arch)?;
    let v2_s = Preprocess::imagenet_sized(
        "EfficientNet_V2_S_Weights.IMAGENET1K_V1",
        384,
        384,
        Filter::Bilinear,
    );
    let v2_m = Preprocess::imagenet_sized(
        "EfficientNet_V2_M_Weights.IMAGENET1K_V1",
        480,
        480,
        Filter::Bilinear,
    );
    let v2_l = Preprocess {
        mean: [0.5; 3],
        std: [0.5; 3],
        ..Preprocess::imagenet_sized(
            "EfficientNet_V2_L_Weights.IMAGENET1K_V1",
            480,
            480,
            Filter::Bicubic,
        )
    };
    let tables: [(&str, &[V2Stage], Preprocess); 3] = [
        ("efficientnet_v2_s", &V2_S, v2_s),
        ("efficientnet_v2_m", &V2_M, v2_m),
        ("efficientnet_v2_l", &V2_L, v2_l),
    ];
    let (variant, preprocess) = tables
        .iter()
        .find(|(_, t, _)| same(&layout, &table_layout(t[0].3, t, V2_LAST)))
        .map_or_else(
            || {
                (
                    format!("efficientnet_v2 (custom, {})", describe(&layout)),
                    v2_s,
                )
            },
            |(n, _, p)| (n.to_string(), *p),
        );
    build_layout(b, &layout, 1e-3, variant, preprocess)
}

fn build_layout(
    b: &mut Builder,
    layout: &Layout,
    eps: f64,
    variant: String,
    preprocess: Preprocess,
) -> Result<Built> {
    let n = layout.stages.len();
    if n == 0 || n > STRIDES.len() || layout.stages.iter().any(Vec::is_empty) {
        return Err(unsupported(
            b.store,
            format!(
                "efficientnet with {n} stages: torchvision's have 6 or 7, and their strides are \
                 only known from its tables"
            ),
        ));
    }
    b.bn_eps = eps;
    let features = b.begin("features", "Sequential");
    let (mut x, _) = conv_norm_act(
        b,
        "features.0",
        Builder::INPUT,
        None,
        ConvSpec::k(3).stride(2),
        Some(SILU),
    )?;
    for (s, blocks) in layout.stages.iter().enumerate() {
        let name = format!("features.{}", s + 1);
        let m = b.begin(&name, "Sequential");
        for (r, blk) in blocks.iter().enumerate() {
            let stride = if r == 0 { STRIDES[s] } else { 1 };
            x = block(b, &format!("{name}.{r}"), x, blk, stride)?;
        }
        b.end(m, x);
    }
    let c = layout.stages[n - 1]
        .last()
        .map_or(layout.stem, |blk| blk.c_out);
    let (x, c) = conv_norm_act(
        b,
        &format!("features.{}", n + 1),
        x,
        Some(c),
        ConvSpec::k(1),
        Some(SILU),
    )?;
    b.end(features, x);
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let classifier = b.begin("classifier", "Sequential");
    let x = b.dropout("classifier.0", x);
    let (output, num_classes) = b.linear("classifier.1", x, Some(c))?;
    b.end(classifier, output);
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(preprocess),
    })
}

/// An MBConv or FusedMBConv `name`; `result += input` (out of place) and StochasticDepth only
/// on the residual path.
fn block(b: &mut Builder, name: &str, x: ValueId, blk: &Block, stride: usize) -> Result<ValueId> {
    let kind = if blk.mbconv { "MBConv" } else { "FusedMBConv" };
    let m = b.begin(name, kind);
    let seq = format!("{name}.block");
    let sm = b.begin(&seq, "Sequential");
    let expand = blk.expand;
    let mut v = x;
    let mut j = 0;
    if blk.mbconv {
        if expand {
            (v, _) = conv_norm_act(
                b,
                &format!("{seq}.0"),
                v,
                Some(blk.c_in),
                ConvSpec::k(1),
                Some(SILU),
            )?;
            j += 1;
        }
        (v, _) = depthwise(b, &format!("{seq}.{j}"), v, blk.expanded, stride, SILU)?;
        v = squeeze_excitation(
            b,
            &format!("{seq}.{}", j + 1),
            v,
            blk.expanded,
            SILU,
            SIGMOID,
        )?;
        (v, _) = conv_norm_act(
            b,
            &format!("{seq}.{}", j + 2),
            v,
            Some(blk.expanded),
            ConvSpec::k(1),
            None,
        )?;
    } else {
        let k = kernel_of(b, &format!("{seq}.0.0"))?;
        let spec = ConvSpec::k(k).stride(stride);
        if expand {
            (v, _) = conv_norm_act(b, &format!("{seq}.0"), v, Some(blk.c_in), spec, Some(SILU))?;
            (v, _) = conv_norm_act(
                b,
                &format!("{seq}.1"),
                v,
                Some(blk.expanded),
                ConvSpec::k(1),
                None,
            )?;
        } else {
            (v, _) = conv_norm_act(b, &format!("{seq}.0"), v, Some(blk.c_in), spec, Some(SILU))?;
        }
    }
    b.end(sm, v);
    let y = if stride == 1 && blk.c_in == blk.c_out {
        let d = b.identity(&format!("{name}.stochastic_depth"), "StochasticDepth", v);
        b.add(d, x)
    } else {
        v
    };
    b.end(m, y);
    Ok(y)
}
