//! torchvision ResNet 18/34/50/101/152: BasicBlock or Bottleneck (stride on the 3×3 conv, as
//! in torchvision's "v1.5"), downsample branches where the weights have them, eval BatchNorm.

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("layer1.0.conv1.weight") && store.contains("fc.weight")
}

pub const VARIANT_NAMES: &[&str] = &["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

const VARIANTS: [(&str, bool, [usize; 4]); 5] = [
    ("resnet18", false, [2, 2, 2, 2]),
    ("resnet34", false, [3, 4, 6, 3]),
    ("resnet50", true, [3, 4, 6, 3]),
    ("resnet101", true, [3, 4, 23, 3]),
    ("resnet152", true, [3, 8, 36, 3]),
];

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let bottleneck = store.contains("layer1.0.conv3.weight");
    let (x, c) = b.conv("conv1", Builder::INPUT, None, ConvSpec::k(7).stride(2))?;
    let x = b.batch_norm("bn1", x, c)?;
    let x = b.relu(Some("relu"), x);
    let mut x = b.max_pool(Some("maxpool"), x, 3, 2, 1, false);
    let mut c = c;
    let mut depths = [0usize; 4];
    for (l, depth) in depths.iter_mut().enumerate() {
        let layer = format!("layer{}", l + 1);
        *depth = (0..)
            .take_while(|i| store.contains(&format!("{layer}.{i}.conv1.weight")))
            .count();
        if *depth == 0 {
            return Err(Error::MissingTensor {
                path: store.path().to_owned(),
                name: format!("{layer}.0.conv1.weight"),
                arch: "resnet".into(),
            });
        }
        let m = b.begin(&layer, "Sequential");
        for i in 0..*depth {
            let stride = if l > 0 && i == 0 { 2 } else { 1 };
            let name = format!("{layer}.{i}");
            (x, c) = if bottleneck {
                bottleneck_block(b, &name, x, c, stride)?
            } else {
                basic_block(b, &name, x, c, stride)?
            };
        }
        b.end(m, x);
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let (output, num_classes) = b.linear("fc", x, Some(c))?;
    let variant = VARIANTS
        .iter()
        .find(|(_, bn, d)| *bn == bottleneck && *d == depths)
        .map_or_else(
            || {
                let kind = if bottleneck {
                    "Bottleneck"
                } else {
                    "BasicBlock"
                };
                format!("resnet (custom, {kind} {depths:?})")
            },
            |(n, _, _)| n.to_string(),
        );
    let preprocess = Some(Preprocess::imagenet("ResNet*_Weights.IMAGENET1K_V1"));
    Ok(Built {
        preprocess,
        output,
        num_classes,
        default_layer: "layer4".into(),
        variant,
    })
}

/// conv-bn (+ReLU) helper shared by both block kinds.
fn conv_bn(
    b: &mut Builder,
    block: &str,
    i: usize,
    x: ValueId,
    c: usize,
    spec: ConvSpec,
) -> Result<(ValueId, usize)> {
    let (v, ch) = b.conv(&format!("{block}.conv{i}"), x, Some(c), spec)?;
    Ok((b.batch_norm(&format!("{block}.bn{i}"), v, ch)?, ch))
}

/// The residual join: optional downsample branch, add, ReLU (the block's `relu` module, called
/// again, so not listed as its output).
fn join(
    b: &mut Builder,
    block: &str,
    x: ValueId,
    c_in: usize,
    y: ValueId,
    c_out: usize,
    stride: usize,
) -> Result<ValueId> {
    let ds = format!("{block}.downsample");
    let identity = if b.store.contains(&format!("{ds}.0.weight")) {
        let m = b.begin(&ds, "Sequential");
        let (v, ch) = b.conv(
            &format!("{ds}.0"),
            x,
            Some(c_in),
            ConvSpec::k(1).stride(stride),
        )?;
        let v = b.batch_norm(&format!("{ds}.1"), v, ch)?;
        b.end(m, v);
        v
    } else {
        if stride != 1 || c_in != c_out {
            return Err(Error::MissingTensor {
                path: b.store.path().to_owned(),
                name: format!("{ds}.0.weight"),
                arch: b.arch.clone(),
            });
        }
        x
    };
    let sum = b.add(y, identity);
    Ok(b.relu(None, sum))
}

fn basic_block(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    stride: usize,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "BasicBlock");
    let (v, ch) = conv_bn(b, name, 1, x, c, ConvSpec::k(3).stride(stride))?;
    let v = b.relu(Some(&format!("{name}.relu")), v);
    let (v, ch) = conv_bn(b, name, 2, v, ch, ConvSpec::k(3))?;
    let out = join(b, name, x, c, v, ch, stride)?;
    b.end(m, out);
    Ok((out, ch))
}

fn bottleneck_block(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    stride: usize,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "Bottleneck");
    let (v, ch) = conv_bn(b, name, 1, x, c, ConvSpec::k(1))?;
    let v = b.relu(Some(&format!("{name}.relu")), v);
    let (v, ch) = conv_bn(b, name, 2, v, ch, ConvSpec::k(3).stride(stride))?;
    let v = b.relu(None, v);
    let (v, ch) = conv_bn(b, name, 3, v, ch, ConvSpec::k(1))?;
    let out = join(b, name, x, c, v, ch, stride)?;
    b.end(m, out);
    b.list_after(&format!("{name}.relu"), &format!("{name}.bn3"));
    Ok((out, ch))
}
