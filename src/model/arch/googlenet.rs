//! torchvision GoogLeNet (torchvision/models/googlenet.py, `GoogLeNet`, `Inception`,
//! `BasicConv2d`): BasicConv2d stem (7×7/2, 1×1, 3×3) with ceil_mode max-pools, nine Inception
//! blocks (3a–3b, 4a–4e, 5a–5b) with ceil_mode max-pools between the stages, then an adaptive
//! average pool, Dropout and `fc`.
//!
//! A BasicConv2d is conv (no bias) → BatchNorm2d(eps=0.001) → functional ReLU, the module's
//! output being the ReLU's. An Inception block concatenates four branches: 1×1; 1×1 → 3×3;
//! 1×1 → 3×3 (torchvision's "5×5" branch is 3×3, googlenet.py:207, kept for the ported
//! weights); MaxPool2d(3, 1, 1, ceil_mode=True) → 1×1.
//!
//! From the weights: every width and the classes (kernel sizes checked). From torchvision's
//! definition: the block list, strides, paddings, pools and eps. The auxiliary heads `aux1` /
//! `aux2` run only in training: their tensors may be present or absent and are never used.
//! The variant is `googlenet` when every width is torchvision's.
//!
//! `transform_input` (googlenet.py:102–108: y_c = x_c · std_c / 0.5 + (mean_c − 0.5) / 0.5) is
//! not in the weights; torchvision turns it on for its pretrained weights, and so does this
//! builder unless `Builder::transform_input` is `Some(false)` (a checkpoint trained with
//! `transform_input=False`, e.g. `googlenet(weights=None, ...)`).
//!
//! The default Grad-CAM layer is `inception5b`. Preprocessing: GoogLeNet_Weights.IMAGENET1K_V1
//! (resize 256, crop 224, bilinear; tests/fixtures/families/manifests/preprocess_v1.json).

use super::{Built, Preprocess};
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &["googlenet"];

/// BasicConv2d's BatchNorm eps (googlenet.py:270, inception.py:405).
pub(super) const BN_EPS: f64 = 1e-3;

/// The Inception blocks, the max-pool before each (name, kernel) and torchvision's widths
/// (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
type BlockDef = (&'static str, Option<(&'static str, usize)>, [usize; 6]);
const BLOCKS: [BlockDef; 9] = [
    ("inception3a", None, [64, 96, 128, 16, 32, 32]),
    ("inception3b", None, [128, 128, 192, 32, 96, 64]),
    (
        "inception4a",
        Some(("maxpool3", 3)),
        [192, 96, 208, 16, 48, 64],
    ),
    ("inception4b", None, [160, 112, 224, 24, 64, 64]),
    ("inception4c", None, [128, 128, 256, 24, 64, 64]),
    ("inception4d", None, [112, 144, 288, 32, 64, 64]),
    ("inception4e", None, [256, 160, 320, 32, 128, 128]),
    (
        "inception5a",
        Some(("maxpool4", 2)),
        [256, 160, 320, 32, 128, 128],
    ),
    ("inception5b", None, [384, 192, 384, 48, 128, 128]),
];
const STEM: [usize; 3] = [64, 64, 192];

pub fn matches(store: &WeightStore) -> bool {
    store.contains("conv1.conv.weight")
        && store.contains("inception3a.branch1.conv.weight")
        && store.contains("inception5b.branch4.1.conv.weight")
}

/// torchvision's `_transform_input` (googlenet.py:102, inception.py:95) as one per-channel
/// affine map, no module; skipped when `b.transform_input` is `Some(false)`.
pub(super) fn transform_input(b: &mut Builder, x: ValueId) -> ValueId {
    let on = b.transform_input.unwrap_or(true);
    b.transform_input_applied = Some(on);
    if !on {
        return x;
    }
    let (mean, std) = ([0.485f64, 0.456, 0.406], [0.229f64, 0.224, 0.225]);
    // torch multiplies an f32 tensor by a Python float, then adds one, each rounded to f32.
    let scale = std.map(|s| (s / 0.5) as f32).to_vec();
    let shift = mean.map(|m| ((m - 0.5) / 0.5) as f32).to_vec();
    b.affine("transform_input", "", x, scale, shift)
}

/// `family` when every (part, widths read, torchvision's widths) agrees, else a "custom" name
/// saying how the widths differ (all by one factor, as in a narrowed model, or which parts).
pub(super) fn variant_name(family: &str, parts: &[(&str, Vec<usize>, Vec<usize>)]) -> String {
    if parts.iter().all(|(_, ours, theirs)| ours == theirs) {
        return family.to_string();
    }
    let (ours, theirs): (Vec<usize>, Vec<usize>) = parts
        .iter()
        .flat_map(|(_, o, t)| o.iter().copied().zip(t.iter().copied()))
        .unzip();
    let d = theirs[0] / ours[0].max(1);
    if d > 1 && ours.iter().zip(&theirs).all(|(o, t)| o * d == *t) {
        return format!("{family} (custom, every width 1/{d} of torchvision's)");
    }
    let differ: Vec<&str> = parts
        .iter()
        .filter(|(_, o, t)| o != t)
        .map(|(n, _, _)| *n)
        .collect();
    format!("{family} (custom widths in {})", differ.join(", "))
}

/// A BasicConv2d `name` (conv, BatchNorm with eps 1e-3, functional ReLU).
pub(super) fn basic_conv(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c_in: Option<usize>,
    spec: ConvSpec,
) -> Result<(ValueId, usize)> {
    let m = b.begin(name, "BasicConv2d");
    let (v, c) = b.conv(&format!("{name}.conv"), x, c_in, spec)?;
    let v = b.batch_norm_eps(&format!("{name}.bn"), v, c, BN_EPS)?;
    let v = b.relu(None, v);
    b.end(m, v);
    Ok((v, c))
}

pub fn build(b: &mut Builder) -> Result<Built> {
    b.ignore_prefix("aux1.");
    b.ignore_prefix("aux2.");
    let x = transform_input(b, Builder::INPUT);
    let (x, c1) = basic_conv(b, "conv1", x, None, ConvSpec::k(7).stride(2).pad(3))?;
    let x = b.max_pool(Some("maxpool1"), x, 3, 2, 0, true);
    let (x, c2) = basic_conv(b, "conv2", x, Some(c1), ConvSpec::k(1))?;
    let (x, c3) = basic_conv(b, "conv3", x, Some(c2), ConvSpec::k(3).pad(1))?;
    let mut x = b.max_pool(Some("maxpool2"), x, 3, 2, 0, true);
    let mut c = c3;
    let mut widths = vec![];
    for (name, pool, _) in BLOCKS {
        if let Some((pool, k)) = pool {
            x = b.max_pool(Some(pool), x, k, 2, 0, true);
        }
        let w;
        (x, c, w) = inception(b, name, x, c)?;
        widths.push(w);
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.flatten(x);
    let x = b.dropout("dropout", x);
    let (output, num_classes) = b.linear("fc", x, Some(c))?;

    let mut read = vec![("stem", vec![c1, c2, c3], STEM.to_vec())];
    for ((name, _, theirs), ours) in BLOCKS.iter().zip(&widths) {
        read.push((name, ours.to_vec(), theirs.to_vec()));
    }
    let variant = variant_name("googlenet", &read);
    Ok(Built {
        output,
        num_classes,
        default_layer: "inception5b".into(),
        variant,
        preprocess: Some(Preprocess::imagenet("GoogLeNet_Weights.IMAGENET1K_V1")),
    })
}

/// An Inception block: its output, channels and the six widths.
fn inception(
    b: &mut Builder,
    name: &str,
    x: ValueId,
    c: usize,
) -> Result<(ValueId, usize, [usize; 6])> {
    let m = b.begin(name, "Inception");
    let (b1, w1) = basic_conv(b, &format!("{name}.branch1"), x, Some(c), ConvSpec::k(1))?;
    let branch = |b: &mut Builder, i: usize| -> Result<(ValueId, usize, usize)> {
        let s = format!("{name}.branch{i}");
        let seq = b.begin(&s, "Sequential");
        let (v, red) = basic_conv(b, &format!("{s}.0"), x, Some(c), ConvSpec::k(1))?;
        let (v, w) = basic_conv(b, &format!("{s}.1"), v, Some(red), ConvSpec::k(3).pad(1))?;
        b.end(seq, v);
        Ok((v, red, w))
    };
    let (b2, r2, w2) = branch(b, 2)?;
    let (b3, r3, w3) = branch(b, 3)?;
    let s = format!("{name}.branch4");
    let seq = b.begin(&s, "Sequential");
    let v = b.max_pool(Some(&format!("{s}.0")), x, 3, 1, 1, true);
    let (b4, w4) = basic_conv(b, &format!("{s}.1"), v, Some(c), ConvSpec::k(1))?;
    b.end(seq, b4);
    let out = b.concat(vec![b1, b2, b3, b4], 1);
    b.end(m, out);
    Ok((out, w1 + w2 + w3 + w4, [w1, r2, w2, r3, w3, w4]))
}

#[cfg(test)]
mod tests {
    use crate::model::builder::Builder;
    use crate::model::graph::op::Op;
    use crate::model::weights::WeightStore;
    use crate::model::Model;
    use std::path::Path;

    fn fixture(name: &str) -> WeightStore {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
        WeightStore::load(&dir.join(name).join("model.safetensors")).unwrap()
    }

    /// Checkpoints saved with `aux_logits=False` (or stripped of the aux heads) load too, and
    /// list the same modules as those with them.
    #[test]
    fn aux_heads_present_or_absent_both_load() {
        for (fixture_name, prefix) in [("googlenet", "aux"), ("inception_v3", "AuxLogits.")] {
            let full = fixture(fixture_name);
            assert!(full.names().any(|n| n.starts_with(prefix)));
            let with = Model::from_store(&full, None).unwrap();
            let stripped = full
                .tensors()
                .iter()
                .filter(|(n, _)| !n.starts_with(prefix))
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            let without = WeightStore::from_tensors(fixture_name, stripped);
            let without = Model::from_store(&without, None).unwrap();
            assert_eq!(with.arch, without.arch);
            assert_eq!(with.num_classes, 10);
            let names = |m: &Model| -> Vec<String> {
                m.graph.modules.iter().map(|m| m.name.clone()).collect()
            };
            assert_eq!(names(&with), names(&without));
        }
    }

    /// transform_input is on unless the builder is told otherwise.
    #[test]
    fn transform_input_is_on_by_default_and_can_be_turned_off() {
        for (fixture_name, build) in [
            (
                "googlenet",
                super::build as fn(&mut Builder) -> crate::error::Result<_>,
            ),
            ("inception_v3", super::super::inception::build),
        ] {
            for setting in [None, Some(true), Some(false)] {
                let store = fixture(fixture_name);
                let mut b = Builder::new(&store, fixture_name);
                b.transform_input = setting;
                let built = build(&mut b).unwrap();
                let graph = b.finish(built.output).unwrap();
                let first_is_affine = matches!(graph.nodes[0].op, Op::Affine(_));
                assert_eq!(first_is_affine, setting != Some(false), "{fixture_name}");
            }
        }
    }
}
