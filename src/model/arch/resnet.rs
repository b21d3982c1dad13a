//! torchvision ResNet 18/34/50/101/152, ResNeXt 50_32x4d/101_32x8d/101_64x4d and Wide ResNet
//! 50_2/101_2 (torchvision/models/resnet.py, `ResNet`, `BasicBlock`, `Bottleneck`): one class
//! with `groups` and `width_per_group` knobs. BasicBlock or Bottleneck (stride on the 3×3 conv,
//! as in torchvision's "v1.5"), downsample branches where the weights have them, eval
//! BatchNorm (eps 1e-5).
//!
//! From the weights: the block kind (a `conv3` or not), the depth of each stage, every width
//! (stem, bottleneck width, block output) and each 3×3 conv's group count (its input channels
//! over the weight's second dimension: conv2 in_channels = conv1 out_channels). The key names
//! of resnet50 / resnext50_32x4d / wide_resnet50_2 (and of the 101s) are the same, so the
//! variant is named by those shapes: groups and bottleneck width of torchvision's table
//! (resnext50_32x4d: 32 groups of 4 → width 128 in layer1; wide_resnet50_2: 1 group, width
//! 128). From torchvision's definition: the 7×7/2 stem, the 3×3/2 max-pool, the strides (2 in
//! the first block of layers 2–4), the paddings, the ReLU placement. The default Grad-CAM
//! layer is `layer4`. Preprocessing: each variant's IMAGENET1K_V1 weights
//! (tests/fixtures/families/manifests/preprocess_v1.json; resnext101_64x4d's resize is 232).

use super::{Built, Filter, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("layer1.0.conv1.weight") && store.contains("fc.weight")
}

pub const VARIANT_NAMES: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
];

/// A torchvision variant: name, Bottleneck or not, depths, groups, width_per_group, and its
/// IMAGENET1K_V1 weights' (name, resize).
struct Variant {
    name: &'static str,
    bottleneck: bool,
    depths: [usize; 4],
    groups: usize,
    width_per_group: usize,
    weights: &'static str,
    resize: usize,
}

const fn v(
    name: &'static str,
    bottleneck: bool,
    depths: [usize; 4],
    groups: usize,
    width_per_group: usize,
    weights: &'static str,
    resize: usize,
) -> Variant {
    Variant {
        name,
        bottleneck,
        depths,
        groups,
        width_per_group,
        weights,
        resize,
    }
}

const VARIANTS: [Variant; 10] = [
    v(
        "resnet18",
        false,
        [2, 2, 2, 2],
        1,
        64,
        "ResNet18_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnet34",
        false,
        [3, 4, 6, 3],
        1,
        64,
        "ResNet34_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnet50",
        true,
        [3, 4, 6, 3],
        1,
        64,
        "ResNet50_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnet101",
        true,
        [3, 4, 23, 3],
        1,
        64,
        "ResNet101_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnet152",
        true,
        [3, 8, 36, 3],
        1,
        64,
        "ResNet152_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnext50_32x4d",
        true,
        [3, 4, 6, 3],
        32,
        4,
        "ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnext101_32x8d",
        true,
        [3, 4, 23, 3],
        32,
        8,
        "ResNeXt101_32X8D_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "resnext101_64x4d",
        true,
        [3, 4, 23, 3],
        64,
        4,
        "ResNeXt101_64X4D_Weights.IMAGENET1K_V1",
        232,
    ),
    v(
        "wide_resnet50_2",
        true,
        [3, 4, 6, 3],
        1,
        128,
        "Wide_ResNet50_2_Weights.IMAGENET1K_V1",
        256,
    ),
    v(
        "wide_resnet101_2",
        true,
        [3, 4, 23, 3],
        1,
        128,
        "Wide_ResNet101_2_Weights.IMAGENET1K_V1",
        256,
    ),
];

/// What one block's weights say: its 3×3 conv's groups, its inner width and output width.
#[derive(Clone, Copy, Debug, PartialEq)]
struct BlockShape {
    groups: usize,
    width: usize,
    out: usize,
}

impl Variant {
    /// Block `l`'s shape in torchvision: planes = 64·2^l, width = int(planes·wpg/64)·groups.
    fn block(&self, l: usize) -> BlockShape {
        let planes = 64 << l;
        let expansion = if self.bottleneck { 4 } else { 1 };
        BlockShape {
            groups: self.groups,
            width: planes * self.width_per_group / 64 * self.groups,
            out: planes * expansion,
        }
    }
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    let bottleneck = store.contains("layer1.0.conv3.weight");
    let (x, stem) = b.conv("conv1", Builder::INPUT, None, ConvSpec::k(7).stride(2))?;
    let x = b.batch_norm("bn1", x, stem)?;
    let x = b.relu(Some("relu"), x);
    let mut x = b.max_pool(Some("maxpool"), x, 3, 2, 1, false);
    let mut c = stem;
    let mut depths = [0usize; 4];
    // Every block's shape, stage by stage.
    let mut shapes: Vec<Vec<BlockShape>> = vec![];
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
        let mut stage = vec![];
        for i in 0..*depth {
            let stride = if l > 0 && i == 0 { 2 } else { 1 };
            let name = format!("{layer}.{i}");
            let shape;
            (x, c, shape) = if bottleneck {
                bottleneck_block(b, &name, x, c, stride)?
            } else {
                basic_block(b, &name, x, c, stride)?
            };
            stage.push(shape);
        }
        shapes.push(stage);
        b.end(m, x);
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let (output, num_classes) = b.linear("fc", x, Some(c))?;
    let named = VARIANTS.iter().find(|v| {
        v.bottleneck == bottleneck
            && v.depths == depths
            && stem == 64
            && shapes
                .iter()
                .enumerate()
                .all(|(l, s)| s.iter().all(|&sh| sh == v.block(l)))
    });
    let (variant, preprocess) = match named {
        Some(v) => (
            v.name.to_string(),
            Preprocess::imagenet_sized(v.weights, v.resize, 224, Filter::Bilinear),
        ),
        None => {
            let kind = if bottleneck {
                "Bottleneck"
            } else {
                "BasicBlock"
            };
            let first: Vec<BlockShape> = shapes.iter().map(|s| s[0]).collect();
            let groups = first[0].groups;
            let widths: Vec<usize> = first.iter().map(|s| s.width).collect();
            let (detail, weights) = if groups > 1 {
                (
                    format!(", {groups} groups, widths {widths:?}"),
                    "ResNeXt*_Weights.IMAGENET1K_V1",
                )
            } else if widths[0] > stem {
                (
                    format!(", widths {widths:?}"),
                    "Wide_ResNet*_Weights.IMAGENET1K_V1",
                )
            } else {
                (String::new(), "ResNet*_Weights.IMAGENET1K_V1")
            };
            (
                format!("resnet (custom, {kind} {depths:?}, stem {stem}{detail})"),
                Preprocess::imagenet(weights),
            )
        }
    };
    Ok(Built {
        preprocess: Some(preprocess),
        output,
        num_classes,
        default_layer: "layer4".into(),
        variant,
    })
}

/// The group count of conv `name` taking `c_in` channels, from its weight's second dimension.
fn groups_of(b: &Builder, name: &str, c_in: usize) -> usize {
    match b.store.shape(&format!("{name}.weight")) {
        Some(s) if s.len() == 4 && s[1] > 0 && c_in.is_multiple_of(s[1]) => c_in / s[1],
        // Let the conv report the mismatch.
        _ => 1,
    }
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
) -> Result<(ValueId, usize, BlockShape)> {
    let m = b.begin(name, "BasicBlock");
    let (v, ch) = conv_bn(b, name, 1, x, c, ConvSpec::k(3).stride(stride))?;
    let v = b.relu(Some(&format!("{name}.relu")), v);
    let (v, ch) = conv_bn(b, name, 2, v, ch, ConvSpec::k(3))?;
    let out = join(b, name, x, c, v, ch, stride)?;
    b.end(m, out);
    let shape = BlockShape {
        groups: 1,
        width: ch,
        out: ch,
    };
    Ok((out, ch, shape))
}

fn bottleneck_block(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
    stride: usize,
) -> Result<(ValueId, usize, BlockShape)> {
    let m = b.begin(name, "Bottleneck");
    let (v, ch) = conv_bn(b, name, 1, x, c, ConvSpec::k(1))?;
    let v = b.relu(Some(&format!("{name}.relu")), v);
    let width = ch;
    let groups = groups_of(b, &format!("{name}.conv2"), width);
    let spec = ConvSpec::k(3).stride(stride).groups(groups);
    let (v, ch) = conv_bn(b, name, 2, v, ch, spec)?;
    let v = b.relu(None, v);
    let (v, ch) = conv_bn(b, name, 3, v, ch, ConvSpec::k(1))?;
    let out = join(b, name, x, c, v, ch, stride)?;
    b.end(m, out);
    b.list_after(&format!("{name}.relu"), &format!("{name}.bn3"));
    let shape = BlockShape {
        groups,
        width,
        out: ch,
    };
    Ok((out, ch, shape))
}

#[cfg(test)]
mod tests {
    use crate::model::graph::op::Op;
    use crate::model::weights::WeightStore;
    use crate::model::Model;
    use std::path::Path;

    /// The narrowed ResNeXt fixture's 3×3 convs have 8 groups (read from the weights), the
    /// Wide ResNet's one; both are "custom" variants.
    #[test]
    fn groups_come_from_the_weights() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
        for (name, groups) in [("resnext50_32x4d", 8), ("wide_resnet50_2", 1)] {
            let store = WeightStore::load(&dir.join(name).join("model.safetensors")).unwrap();
            let m = Model::from_store(&store, None).unwrap();
            assert!(m.arch.starts_with("resnet (custom"), "{}", m.arch);
            let conv = m.graph.module("layer3.0.conv2").unwrap().value;
            let node = m.graph.nodes.iter().find(|n| n.output == conv).unwrap();
            match &node.op {
                Op::Conv2d(c) => assert_eq!(c.groups, groups, "{name}"),
                _ => panic!("layer3.0.conv2 is not a conv"),
            }
        }
    }
}
