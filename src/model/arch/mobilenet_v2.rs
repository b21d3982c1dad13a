//! torchvision MobileNetV2 (torchvision/models/mobilenetv2.py): a ReLU6 stem, inverted-residual
//! blocks `features.1..N` ([1×1 expansion], depthwise 3×3, 1×1 projection and BatchNorm), a
//! 1×1 ReLU6 conv, a functional global pool (`nn.functional.adaptive_avg_pool2d`, no module)
//! and a Dropout–Linear classifier.
//!
//! From the weights: every width (stem, expanded, output, last conv), whether a block has an
//! expansion conv, the depthwise kernel size, the classes. From torchvision's definition: the
//! strides, which belong to the seven stages of `inverted_residual_setting` (s = 1, 2, 2, 2, 1,
//! 2, 1) and not to anything the weights hold. A stage starts where the width changes; when
//! seven such blocks are found they are the stages, and when fewer are (a narrow width
//! multiplier rounds neighbouring stages to the same width) the model must have torchvision's 17
//! blocks, whose stage depths (1, 2, 3, 4, 3, 3, 1) then place the strides. A residual add
//! (out of place) joins a block whose stride is 1 and whose width is kept. BatchNorm eps 1e-5.
//!
//! Default Grad-CAM layer: `features` (features.N, the last Conv2dNormActivation).
//! Preprocessing: MobileNet_V2_Weights.IMAGENET1K_V1 (resize 256, crop 224, bilinear), from
//! tests/fixtures/families/manifests/preprocess_v1.json.

use super::mobilenet_v3::{conv_norm_act, count_from, depthwise, shape_of, unsupported, RELU6};
use super::{Built, Preprocess};
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("features.1.conv.0.0.weight") && store.contains("classifier.1.weight")
}

pub const VARIANT_NAMES: &[&str] = &["mobilenet_v2"];

/// The stride of each stage's first block (`inverted_residual_setting`, column s).
const STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
/// Blocks per stage in torchvision's table (column n).
const DEPTHS: [usize; 7] = [1, 2, 3, 4, 3, 3, 1];
/// The stage widths at width_mult 1 (column c), the stem's and the last conv's.
const WIDTHS: [usize; 7] = [16, 24, 32, 64, 96, 160, 320];
const STEM: usize = 32;
const LAST: usize = 1280;

/// What the weights say of one block: input, expanded and output channels.
struct Block {
    c_in: usize,
    hidden: usize,
    c_out: usize,
    expand: bool,
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let arch = b.arch.clone();
    let n = count_from(store, 1, |i| format!("features.{i}.conv.0.0.weight"));
    let mut c = shape_of(store, "features.0.0.weight", &arch)?[0];
    let stem = c;
    let mut blocks = vec![];
    for i in 1..=n {
        let conv = format!("features.{i}.conv");
        let expand = store.contains(&format!("{conv}.3.weight"));
        let hidden = shape_of(store, &format!("{conv}.0.0.weight"), &arch)?[0];
        let proj = format!("{conv}.{}.weight", if expand { 2 } else { 1 });
        let c_out = shape_of(store, &proj, &arch)?[0];
        blocks.push(Block {
            c_in: c,
            hidden,
            c_out,
            expand,
        });
        c = c_out;
    }

    // The first block of each stage.
    let changes: Vec<usize> = (0..n)
        .filter(|&i| i == 0 || blocks[i].c_in != blocks[i].c_out)
        .collect();
    let table_starts: Vec<usize> = DEPTHS
        .iter()
        .scan(0, |s, d| {
            let start = *s;
            *s += d;
            Some(start)
        })
        .collect();
    let starts = if changes.len() == STRIDES.len() {
        changes
    } else if n == DEPTHS.iter().sum::<usize>() && changes.iter().all(|i| table_starts.contains(i))
    {
        table_starts
    } else {
        return Err(unsupported(
            store,
            format!(
                "mobilenet_v2 with {n} inverted-residual blocks whose width changes at blocks \
                 {changes:?}: the seven stages, and so the strides, cannot be placed (torchvision's \
                 table has 17 blocks in stages of {DEPTHS:?})"
            ),
        ));
    };
    let stride_of = |i: usize| {
        starts
            .iter()
            .position(|&s| s == i)
            .map_or(1, |stage| STRIDES[stage])
    };

    let features = b.begin("features", "Sequential");
    let (mut x, _) = conv_norm_act(
        b,
        "features.0",
        Builder::INPUT,
        None,
        ConvSpec::k(3).stride(2),
        Some(RELU6),
    )?;
    for (i, blk) in blocks.iter().enumerate() {
        let name = format!("features.{}", i + 1);
        let stride = stride_of(i);
        let m = b.begin(&name, "InvertedResidual");
        let seq = format!("{name}.conv");
        let sm = b.begin(&seq, "Sequential");
        let mut v = x;
        let mut j = 0;
        if blk.expand {
            (v, _) = conv_norm_act(
                b,
                &format!("{seq}.0"),
                v,
                Some(blk.c_in),
                ConvSpec::k(1),
                Some(RELU6),
            )?;
            j = 1;
        }
        (v, _) = depthwise(b, &format!("{seq}.{j}"), v, blk.hidden, stride, RELU6)?;
        let (v, _) = b.conv(
            &format!("{seq}.{}", j + 1),
            v,
            Some(blk.hidden),
            ConvSpec::k(1),
        )?;
        let v = b.batch_norm(&format!("{seq}.{}", j + 2), v, blk.c_out)?;
        b.end(sm, v);
        let y = if stride == 1 && blk.c_in == blk.c_out {
            b.add(x, v)
        } else {
            v
        };
        b.end(m, y);
        x = y;
    }
    let (x, c) = conv_norm_act(
        b,
        &format!("features.{}", n + 1),
        x,
        Some(c),
        ConvSpec::k(1),
        Some(RELU6),
    )?;
    b.end(features, x);
    let x = b.adaptive_avg_pool(None, x, (1, 1));
    let x = b.flatten(x);
    let classifier = b.begin("classifier", "Sequential");
    let x = b.dropout("classifier.0", x);
    let (output, num_classes) = b.linear("classifier.1", x, Some(c))?;
    b.end(classifier, output);

    // Stage depths and widths as read (the stage of block i ends where the next begins).
    let mut depths = vec![];
    let mut widths = vec![];
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(n);
        depths.push(end - s);
        widths.push(blocks[s].c_out);
    }
    let expands_ok = blocks
        .iter()
        .enumerate()
        .all(|(i, blk)| blk.hidden == if i == 0 { blk.c_in } else { 6 * blk.c_in });
    let standard = stem == STEM && c == LAST && depths == DEPTHS && widths == WIDTHS && expands_ok;
    let variant = if standard {
        "mobilenet_v2".to_owned()
    } else {
        format!("mobilenet_v2 (custom, stem {stem}, stage widths {widths:?}, depths {depths:?}, last {c})")
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(Preprocess::imagenet("MobileNet_V2_Weights.IMAGENET1K_V1")),
    })
}
