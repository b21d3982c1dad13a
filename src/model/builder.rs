//! Builds a `Graph` from a weight store, one PyTorch module at a time, checking every tensor's
//! shape against the layer it feeds: every dimension the architecture fixes (kernel sizes
//! included), as PyTorch's `load_state_dict` does.

use super::graph::op::*;
use super::graph::*;
use super::weights::WeightStore;
use crate::error::{Error, Result};
use crate::ops::{Activation, BinaryOp};
use crate::storage::Weight;
use crate::tensor::Tensor;

/// torchvision's BatchNorm2d default.
pub const BN_EPS: f64 = 1e-5;

/// The geometry of an `nn.Conv2d` as the architecture defines it (the weights carry only the
/// channel counts and kernel size, which are checked against it).
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    /// top, left, bottom, right
    pub pad: [usize; 4],
    pub dilation: (usize, usize),
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A k×k conv, stride 1, padding k/2 ("same" for odd k), no bias.
    pub fn k(k: usize) -> Self {
        Self::rect(k, k)
    }
    /// A kh×kw conv (inception's 1×7 and 7×1), padding (kh/2, kw/2).
    pub fn rect(kh: usize, kw: usize) -> Self {
        ConvSpec {
            kernel: (kh, kw),
            stride: (1, 1),
            pad: [kh / 2, kw / 2, kh / 2, kw / 2],
            dilation: (1, 1),
            groups: 1,
            bias: false,
        }
    }
    pub fn stride(self, s: usize) -> Self {
        ConvSpec {
            stride: (s, s),
            ..self
        }
    }
    /// The same padding on every side.
    pub fn pad(self, p: usize) -> Self {
        ConvSpec {
            pad: [p; 4],
            ..self
        }
    }
    /// Padding top, left, bottom, right (a ZeroPad2d folded in).
    pub fn pad4(self, pad: [usize; 4]) -> Self {
        ConvSpec { pad, ..self }
    }
    pub fn dilation(self, d: usize) -> Self {
        ConvSpec {
            dilation: (d, d),
            ..self
        }
    }
    pub fn groups(self, groups: usize) -> Self {
        ConvSpec { groups, ..self }
    }
    pub fn bias(self, bias: bool) -> Self {
        ConvSpec { bias, ..self }
    }
}

/// Eval BatchNorm as y = x·scale + shift: scale = w / √(var + eps), shift = b − mean·scale
/// (in f64, rounded once).
pub fn fold_batch_norm(
    w: &[f32],
    b: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f64> = (0..w.len())
        .map(|i| w[i] as f64 / (var[i] as f64 + eps).sqrt())
        .collect();
    let shift = (0..w.len())
        .map(|i| (b[i] as f64 - mean[i] as f64 * scale[i]) as f32)
        .collect();
    (scale.iter().map(|&s| s as f32).collect(), shift)
}

pub struct Builder<'a> {
    pub store: &'a WeightStore,
    pub arch: String,
    /// The eps of BatchNorms built with `batch_norm` (torchvision's default, or the family's).
    pub bn_eps: f64,
    /// GoogLeNet / Inception v3 only: whether the graph begins with torchvision's
    /// `transform_input` (it re-normalizes ImageNet-normalized input to the (x - 0.5) / 0.5
    /// that the weights ported from TensorFlow expect). The weights cannot say; None: the
    /// family's default, on, as torchvision's builders set it for pretrained weights.
    pub transform_input: Option<bool>,
    /// Set by the families that have `transform_input`: whether the graph applies it.
    pub transform_input_applied: Option<bool>,
    nodes: Vec<Node>,
    modules: Vec<Module>,
    params: Vec<Weight>,
    param_names: Vec<String>,
    num_values: usize,
}

impl<'a> Builder<'a> {
    pub fn new(store: &'a WeightStore, arch: &str) -> Self {
        Self {
            store,
            arch: arch.to_owned(),
            bn_eps: BN_EPS,
            transform_input: None,
            transform_input_applied: None,
            nodes: vec![],
            modules: vec![],
            params: vec![],
            param_names: vec![],
            num_values: 1, // value 0 is the input
        }
    }

    pub const INPUT: ValueId = 0;

    /// A param that is not a tensor of the store (a folded BatchNorm, a constant).
    pub fn param(&mut self, name: &str, t: impl Into<Weight>) -> ParamId {
        self.params.push(t.into());
        self.param_names.push(name.to_owned());
        self.params.len() - 1
    }

    /// The store's tensor `name` as a param, checked against `expected` (None: any size).
    pub fn take(&mut self, name: &str, expected: &[Option<usize>]) -> Result<ParamId> {
        let t = self.store.take(&self.arch, name, expected)?.clone();
        Ok(self.param(name, t))
    }

    /// The shape of param `p`.
    pub fn param_shape(&self, p: ParamId) -> &[usize] {
        &self.params[p].shape
    }

    /// An op without a module of its own (a functional call, or a module's second call).
    pub fn node(&mut self, op: Op, inputs: Vec<ValueId>, module: Option<&str>) -> ValueId {
        let output = self.num_values;
        self.num_values += 1;
        self.nodes.push(Node {
            op,
            inputs,
            output,
            module: module.map(str::to_owned),
        });
        output
    }

    /// Registers a module in `named_modules()` order; its output value is set by `end`.
    pub fn begin(&mut self, name: &str, kind: &str) -> usize {
        self.modules.push(Module {
            name: name.to_owned(),
            kind: kind.to_owned(),
            value: usize::MAX,
        });
        self.modules.len() - 1
    }

    pub fn end(&mut self, module: usize, value: ValueId) {
        self.modules[module].value = value;
    }

    /// Moves module `name` to just after module `after` in the listing, where PyTorch
    /// registered it (a module that runs early may be declared late).
    pub fn list_after(&mut self, name: &str, after: &str) {
        if let Some(i) = self.modules.iter().position(|m| m.name == name) {
            let m = self.modules.remove(i);
            let j = self
                .modules
                .iter()
                .position(|m| m.name == after)
                .map_or(i, |j| j + 1);
            self.modules.insert(j, m);
        }
    }

    /// A module that is one op.
    pub fn leaf(&mut self, name: &str, kind: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let m = self.begin(name, kind);
        let v = self.node(op, inputs, Some(name));
        self.end(m, v);
        v
    }

    /// A module that is the identity at inference (StochasticDepth, an empty Sequential that
    /// runs, nn.Identity): listed, with its input as its output.
    pub fn identity(&mut self, name: &str, kind: &str, x: ValueId) -> ValueId {
        self.leaf(name, kind, Op::Identity(Identity), vec![x])
    }

    /// Marks the tensors `prefix.*` as belonging to modules that never run at inference
    /// (GoogLeNet's aux heads), so they are neither used nor reported as unexpected.
    pub fn ignore_prefix(&mut self, prefix: &str) {
        self.store.ignore_prefix(prefix);
    }

    /// `nn.Conv2d` named `name` taking `c_in` channels (None: any, for the first layer).
    /// Returns its output and channel count.
    pub fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        c_in: Option<usize>,
        spec: ConvSpec,
    ) -> Result<(ValueId, usize)> {
        let c_in_group = match c_in {
            Some(c) if c % spec.groups != 0 => {
                return Err(Error::UnknownArch {
                    path: self.store.path().to_owned(),
                    reason: format!(
                        "{name}: {c} input channels do not split into {} groups",
                        spec.groups
                    ),
                    known: super::arch::known().join(", "),
                })
            }
            Some(c) => Some(c / spec.groups),
            None => None,
        };
        let (kh, kw) = spec.kernel;
        let weight = self.take(
            &format!("{name}.weight"),
            &[None, c_in_group, Some(kh), Some(kw)],
        )?;
        let c_out = self.params[weight].shape[0];
        let bias = match spec.bias {
            true => Some(self.take(&format!("{name}.bias"), &[Some(c_out)])?),
            false => None,
        };
        let op = Op::Conv2d(Conv2d {
            weight,
            bias,
            stride: spec.stride,
            pad: spec.pad,
            dilation: spec.dilation,
            groups: spec.groups,
        });
        Ok((self.leaf(name, "Conv2d", op, vec![x]), c_out))
    }

    /// Eval-mode `nn.BatchNorm2d` with the builder's eps, folded to y = x·scale + shift.
    pub fn batch_norm(&mut self, name: &str, x: ValueId, c: usize) -> Result<ValueId> {
        let eps = self.bn_eps;
        self.batch_norm_eps(name, x, c, eps)
    }

    /// Eval-mode `nn.BatchNorm2d` with its own eps.
    pub fn batch_norm_eps(
        &mut self,
        name: &str,
        x: ValueId,
        c: usize,
        eps: f64,
    ) -> Result<ValueId> {
        let get = |field: &str| -> Result<Vec<f32>> {
            let full = format!("{name}.{field}");
            Ok(self
                .store
                .take(&self.arch, &full, &[Some(c)])?
                .data
                .to_vec())
        };
        let (w, b) = (get("weight")?, get("bias")?);
        let (mean, var) = (get("running_mean")?, get("running_var")?);
        let (scale, shift) = fold_batch_norm(&w, &b, &mean, &var, eps);
        Ok(self.affine(name, "BatchNorm2d", x, scale, shift))
    }

    /// A per-channel affine map with constants (a folded BatchNorm, GoogLeNet's
    /// transform_input) as module `name` (or a functional op when `kind` is empty).
    pub fn affine(
        &mut self,
        name: &str,
        kind: &str,
        x: ValueId,
        scale: Vec<f32>,
        shift: Vec<f32>,
    ) -> ValueId {
        let c = scale.len();
        let scale = self.param(&format!("{name} (scale)"), Tensor::new(vec![c], scale));
        let shift = self.param(&format!("{name} (shift)"), Tensor::new(vec![c], shift));
        let op = Op::Affine(Affine { scale, shift });
        if kind.is_empty() {
            self.node(op, vec![x], None)
        } else {
            self.leaf(name, kind, op, vec![x])
        }
    }

    /// nn.LayerNorm (or torchvision's LayerNorm2d, `kind`) over axis `axis` of `dim` features.
    pub fn layer_norm(
        &mut self,
        name: &str,
        kind: &str,
        x: ValueId,
        dim: usize,
        axis: usize,
        eps: f32,
    ) -> Result<ValueId> {
        let weight = self.take(&format!("{name}.weight"), &[Some(dim)])?;
        let bias = self.take(&format!("{name}.bias"), &[Some(dim)])?;
        let op = Op::LayerNorm(LayerNorm {
            weight,
            bias,
            eps,
            axis,
        });
        Ok(self.leaf(name, kind, op, vec![x]))
    }

    /// An activation module (`name` Some, its PyTorch class `kind`) or a functional call / a
    /// module's second call (`name` None).
    pub fn act(&mut self, name: Option<&str>, kind: &str, a: Activation, x: ValueId) -> ValueId {
        let op = Op::Act(Act::new(a));
        match name {
            Some(n) => self.leaf(n, kind, op, vec![x]),
            None => self.node(op, vec![x], None),
        }
    }

    /// `nn.ReLU`; `name` None for a functional call or a module's second call.
    pub fn relu(&mut self, name: Option<&str>, x: ValueId) -> ValueId {
        self.act(name, "ReLU", Activation::Relu, x)
    }

    pub fn max_pool(
        &mut self,
        name: Option<&str>,
        x: ValueId,
        k: usize,
        s: usize,
        p: usize,
        ceil_mode: bool,
    ) -> ValueId {
        let op = Op::Pool(Pool::Max(Window {
            kernel: (k, k),
            stride: (s, s),
            pad: (p, p),
            ceil_mode,
        }));
        match name {
            Some(n) => self.leaf(n, "MaxPool2d", op, vec![x]),
            None => self.node(op, vec![x], None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn avg_pool(
        &mut self,
        name: Option<&str>,
        x: ValueId,
        k: usize,
        s: usize,
        p: usize,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> ValueId {
        let op = Op::Pool(Pool::Avg {
            window: Window {
                kernel: (k, k),
                stride: (s, s),
                pad: (p, p),
                ceil_mode,
            },
            count_include_pad,
        });
        match name {
            Some(n) => self.leaf(n, "AvgPool2d", op, vec![x]),
            None => self.node(op, vec![x], None),
        }
    }

    /// `nn.AdaptiveAvgPool2d(out)` as module `name`, or `F.adaptive_avg_pool2d` (None).
    pub fn adaptive_avg_pool(
        &mut self,
        name: Option<&str>,
        x: ValueId,
        out: (usize, usize),
    ) -> ValueId {
        let op = Op::Pool(Pool::AdaptiveAvg(out));
        match name {
            Some(n) => self.leaf(n, "AdaptiveAvgPool2d", op, vec![x]),
            None => self.node(op, vec![x], None),
        }
    }

    /// `x.mean((2, 3))`: a global average pool and a flatten, no module.
    pub fn mean_hw(&mut self, x: ValueId) -> ValueId {
        let v = self.adaptive_avg_pool(None, x, (1, 1));
        self.flatten(v)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, a, b)
    }

    /// a ∘ b with broadcasting, no module.
    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.node(Op::Binary(Binary { op, param: None }), vec![a, b], None)
    }

    /// x times the param `name` (ConvNeXt's layer_scale, a [C, 1, 1] param of the block).
    pub fn scale_by_param(
        &mut self,
        name: &str,
        x: ValueId,
        shape: &[Option<usize>],
    ) -> Result<ValueId> {
        let p = self.take(name, shape)?;
        let op = Op::Binary(Binary {
            op: BinaryOp::Mul,
            param: Some(p),
        });
        Ok(self.node(op, vec![x], None))
    }

    pub fn concat(&mut self, xs: Vec<ValueId>, axis: usize) -> ValueId {
        self.node(Op::Concat(Concat { axis }), xs, None)
    }

    /// `x.chunk(k, axis)` of an axis of `len` elements: k slices (torch's chunk sizes).
    pub fn chunk(&mut self, x: ValueId, k: usize, axis: usize, len: usize) -> Vec<ValueId> {
        let size = len.div_ceil(k);
        (0..len.div_ceil(size))
            .map(|i| {
                let start = i * size;
                let op = Op::Slice(Slice {
                    axis,
                    start,
                    len: size.min(len - start),
                });
                self.node(op, vec![x], None)
            })
            .collect()
    }

    /// Channels start..start+len of x, no module (transform_input's x[:, i:i+1]).
    pub fn slice(&mut self, x: ValueId, axis: usize, start: usize, len: usize) -> ValueId {
        self.node(Op::Slice(Slice { axis, start, len }), vec![x], None)
    }

    pub fn channel_shuffle(&mut self, x: ValueId, groups: usize) -> ValueId {
        self.node(Op::Shuffle(Shuffle { groups }), vec![x], None)
    }

    /// `torch.permute` as module `name` (torchvision's Permute) or a functional call.
    pub fn permute(&mut self, name: Option<&str>, x: ValueId, perm: &[usize]) -> ValueId {
        let op = Op::Permute(Permute {
            perm: perm.to_vec(),
        });
        match name {
            Some(n) => self.leaf(n, "Permute", op, vec![x]),
            None => self.node(op, vec![x], None),
        }
    }

    /// `torch.flatten(x, 1)`, no module.
    pub fn flatten(&mut self, x: ValueId) -> ValueId {
        self.node(Op::Flatten(Flatten { start_dim: 1 }), vec![x], None)
    }

    /// `nn.Flatten()` as a module.
    pub fn flatten_module(&mut self, name: &str, x: ValueId) -> ValueId {
        self.leaf(
            name,
            "Flatten",
            Op::Flatten(Flatten { start_dim: 1 }),
            vec![x],
        )
    }

    pub fn dropout(&mut self, name: &str, x: ValueId) -> ValueId {
        self.leaf(name, "Dropout", Op::Dropout(Dropout), vec![x])
    }

    /// `nn.Linear`; `in_f` None when it depends on the input size (checked at planning).
    pub fn linear(
        &mut self,
        name: &str,
        x: ValueId,
        in_f: Option<usize>,
    ) -> Result<(ValueId, usize)> {
        let weight = self.take(&format!("{name}.weight"), &[None, in_f])?;
        let out_f = self.params[weight].shape[0];
        let bias = Some(self.take(&format!("{name}.bias"), &[Some(out_f)])?);
        let op = Op::Linear(Linear { weight, bias });
        Ok((self.leaf(name, "Linear", op, vec![x]), out_f))
    }

    pub fn finish(self, output: ValueId) -> Result<Graph> {
        self.store.check_all_used(&self.arch)?;
        let in_channels = self
            .nodes
            .iter()
            .find_map(|n| match &n.op {
                Op::Conv2d(c) => Some(self.params[c.weight].shape[1] * c.groups),
                _ => None,
            })
            .unwrap_or(3);
        debug_assert!(self.modules.iter().all(|m| m.value != usize::MAX));
        Ok(Graph {
            nodes: self.nodes,
            modules: self.modules,
            params: self.params,
            param_names: self.param_names,
            input: Self::INPUT,
            output,
            num_values: self.num_values,
            in_channels,
            idle_modules: Vec::new(),
        })
    }
}
