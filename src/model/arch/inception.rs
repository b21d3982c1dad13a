//! torchvision Inception v3 (torchvision/models/inception.py, `Inception3`, `InceptionA`–`E`,
//! `BasicConv2d`): a BasicConv2d stem (3×3/2, 3×3, 3×3 p1, max-pool, 1×1, 3×3, max-pool), the
//! Mixed blocks 5b–5d (A), 6a (B), 6b–6e (C), 7a (D), 7b–7c (E), then an adaptive average
//! pool, Dropout (on the 2048×1×1 map), flatten and `fc`.
//!
//! A BasicConv2d is conv (no bias) → BatchNorm2d(eps=0.001) → functional ReLU (the module's
//! output). The blocks' pool branches are functional: A/C/E `F.avg_pool2d(3, 1, 1)` with
//! count_include_pad (border windows divide by 9), B/D `F.max_pool2d(3, 2)`. C and D use 1×7 /
//! 7×1 convs, E 1×3 / 3×1 pairs whose outputs are concatenated.
//!
//! From the weights: every width and the classes (kernel sizes checked). From torchvision's
//! definition: the block list and kinds, strides, paddings, pools, eps. The auxiliary head
//! `AuxLogits` runs only in training: its tensors may be present or absent and are never used.
//! The variant is `inception_v3` when every width is torchvision's.
//!
//! `transform_input` (inception.py:95–101) is not in the weights; it is on unless
//! `Builder::transform_input` is `Some(false)`, as for GoogLeNet (see googlenet.rs).
//!
//! The default Grad-CAM layer is `Mixed_7c`. Preprocessing: Inception_V3_Weights.IMAGENET1K_V1
//! (resize 342, crop 299, bilinear; tests/fixtures/families/manifests/preprocess_v1.json).

use super::googlenet::{basic_conv, transform_input, variant_name};
use super::{Built, Filter, Preprocess};
use crate::error::Result;
use crate::model::builder::{Builder, ConvSpec};
use crate::model::graph::ValueId;
use crate::model::weights::WeightStore;

pub const VARIANT_NAMES: &[&str] = &["inception_v3"];

#[derive(Clone, Copy)]
enum Kind {
    /// InceptionA(pool_features)
    A(usize),
    B,
    /// InceptionC(channels_7x7)
    C(usize),
    D,
    E,
}

const BLOCKS: [(&str, Kind); 11] = [
    ("Mixed_5b", Kind::A(32)),
    ("Mixed_5c", Kind::A(64)),
    ("Mixed_5d", Kind::A(64)),
    ("Mixed_6a", Kind::B),
    ("Mixed_6b", Kind::C(128)),
    ("Mixed_6c", Kind::C(160)),
    ("Mixed_6d", Kind::C(160)),
    ("Mixed_6e", Kind::C(192)),
    ("Mixed_7a", Kind::D),
    ("Mixed_7b", Kind::E),
    ("Mixed_7c", Kind::E),
];

const STEM: [usize; 5] = [32, 32, 64, 80, 192];

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::A(_) => "InceptionA",
            Kind::B => "InceptionB",
            Kind::C(_) => "InceptionC",
            Kind::D => "InceptionD",
            Kind::E => "InceptionE",
        }
    }

    /// torchvision's conv widths, in registration order.
    fn widths(self) -> Vec<usize> {
        match self {
            Kind::A(pf) => vec![64, 48, 64, 64, 96, 96, pf],
            Kind::B => vec![384, 64, 96, 96],
            Kind::C(c7) => vec![192, c7, c7, 192, c7, c7, c7, c7, 192, 192],
            Kind::D => vec![192, 320, 192, 192, 192, 192],
            Kind::E => vec![320, 384, 384, 384, 448, 384, 384, 384, 192],
        }
    }
}

pub fn matches(store: &WeightStore) -> bool {
    store.contains("Conv2d_1a_3x3.conv.weight") && store.contains("Mixed_5b.branch1x1.conv.weight")
}

/// A block's BasicConv2d layers, recording their widths.
struct Block<'n> {
    name: &'n str,
    widths: Vec<usize>,
}

impl Block<'_> {
    fn conv(
        &mut self,
        b: &mut Builder,
        part: &str,
        x: ValueId,
        c: usize,
        spec: ConvSpec,
    ) -> Result<(ValueId, usize)> {
        let (v, w) = basic_conv(b, &format!("{}.{part}", self.name), x, Some(c), spec)?;
        self.widths.push(w);
        Ok((v, w))
    }

    /// A chain of BasicConv2d layers `parts` from x.
    fn chain(
        &mut self,
        b: &mut Builder,
        x: ValueId,
        c: usize,
        parts: &[(&str, ConvSpec)],
    ) -> Result<(ValueId, usize)> {
        let (mut v, mut w) = (x, c);
        for (part, spec) in parts {
            (v, w) = self.conv(b, part, v, w, *spec)?;
        }
        Ok((v, w))
    }
}

pub fn build(b: &mut Builder) -> Result<Built> {
    b.ignore_prefix("AuxLogits.");
    let x = transform_input(b, Builder::INPUT);
    let k3 = ConvSpec::k(3).pad(0);
    let (x, c1) = basic_conv(b, "Conv2d_1a_3x3", x, None, k3.stride(2))?;
    let (x, c2) = basic_conv(b, "Conv2d_2a_3x3", x, Some(c1), k3)?;
    let (x, c3) = basic_conv(b, "Conv2d_2b_3x3", x, Some(c2), ConvSpec::k(3).pad(1))?;
    let x = b.max_pool(Some("maxpool1"), x, 3, 2, 0, false);
    let (x, c4) = basic_conv(b, "Conv2d_3b_1x1", x, Some(c3), ConvSpec::k(1))?;
    let (x, c5) = basic_conv(b, "Conv2d_4a_3x3", x, Some(c4), k3)?;
    let mut x = b.max_pool(Some("maxpool2"), x, 3, 2, 0, false);
    let mut c = c5;
    let mut read = vec![("stem", vec![c1, c2, c3, c4, c5], STEM.to_vec())];
    for (name, kind) in BLOCKS {
        let m = b.begin(name, kind.class());
        let mut blk = Block {
            name,
            widths: vec![],
        };
        (x, c) = match kind {
            Kind::A(_) => block_a(b, &mut blk, x, c)?,
            Kind::B => block_b(b, &mut blk, x, c)?,
            Kind::C(_) => block_c(b, &mut blk, x, c)?,
            Kind::D => block_d(b, &mut blk, x, c)?,
            Kind::E => block_e(b, &mut blk, x, c)?,
        };
        b.end(m, x);
        read.push((name, blk.widths, kind.widths()));
    }
    let x = b.adaptive_avg_pool(Some("avgpool"), x, (1, 1));
    let x = b.dropout("dropout", x);
    let x = b.flatten(x);
    let (output, num_classes) = b.linear("fc", x, Some(c))?;
    Ok(Built {
        output,
        num_classes,
        default_layer: "Mixed_7c".into(),
        variant: variant_name("inception_v3", &read),
        preprocess: Some(Preprocess::imagenet_sized(
            "Inception_V3_Weights.IMAGENET1K_V1",
            342,
            299,
            Filter::Bilinear,
        )),
    })
}

/// `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)`, then the `branch_pool` conv.
fn avg_pool_branch(
    b: &mut Builder,
    blk: &mut Block,
    x: ValueId,
    c: usize,
) -> Result<(ValueId, usize)> {
    let v = b.avg_pool(None, x, 3, 1, 1, false, true);
    blk.conv(b, "branch_pool", v, c, ConvSpec::k(1))
}

fn cat(b: &mut Builder, branches: &[(ValueId, usize)]) -> (ValueId, usize) {
    let v = b.concat(branches.iter().map(|t| t.0).collect(), 1);
    (v, branches.iter().map(|t| t.1).sum())
}

fn block_a(b: &mut Builder, blk: &mut Block, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let b1 = blk.conv(b, "branch1x1", x, c, ConvSpec::k(1))?;
    let b5 = blk.chain(
        b,
        x,
        c,
        &[
            ("branch5x5_1", ConvSpec::k(1)),
            ("branch5x5_2", ConvSpec::k(5)),
        ],
    )?;
    let b3 = blk.chain(
        b,
        x,
        c,
        &[
            ("branch3x3dbl_1", ConvSpec::k(1)),
            ("branch3x3dbl_2", ConvSpec::k(3)),
            ("branch3x3dbl_3", ConvSpec::k(3)),
        ],
    )?;
    let bp = avg_pool_branch(b, blk, x, c)?;
    Ok(cat(b, &[b1, b5, b3, bp]))
}

fn block_b(b: &mut Builder, blk: &mut Block, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let s2 = ConvSpec::k(3).pad(0).stride(2);
    let b3 = blk.conv(b, "branch3x3", x, c, s2)?;
    let bd = blk.chain(
        b,
        x,
        c,
        &[
            ("branch3x3dbl_1", ConvSpec::k(1)),
            ("branch3x3dbl_2", ConvSpec::k(3)),
            ("branch3x3dbl_3", s2),
        ],
    )?;
    let bp = b.max_pool(None, x, 3, 2, 0, false);
    Ok(cat(b, &[b3, bd, (bp, c)]))
}

fn block_c(b: &mut Builder, blk: &mut Block, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let (r17, r71) = (ConvSpec::rect(1, 7), ConvSpec::rect(7, 1));
    let b1 = blk.conv(b, "branch1x1", x, c, ConvSpec::k(1))?;
    let b7 = blk.chain(
        b,
        x,
        c,
        &[
            ("branch7x7_1", ConvSpec::k(1)),
            ("branch7x7_2", r17),
            ("branch7x7_3", r71),
        ],
    )?;
    let bd = blk.chain(
        b,
        x,
        c,
        &[
            ("branch7x7dbl_1", ConvSpec::k(1)),
            ("branch7x7dbl_2", r71),
            ("branch7x7dbl_3", r17),
            ("branch7x7dbl_4", r71),
            ("branch7x7dbl_5", r17),
        ],
    )?;
    let bp = avg_pool_branch(b, blk, x, c)?;
    Ok(cat(b, &[b1, b7, bd, bp]))
}

fn block_d(b: &mut Builder, blk: &mut Block, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let s2 = ConvSpec::k(3).pad(0).stride(2);
    let b3 = blk.chain(
        b,
        x,
        c,
        &[("branch3x3_1", ConvSpec::k(1)), ("branch3x3_2", s2)],
    )?;
    let b7 = blk.chain(
        b,
        x,
        c,
        &[
            ("branch7x7x3_1", ConvSpec::k(1)),
            ("branch7x7x3_2", ConvSpec::rect(1, 7)),
            ("branch7x7x3_3", ConvSpec::rect(7, 1)),
            ("branch7x7x3_4", s2),
        ],
    )?;
    let bp = b.max_pool(None, x, 3, 2, 0, false);
    Ok(cat(b, &[b3, b7, (bp, c)]))
}

fn block_e(b: &mut Builder, blk: &mut Block, x: ValueId, c: usize) -> Result<(ValueId, usize)> {
    let (r13, r31) = (ConvSpec::rect(1, 3), ConvSpec::rect(3, 1));
    let b1 = blk.conv(b, "branch1x1", x, c, ConvSpec::k(1))?;
    let (v, w) = blk.conv(b, "branch3x3_1", x, c, ConvSpec::k(1))?;
    let a = blk.conv(b, "branch3x3_2a", v, w, r13)?;
    let bb = blk.conv(b, "branch3x3_2b", v, w, r31)?;
    let b3 = cat(b, &[a, bb]);
    let (v, w) = blk.chain(
        b,
        x,
        c,
        &[
            ("branch3x3dbl_1", ConvSpec::k(1)),
            ("branch3x3dbl_2", ConvSpec::k(3)),
        ],
    )?;
    let a = blk.conv(b, "branch3x3dbl_3a", v, w, r13)?;
    let bb = blk.conv(b, "branch3x3dbl_3b", v, w, r31)?;
    let bd = cat(b, &[a, bb]);
    let bp = avg_pool_branch(b, blk, x, c)?;
    Ok(cat(b, &[b1, b3, bd, bp]))
}
