//! FullGrad (pytorch-grad-cam's `FullGrad`): no target layer. The input term |x ⊙ ∂x| and,
//! for every `nn.Conv2d` with a bias and every `nn.BatchNorm2d` (its effective bias
//! β − μγ/√(σ²+ε), the folded affine's shift), |b ⊙ ∂layer|; each (image, channel) plane
//! min-max normalized, resized to the input, summed over channels and terms, normalized once.
//! Resizing is linear, so each layer's planes are summed at the layer's size and resized
//! once (the same sum up to rounding). Each bias is paired with its own layer's gradient;
//! pytorch-grad-cam pairs the biases, listed in module order, with the gradients in the order
//! the layers ran, which differ when a block runs a module defined later first (a ResNet
//! block written to compute its downsample branch first): then its map is wrong and ours is
//! not.

use crate::backend::cpu::cam::{normalize, resize_bilinear};
use crate::model::graph::op::Op;
use crate::model::graph::{Graph, ParamId, ValueId};
use crate::tensor::Tensor;

/// A layer whose output's gradient FullGrad reads, and its bias.
pub struct BiasLayer {
    pub value: ValueId,
    /// [C]
    pub bias: ParamId,
}

/// pytorch-grad-cam's choice: modules whose type is exactly Conv2d (with a bias) or
/// BatchNorm2d.
pub fn bias_layers(g: &Graph) -> Vec<BiasLayer> {
    g.modules
        .iter()
        .filter_map(|m| {
            let node = g.nodes.iter().find(|n| n.output == m.value)?;
            let bias = match (&node.op, m.kind.as_str()) {
                (Op::Conv2d(c), "Conv2d") => c.bias?,
                (Op::Affine(a), "BatchNorm2d") => a.shift,
                _ => return None,
            };
            Some(BiasLayer {
                value: m.value,
                bias,
            })
        })
        .collect()
}

/// One bias layer's gradient [N, C, h, w] and bias [C].
pub struct Term<'a> {
    pub grad: Vec<f32>,
    pub bias: &'a [f32],
    pub shape: &'a [usize],
}

/// x, input_grad: [N, C, H, W] → [N, H, W].
pub fn combine(x: &Tensor, input_grad: &[f32], terms: &[Term]) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let plane = h * w;
    let mut out = vec![0f32; n * plane];
    for (i, total) in out.chunks_mut(plane).enumerate() {
        for ch in 0..c {
            let at = (i * c + ch) * plane;
            let mut p: Vec<f32> = x.data[at..at + plane]
                .iter()
                .zip(&input_grad[at..at + plane])
                .map(|(a, b)| (a * b).abs())
                .collect();
            normalize(&mut p);
            total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
        }
        for t in terms {
            let (tc, th, tw) = (t.shape[1], t.shape[2], t.shape[3]);
            let tp = th * tw;
            let mut sum = vec![0f32; tp];
            for ch in 0..tc {
                let at = (i * tc + ch) * tp;
                let mut p: Vec<f32> = t.grad[at..at + tp]
                    .iter()
                    .map(|g| (t.bias[ch] * g).abs())
                    .collect();
                normalize(&mut p);
                sum.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
            }
            let mut up = vec![0f32; plane];
            resize_bilinear(&sum, th, tw, &mut up, h, w);
            total.iter_mut().zip(&up).for_each(|(t, v)| *t += v);
        }
        normalize(total);
    }
    Tensor::new(vec![n, h, w], out)
}
