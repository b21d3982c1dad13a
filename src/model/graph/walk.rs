//! The one graph walker, for Grad-CAM's passes and for training: a forward pass that keeps
//! what the chosen backward passes read (every value when training) and frees the rest at its
//! last use, and a backward pass that visits only the ops between the logits and its target,
//! accumulates the gradients of values read several times, and hands each node to a callback
//! (training computes the weight gradients there).

use super::op::{Ctx, Fwd, Io, Pool, Saves};
use super::{Graph, Op, Plan, ValueId};
use crate::backend::{Backend, ConvEpilogue};
use crate::error::Result;
use crate::ops::{ActivationParams, BinaryOp, BinaryParams, SqueezeExciteParams};
use std::rc::Rc;

/// What a forward pass keeps.
pub struct Values<B: Backend> {
    /// By value id; None once freed.
    pub values: Vec<Option<Rc<B::Buf>>>,
    /// By node: argmax indices.
    pub aux: Vec<Option<B::Idx>>,
    /// By node: training-mode dropout masks.
    pub masks: Vec<Option<B::Buf>>,
}

/// What a forward pass must keep for backward passes over `scopes`: every value an op of
/// theirs saves, and the argmaxes, plus `extra` values.
pub struct Keep {
    pub values: Vec<bool>,
    pub aux: Vec<bool>,
}

impl Keep {
    /// Keeps `extra` and what the backward passes of `scopes` read.
    pub fn for_scopes(g: &Graph, scopes: &[&Scope], extra: &[ValueId]) -> Keep {
        let mut k = Keep {
            values: vec![false; g.num_values],
            aux: vec![false; g.nodes.len()],
        };
        for &v in extra {
            k.values[v] = true;
        }
        for scope in scopes {
            for (i, n) in g.nodes.iter().enumerate() {
                if !scope.downstream[i] {
                    continue;
                }
                let s: Saves = n.op.saves();
                if s.inputs {
                    n.inputs.iter().for_each(|&v| k.values[v] = true);
                }
                if s.output {
                    k.values[n.output] = true;
                }
                k.aux[i] |= s.aux;
            }
        }
        k
    }

    /// Keeps everything (training).
    pub fn all(g: &Graph) -> Keep {
        Keep {
            values: vec![true; g.num_values],
            aux: vec![true; g.nodes.len()],
        }
    }
}

/// The part of the graph one backward pass visits: the ops downstream of its targets, and the
/// values that receive a gradient.
pub struct Scope {
    /// The values whose gradients the pass returns (every one is kept, even when an op
    /// downstream of another target reads it).
    pub targets: Vec<ValueId>,
    pub needs: Vec<bool>,
    pub downstream: Vec<bool>,
}

impl Scope {
    /// A backward pass from the output to `target`; with `target_grad` false the target's own
    /// gradient is not computed (training: the input image needs none).
    pub fn new(g: &Graph, target: ValueId, target_grad: bool) -> Scope {
        let mut s = Scope::multi(g, &[target]);
        s.needs[target] = target_grad;
        s
    }

    /// One backward pass from the output to every value of `targets` (several CAM layers;
    /// FullGrad's bias layers and the input).
    pub fn multi(g: &Graph, targets: &[ValueId]) -> Scope {
        let mut needs = vec![false; g.num_values];
        targets.iter().for_each(|&t| needs[t] = true);
        let mut downstream = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            if n.inputs.iter().any(|&v| needs[v]) {
                downstream[i] = true;
                needs[n.output] = true;
            }
        }
        Scope {
            targets: targets.to_vec(),
            needs,
            downstream,
        }
    }

    /// The first target (the only one of `new`).
    pub fn target(&self) -> ValueId {
        self.targets[0]
    }
}

fn shapes<'a>(plan: &'a Plan, ids: &[ValueId]) -> Vec<&'a [usize]> {
    ids.iter().map(|&v| plan.shapes[v].as_slice()).collect()
}

/// Runs the graph on input `x`, keeping `keep`. With `fuse`, chains whose intermediate
/// values nothing else reads run as one backend call (see `fusable`): conv → BatchNorm
/// (→ add) (→ activation), (concat →) BatchNorm → activation, linear → activation, and
/// squeeze-excitation blocks.
pub fn forward<B: Backend>(
    cx: &Ctx<B>,
    plan: &Plan,
    x: B::Buf,
    keep: &Keep,
    fuse: bool,
) -> Result<Values<B>> {
    let g = cx.graph;
    let mut values: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
    values[g.input] = Some(Rc::new(x));
    forward_nodes(cx, plan, values, None, keep, fuse)
}

/// Runs only the nodes downstream of `scope`'s targets (AblationCAM: the network above the
/// target layer), on `values`, which holds the targets and every other value those nodes read.
pub fn forward_from<B: Backend>(
    cx: &Ctx<B>,
    plan: &Plan,
    values: Vec<Option<Rc<B::Buf>>>,
    scope: &Scope,
    keep: &Keep,
) -> Result<Values<B>> {
    forward_nodes(cx, plan, values, Some(&scope.downstream), keep, true)
}

/// The values that the nodes downstream of `scope` read from nodes that are not (what
/// `forward_from` needs besides the targets).
pub fn read_from_outside(g: &Graph, scope: &Scope) -> Vec<ValueId> {
    let mut made = vec![false; g.num_values];
    scope.targets.iter().for_each(|&t| made[t] = true);
    let mut outside = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !scope.downstream[i] {
            continue;
        }
        for &v in &n.inputs {
            if !made[v] && !outside.contains(&v) {
                outside.push(v);
            }
        }
        made[n.output] = true;
    }
    outside
}

fn forward_nodes<B: Backend>(
    cx: &Ctx<B>,
    plan: &Plan,
    mut values: Vec<Option<Rc<B::Buf>>>,
    run: Option<&[bool]>,
    keep: &Keep,
    fuse: bool,
) -> Result<Values<B>> {
    let g = cx.graph;
    let last_use = g.last_uses();
    let mut aux: Vec<Option<B::Idx>> = (0..g.nodes.len()).map(|_| None).collect();
    let mut masks: Vec<Option<B::Buf>> = (0..g.nodes.len()).map(|_| None).collect();
    let mut i = 0;
    while i < g.nodes.len() {
        if run.is_some_and(|r| !r[i]) {
            i += 1;
            continue;
        }
        let node = &g.nodes[i];
        let inputs: Vec<Rc<B::Buf>> = node
            .inputs
            .iter()
            .map(|&v| values[v].clone().expect("inputs are computed before use"))
            .collect();
        let x_shapes = shapes(plan, &node.inputs);
        let fusion = if fuse {
            fusable(g, plan, &last_use, i, &keep.values)
        } else {
            None
        };
        let (last, out) = match &fusion {
            Some(fused @ Fusion::Conv(f)) => {
                let Op::Conv2d(conv) = &node.op else {
                    unreachable!("a conv chain starts at a conv")
                };
                let p = conv.params(g, x_shapes[0]).expect("planned");
                let residual = f.residual.map(|v| values[v].clone().expect("computed"));
                let e = ConvEpilogue {
                    bn: f.bn.map(|(s, t)| (cx.param(s), cx.param(t))),
                    residual: residual.as_deref(),
                    act: f.act,
                };
                let bias = conv.bias.map(|b| cx.param(b));
                let y = cx.timed(&fused.key(i), || {
                    cx.be
                        .conv2d_fused(&p, &inputs[0], cx.param(conv.weight), bias, &e)
                })?;
                (f.last, Fwd::new(y))
            }
            Some(fused @ Fusion::Affine(f)) => {
                // The pieces are the concat's inputs, or the BatchNorm's one input.
                let pieces: Vec<(&B::Buf, usize)> = inputs
                    .iter()
                    .zip(&x_shapes)
                    .map(|(v, s)| (&**v, s[1]))
                    .collect();
                let Op::Affine(bn) = &g.nodes[f.bn].op else {
                    unreachable!("an affine chain has a BatchNorm")
                };
                let whole = &plan.shapes[g.nodes[f.bn].inputs[0]];
                let p = bn.params(g, whole).expect("planned");
                let (scale, shift) = (cx.param(bn.scale), cx.param(bn.shift));
                let y = cx.timed(&fused.key(i), || {
                    cx.be
                        .channel_affine_fused(&p, &pieces, scale, shift, f.act.as_ref())
                })?;
                (f.last, Fwd::new(y))
            }
            Some(fused @ Fusion::Linear { act, last }) => {
                let Op::Linear(lin) = &node.op else {
                    unreachable!("a linear chain starts at a linear")
                };
                let p = lin.params(g, x_shapes[0]).expect("planned");
                let bias = lin.bias.map(|b| cx.param(b));
                let y = cx.timed(&fused.key(i), || {
                    cx.be
                        .linear_fused(&p, &inputs[0], cx.param(lin.weight), bias, act)
                })?;
                (*last, Fwd::new(y))
            }
            Some(fused @ Fusion::SqueezeExcite(f)) => {
                let (Op::Conv2d(fc1), Op::Conv2d(fc2)) = (&g.nodes[f.fc1].op, &g.nodes[f.fc2].op)
                else {
                    unreachable!("a squeeze-excitation chain has two convs")
                };
                let x = x_shapes[0];
                let p = SqueezeExciteParams {
                    n: x[0],
                    c: x[1],
                    h: x[2],
                    w: x[3],
                    squeeze: plan.shapes[g.nodes[f.fc1].output][1],
                    act: f.act,
                    gate: f.gate,
                };
                let w1 = (cx.param(fc1.weight), cx.param(fc1.bias.expect("fusable")));
                let w2 = (cx.param(fc2.weight), cx.param(fc2.bias.expect("fusable")));
                let y = cx.timed(&fused.key(i), || {
                    cx.be.squeeze_excitation(&p, &inputs[0], w1, w2)
                })?;
                (f.last, Fwd::new(y))
            }
            None if keep.aux[i] => (i, node.op.forward(cx, &x_shapes, &inputs)?),
            None => (i, node.op.forward_without_aux(cx, &x_shapes, &inputs)?),
        };
        drop(inputs);
        values[g.nodes[last].output] = Some(out.y);
        if keep.aux[last] {
            aux[last] = out.aux;
        }
        masks[last] = out.mask;
        for n in &g.nodes[i..=last] {
            for &v in &n.inputs {
                if last_use[v] <= last && !keep.values[v] {
                    values[v] = None;
                }
            }
        }
        i = last + 1;
    }
    Ok(Values { values, aux, masks })
}

/// Walks back from the output (gradient `seed`) through the ops of `scope`, computing input
/// gradients where `scope.needs` them, and returns the gradient of every value it reached
/// (the target's among them). `on_node(i, io, dy)` sees each visited node with its saved
/// values and output gradient before its input gradients are computed.
pub fn backward<B: Backend>(
    cx: &Ctx<B>,
    plan: &Plan,
    fw: &Values<B>,
    scope: &Scope,
    seed: Rc<B::Buf>,
    mut on_node: impl FnMut(usize, &Io<B>, &B::Buf) -> Result<()>,
) -> Result<Vec<Option<Rc<B::Buf>>>> {
    let g = cx.graph;
    let mut grads: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
    grads[g.output] = Some(seed);
    for (i, node) in g.nodes.iter().enumerate().rev() {
        if !scope.downstream[i] {
            continue;
        }
        // A target's gradient stays for the caller; other gradients are consumed.
        let dy = if scope.targets.contains(&node.output) {
            grads[node.output].clone()
        } else {
            grads[node.output].take()
        };
        let Some(dy) = dy else {
            continue;
        };
        let io = Io {
            inputs: node
                .inputs
                .iter()
                .map(|&v| fw.values[v].as_deref())
                .collect(),
            output: fw.values[node.output].as_deref(),
            aux: fw.aux[i].as_ref(),
            mask: fw.masks[i].as_ref(),
        };
        on_node(i, &io, &dy)?;
        let need: Vec<bool> = node.inputs.iter().map(|&v| scope.needs[v]).collect();
        if !need.iter().any(|&n| n) {
            continue;
        }
        let x_shapes = shapes(plan, &node.inputs);
        let dx = node.op.backward(cx, &x_shapes, &io, &dy, &need)?;
        for (&v, d) in node.inputs.iter().zip(dx) {
            let Some(d) = d else { continue };
            grads[v] = Some(match grads[v].take() {
                None => d,
                Some(acc) => {
                    let p =
                        BinaryParams::broadcast(BinaryOp::Add, &plan.shapes[v], &plan.shapes[v])
                            .expect("same shapes broadcast")
                            .0;
                    Rc::new(cx.timed("add.backward", || cx.be.binary(&p, &acc, &d))?)
                }
            });
        }
    }
    Ok(grads)
}

/// A chain of ops that runs as one backend call.
enum Fusion {
    Conv(ConvChain),
    Affine(AffineChain),
    /// A linear and the activation after it (ConvNeXt's Linear → GELU).
    Linear {
        act: ActivationParams,
        last: usize,
    },
    SqueezeExcite(SqueezeExciteChain),
}

/// A squeeze-excitation block that runs as one `squeeze_excitation` call: the global average
/// pool (the chain's first node), fc1, its activation, fc2, the gate, and the multiply of the
/// gates with the pool's input (`last`).
struct SqueezeExciteChain {
    fc1: usize,
    fc2: usize,
    act: ActivationParams,
    gate: ActivationParams,
    last: usize,
}

/// A conv (→ BatchNorm (→ add)) (→ activation) chain that runs as one `conv2d_fused` call.
struct ConvChain {
    /// The BatchNorm's (scale, shift) params.
    bn: Option<(usize, usize)>,
    /// The value added after the BatchNorm.
    residual: Option<usize>,
    act: Option<ActivationParams>,
    /// The chain's last node.
    last: usize,
}

/// A (channel concat →) BatchNorm (→ activation) chain that runs as one
/// `channel_affine_fused` call: DenseNet's pre-activation cat → norm → relu.
struct AffineChain {
    /// The BatchNorm's node.
    bn: usize,
    act: Option<ActivationParams>,
    last: usize,
}

impl Fusion {
    /// The name its time is reported under: its ops' names joined by `+`. `first`: the
    /// chain's first node.
    fn key(&self, first: usize) -> String {
        let (mut key, act) = match self {
            Fusion::Conv(f) => {
                let mut key = String::from("conv2d");
                if f.bn.is_some() {
                    key += "+batch_norm";
                }
                if f.residual.is_some() {
                    key += "+add";
                }
                (key, f.act)
            }
            Fusion::Affine(f) => {
                let cat = if first < f.bn { "cat+" } else { "" };
                (format!("{cat}batch_norm"), f.act)
            }
            Fusion::Linear { act, .. } => ("linear".into(), Some(*act)),
            Fusion::SqueezeExcite(_) => return "squeeze_excitation".into(),
        };
        if let Some(a) = act {
            key += "+";
            key += a.act.name();
        }
        key
    }
}

/// The chain starting at node `i` that can run as one fused call, if any:
/// - a conv with the BatchNorm after it, then a residual add, then an activation (the add
///   only after a BatchNorm; at least one of BatchNorm and activation);
/// - a concat along channels with the BatchNorm after it (then an activation);
/// - a BatchNorm, or a linear, with the activation after it;
/// - a squeeze-excitation block: global average pool → 1×1 conv (with bias) → activation →
///   1×1 conv (with bias) back to the pool's channels → gate activation → multiply by the
///   pool's input.
///
/// Each op of a chain reads the previous one's output, which nothing else reads or keeps; a
/// residual add's other input is computed before the conv.
fn fusable(g: &Graph, plan: &Plan, last_use: &[usize], i: usize, keep: &[bool]) -> Option<Fusion> {
    let nodes = &g.nodes;
    // Whether node `to` is the only reader of node `from`'s output, which is not kept.
    let only_reader = |from: usize, to: usize| {
        let v = nodes[from].output;
        nodes.get(to).is_some_and(|n| n.inputs.contains(&v)) && last_use[v] == to && !keep[v]
    };
    let reads_only =
        |from: usize, to: usize| only_reader(from, to) && nodes[to].inputs == [nodes[from].output];
    // The activation at `last + 1`, if it can join a chain ending at `last`: what its backward
    // reads (its input, or its output) is kept, and then not fused, by `reads_only`'s test.
    let activation = |last: usize| match nodes.get(last + 1).map(|n| &n.op) {
        Some(Op::Act(a)) if reads_only(last, last + 1) => {
            Some(a.params(&plan.shapes[nodes[last + 1].output]))
        }
        _ => None,
    };
    let affine_chain = |bn: usize| {
        let act = activation(bn);
        Fusion::Affine(AffineChain {
            bn,
            act,
            last: bn + act.is_some() as usize,
        })
    };
    match &nodes[i].op {
        Op::Conv2d(_) => {}
        Op::Pool(Pool::AdaptiveAvg((1, 1))) => {
            return squeeze_excitation(g, plan, i, reads_only, only_reader);
        }
        Op::Concat(c)
            if c.axis == 1
                && plan.shapes[nodes[i].output].len() == 4
                && reads_only(i, i + 1)
                && matches!(nodes[i + 1].op, Op::Affine(_)) =>
        {
            return Some(affine_chain(i + 1));
        }
        Op::Affine(_) if activation(i).is_some() => return Some(affine_chain(i)),
        Op::Linear(_) => {
            return activation(i).map(|act| Fusion::Linear { act, last: i + 1 });
        }
        _ => return None,
    }
    if !reads_only(i, i + 1) {
        return None;
    }
    let mut f = ConvChain {
        bn: None,
        residual: None,
        act: None,
        last: i,
    };
    if let Op::Affine(bn) = &nodes[i + 1].op {
        f.bn = Some((bn.scale, bn.shift));
        f.last = i + 1;
        if only_reader(i + 1, i + 2) {
            if let Op::Binary(b) = &nodes[i + 2].op {
                let add = &nodes[i + 2];
                let bn_out = nodes[i + 1].output;
                let other = add.inputs.iter().copied().find(|&v| v != bn_out);
                // The other operand must exist before the conv runs (produced by an earlier
                // node or the graph input) and have the output's shape.
                let earlier = |v: usize| v == g.input || nodes[..i].iter().any(|n| n.output == v);
                let plain_add = b.op == BinaryOp::Add && b.param.is_none() && add.inputs.len() == 2;
                let same_shape = |r: usize| plan.shapes[r] == plan.shapes[bn_out];
                if let Some(r) = other.filter(|&r| plain_add && earlier(r) && same_shape(r)) {
                    f.residual = Some(r);
                    f.last = i + 2;
                }
            }
        }
    }
    if let Some(act) = activation(f.last) {
        f.act = Some(act);
        f.last += 1;
    }
    // A conv alone is not a fusion.
    (f.last > i).then_some(Fusion::Conv(f))
}

/// The squeeze-excitation block starting at the global pool `i`, if the five nodes after it
/// are the rest of one (see [`fusable`]); `reads_only` and `only_reader` are `fusable`'s tests.
fn squeeze_excitation(
    g: &Graph,
    plan: &Plan,
    i: usize,
    reads_only: impl Fn(usize, usize) -> bool,
    only_reader: impl Fn(usize, usize) -> bool,
) -> Option<Fusion> {
    let nodes = &g.nodes;
    let x = *nodes[i].inputs.first()?;
    let shape = &plan.shapes[x];
    // A 1×1 conv with bias, groups 1, stride 1, no padding or dilation, giving `c_out`.
    let pointwise = |k: usize, c_out: Option<usize>| match nodes.get(k).map(|n| &n.op) {
        Some(Op::Conv2d(c)) => {
            let w = &g.params[c.weight].shape;
            c.bias.is_some()
                && c.groups == 1
                && c.stride == (1, 1)
                && c.pad == [0; 4]
                && c.dilation == (1, 1)
                && w.len() == 4
                && w[2..] == [1, 1]
                && c_out.is_none_or(|c_out| w[0] == c_out)
        }
        _ => false,
    };
    let activation = |k: usize| match &nodes[k].op {
        Op::Act(a) => Some(a.params(&plan.shapes[nodes[k].output])),
        _ => None,
    };
    let chained = (i..i + 4).all(|k| reads_only(k, k + 1)) && only_reader(i + 4, i + 5);
    if shape.len() != 4 || !chained || !pointwise(i + 1, None) || !pointwise(i + 3, Some(shape[1]))
    {
        return None;
    }
    let (act, gate) = (activation(i + 2)?, activation(i + 4)?);
    let mul = &nodes[i + 5];
    let gates = nodes[i + 4].output;
    let scales_x = matches!(&mul.op, Op::Binary(b) if b.op == BinaryOp::Mul && b.param.is_none())
        && mul.inputs.len() == 2
        && mul.inputs.contains(&x)
        && mul.inputs.contains(&gates)
        && plan.shapes[mul.output] == *shape;
    scales_x.then_some(Fusion::SqueezeExcite(SqueezeExciteChain {
        fc1: i + 1,
        fc2: i + 3,
        act,
        gate,
        last: i + 5,
    }))
}
