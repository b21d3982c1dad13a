//! torchvision DenseNet-BC 121/161/169/201 (torchvision/models/densenet.py, `DenseNet`,
//! `_DenseBlock`, `_DenseLayer`, `_Transition`): a 7×7/2 stem conv, BatchNorm, ReLU and
//! 3×3/2 max-pool, then dense blocks separated by transitions, a final BatchNorm `norm5`, and
//! in `forward` a functional ReLU, adaptive average pool to 1×1, flatten and `classifier`.
//!
//! Each dense layer concatenates every earlier feature map of its block (`torch.cat(inputs,
//! 1)`), then norm1 → relu1 → conv1 (1×1, bn_size·k) → norm2 → relu2 → conv2 (3×3, pad 1, k);
//! a block returns the concatenation of its input and all its layers' outputs. A transition is
//! norm → relu → 1×1 conv → AvgPool2d(2, 2).
//!
//! From the weights: the stem width, the number of blocks and of layers in each, the growth
//! rate and bottleneck width of every layer, the transitions' widths, the classes. From
//! torchvision's definition: kernels, strides, paddings, the pools, the wiring and the
//! functional ReLU + pool after `features` (eval mode: drop_rate is irrelevant; BatchNorm eps
//! 1e-5). Variants are named by (growth rate, block config, stem width): 121 (32, [6, 12, 24,
//! 16], 64), 161 (48, [6, 12, 36, 24], 96), 169 (32, [6, 12, 32, 32], 64), 201 (32, [6, 12,
//! 48, 32], 64), with bn_size 4.
//!
//! Keys are those of `model.state_dict()` (`denselayerN.norm1`, …). torchvision's original
//! .pth files still use `denselayerN.norm.1` / `conv.1` / …, which torchvision renames at load
//! (densenet.py `_load_state_dict`); such a file is refused with that rename named.
//!
//! The default Grad-CAM layer is `features` (the output of `features.norm5`, before the
//! functional ReLU; stock torchvision's in-place ReLU would overwrite it, the engine records
//! it as `inplace=False` would). Preprocessing: DenseNet{121,161,169,201}_Weights.IMAGENET1K_V1
//! (resize 256, crop 224, bilinear; tests/fixtures/families/manifests/preprocess_v1.json).

use super::{Built, Preprocess};
use crate::error::{Error, Result};
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &["densenet121", "densenet161", "densenet169", "densenet201"];

/// (name, growth rate, block config, stem width, weights) of torchvision's variants (bn_size 4).
const VARIANTS: [(&str, usize, [usize; 4], usize, &str); 4] = [
    (
        "densenet121",
        32,
        [6, 12, 24, 16],
        64,
        "DenseNet121_Weights.IMAGENET1K_V1",
    ),
    (
        "densenet161",
        48,
        [6, 12, 36, 24],
        96,
        "DenseNet161_Weights.IMAGENET1K_V1",
    ),
    (
        "densenet169",
        32,
        [6, 12, 32, 32],
        64,
        "DenseNet169_Weights.IMAGENET1K_V1",
    ),
    (
        "densenet201",
        32,
        [6, 12, 48, 32],
        64,
        "DenseNet201_Weights.IMAGENET1K_V1",
    ),
];
const BN_SIZE: usize = 4;

pub fn matches(store: &WeightStore) -> bool {
    store.contains("features.conv0.weight")
        && store.contains("features.norm0.weight")
        && store
            .names()
            .any(|n| n.starts_with("features.denseblock1.denselayer1."))
}

pub fn build(b: &mut Builder) -> Result<Built> {
    let store = b.store;
    if store.contains("features.denseblock1.denselayer1.norm.1.weight") {
        return Err(Error::UnknownArch {
            path: store.path().to_owned(),
            reason: "its DenseNet keys use the names of torchvision's original .pth files \
                     (denselayerN.norm.1, conv.1, norm.2, conv.2); rename them to \
                     denselayerN.norm1, conv1, norm2, conv2 as torchvision's \
                     densenet._load_state_dict does, or save model.state_dict()"
                .into(),
            known: super::known().join(", "),
        });
    }
    let features = b.begin("features", "Sequential");
    let (x, stem) = b.conv(
        "features.conv0",
        Builder::INPUT,
        None,
        ConvSpec::k(7).stride(2).pad(3),
    )?;
    let x = b.batch_norm("features.norm0", x, stem)?;
    let x = b.relu(Some("features.relu0"), x);
    let mut x = b.max_pool(Some("features.pool0"), x, 3, 2, 1, false);
    let mut c = stem;

    let blocks = (1..)
        .take_while(|i| store.contains(&format!("features.denseblock{i}.denselayer1.norm1.weight")))
        .count();
    if blocks == 0 {
        return Err(Error::MissingTensor {
            path: store.path().to_owned(),
            name: "features.denseblock1.denselayer1.norm1.weight".into(),
            arch: b.arch.clone(),
        });
    }
    let mut config = vec![];
    // (growth rate, bottleneck width) of every layer.
    let mut layers = vec![];
    for i in 1..=blocks {
        let block = format!("features.denseblock{i}");
        let n;
        (x, c, n) = dense_block(b, &block, x, c, &mut layers)?;
        config.push(n);
        if i < blocks {
            let t = format!("features.transition{i}");
            let m = b.begin(&t, "_Transition");
            let v = b.batch_norm(&format!("{t}.norm"), x, c)?;
            let v = b.relu(Some(&format!("{t}.relu")), v);
            let (v, ch) = b.conv(&format!("{t}.conv"), v, Some(c), ConvSpec::k(1))?;
            let v = b.avg_pool(Some(&format!("{t}.pool")), v, 2, 2, 0, false, true);
            b.end(m, v);
            (x, c) = (v, ch);
        }
    }
    let x = b.batch_norm("features.norm5", x, c)?;
    b.end(features, x);
    let x = b.relu(None, x);
    let x = b.adaptive_avg_pool(None, x, (1, 1));
    let x = b.flatten(x);
    let (output, num_classes) = b.linear("classifier", x, Some(c))?;

    let growth = layers[0].0;
    let uniform = layers.iter().all(|&l| l == (growth, BN_SIZE * growth));
    let named = VARIANTS
        .iter()
        .find(|(_, k, cfg, s, _)| uniform && *k == growth && cfg[..] == config[..] && *s == stem);
    let (variant, weights) = match named {
        Some((n, _, _, _, w)) => (n.to_string(), *w),
        None => {
            let bottleneck = if uniform {
                String::new()
            } else {
                let widths: Vec<usize> = layers.iter().map(|l| l.1).collect();
                format!(", bottleneck widths {widths:?}")
            };
            (
                format!(
                    "densenet (custom, growth {growth}, blocks {config:?}, stem {stem}{bottleneck})"
                ),
                "DenseNet*_Weights.IMAGENET1K_V1",
            )
        }
    };
    Ok(Built {
        output,
        num_classes,
        default_layer: "features".into(),
        variant,
        preprocess: Some(Preprocess::imagenet(weights)),
    })
}

/// A `_DenseBlock`: returns its output, its channels and its number of layers; pushes each
/// layer's (growth, bottleneck width) onto `layers`.
fn dense_block(
    b: &mut Builder,
    block: &str,
    x: ValueId,
    c_in: usize,
    layers: &mut Vec<(usize, usize)>,
) -> Result<(ValueId, usize, usize)> {
    let m = b.begin(block, "_DenseBlock");
    let mut features = vec![x];
    let mut c = c_in;
    let mut j = 1;
    while b
        .store
        .contains(&format!("{block}.denselayer{j}.norm1.weight"))
    {
        let name = format!("{block}.denselayer{j}");
        let layer = b.begin(&name, "_DenseLayer");
        let input = match features.len() {
            1 => features[0],
            _ => b.concat(features.clone(), 1),
        };
        let v = b.batch_norm(&format!("{name}.norm1"), input, c)?;
        let v = b.relu(Some(&format!("{name}.relu1")), v);
        let (v, width) = b.conv(&format!("{name}.conv1"), v, Some(c), ConvSpec::k(1))?;
        let v = b.batch_norm(&format!("{name}.norm2"), v, width)?;
        let v = b.relu(Some(&format!("{name}.relu2")), v);
        let (v, growth) = b.conv(
            &format!("{name}.conv2"),
            v,
            Some(width),
            ConvSpec::k(3).pad(1),
        )?;
        b.end(layer, v);
        features.push(v);
        layers.push((growth, width));
        c += growth;
        j += 1;
    }
    let out = b.concat(features, 1);
    b.end(m, out);
    Ok((out, c, j - 1))
}

#[cfg(test)]
mod tests {
    use crate::model::weights::WeightStore;
    use crate::model::Model;
    use std::path::Path;

    /// torchvision's original .pth key names (`norm.1`, …) are refused with the rename named.
    #[test]
    fn original_pth_key_names_are_refused_with_the_rename() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
        let store = WeightStore::load(&dir.join("densenet121/model.safetensors")).unwrap();
        let old = store
            .tensors()
            .iter()
            .map(|(n, t)| {
                let mut n = n.clone();
                if n.contains(".denselayer") {
                    for (new, orig) in [
                        (".norm1.", ".norm.1."),
                        (".conv1.", ".conv.1."),
                        (".norm2.", ".norm.2."),
                        (".conv2.", ".conv.2."),
                    ] {
                        n = n.replace(new, orig);
                    }
                }
                (n, t.clone())
            })
            .collect();
        let e = Model::from_store(&WeightStore::from_tensors("old.safetensors", old), None)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("norm.1") && e.contains("_load_state_dict"),
            "{e}"
        );
    }
}
