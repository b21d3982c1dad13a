//! Builds a `Graph` from a weight store, one PyTorch module at a time, checking every tensor's
//! shape against the layer it feeds.

use super::graph::*;
use super::weights::WeightStore;
use crate::error::Result;
use crate::tensor::Tensor;

/// torchvision's BatchNorm2d default.
pub const BN_EPS: f64 = 1e-5;

pub struct Builder<'a> {
    pub store: &'a WeightStore,
    pub arch: String,
    nodes: Vec<Node>,
    modules: Vec<Module>,
    params: Vec<Tensor>,
    param_names: Vec<String>,
    num_values: usize,
}

impl<'a> Builder<'a> {
    pub fn new(store: &'a WeightStore, arch: &str) -> Self {
        Self {
            store,
            arch: arch.to_owned(),
            nodes: vec![],
            modules: vec![],
            params: vec![],
            param_names: vec![],
            num_values: 1, // value 0 is the input
        }
    }

    pub const INPUT: ValueId = 0;

    fn param(&mut self, name: &str, t: Tensor) -> ParamId {
        self.params.push(t);
        self.param_names.push(name.to_owned());
        self.params.len() - 1
    }

    fn take(&mut self, name: &str, expected: &[Option<usize>]) -> Result<ParamId> {
        let t = self.store.take(&self.arch, name, expected)?.clone();
        Ok(self.param(name, t))
    }

    fn node(&mut self, op: Op, inputs: Vec<ValueId>, module: Option<&str>) -> ValueId {
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

    fn leaf(&mut self, name: &str, kind: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let m = self.begin(name, kind);
        let v = self.node(op, inputs, Some(name));
        self.end(m, v);
        v
    }

    /// `nn.Conv2d` named `name` taking `c_in` channels (None: any, for the first layer);
    /// padding `pad`, or k/2 ("same") when None. Returns its output and channel count.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        c_in: Option<usize>,
        stride: usize,
        pad: Option<usize>,
        bias: bool,
    ) -> Result<(ValueId, usize)> {
        let weight = self.take(&format!("{name}.weight"), &[None, c_in, None, None])?;
        let shape = self.params[weight].shape.clone();
        let c_out = shape[0];
        let bias = match bias {
            true => Some(self.take(&format!("{name}.bias"), &[Some(c_out)])?),
            false => None,
        };
        let (ph, pw) = match pad {
            Some(p) => (p, p),
            None => (shape[2] / 2, shape[3] / 2),
        };
        let op = Op::Conv2d {
            weight,
            bias,
            stride: (stride, stride),
            pad: (ph, pw),
        };
        Ok((self.leaf(name, "Conv2d", op, vec![x]), c_out))
    }

    /// Eval-mode `nn.BatchNorm2d`, folded to y = x·scale + shift.
    pub fn batch_norm(&mut self, name: &str, x: ValueId, c: usize) -> Result<ValueId> {
        let get = |field: &str| -> Result<Vec<f32>> {
            let full = format!("{name}.{field}");
            Ok(self.store.take(&self.arch, &full, &[Some(c)])?.data.clone())
        };
        let (w, b) = (get("weight")?, get("bias")?);
        let (mean, var) = (get("running_mean")?, get("running_var")?);
        let scale: Vec<f64> = (0..c)
            .map(|i| w[i] as f64 / (var[i] as f64 + BN_EPS).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| (b[i] as f64 - mean[i] as f64 * scale[i]) as f32)
            .collect();
        let scale: Vec<f32> = scale.iter().map(|&s| s as f32).collect();
        let scale = self.param(&format!("{name} (scale)"), Tensor::new(vec![c], scale));
        let shift = self.param(&format!("{name} (shift)"), Tensor::new(vec![c], shift));
        Ok(self.leaf(name, "BatchNorm2d", Op::BatchNorm { scale, shift }, vec![x]))
    }

    /// `nn.ReLU`; `name` None for a functional call or a module's second call.
    pub fn relu(&mut self, name: Option<&str>, x: ValueId) -> ValueId {
        match name {
            Some(n) => self.leaf(n, "ReLU", Op::Relu, vec![x]),
            None => self.node(Op::Relu, vec![x], None),
        }
    }

    pub fn max_pool(&mut self, name: &str, x: ValueId, k: usize, s: usize, p: usize) -> ValueId {
        let op = Op::MaxPool {
            kernel: (k, k),
            stride: (s, s),
            pad: (p, p),
        };
        self.leaf(name, "MaxPool2d", op, vec![x])
    }

    pub fn adaptive_avg_pool(&mut self, name: &str, x: ValueId, out: (usize, usize)) -> ValueId {
        self.leaf(
            name,
            "AdaptiveAvgPool2d",
            Op::AdaptiveAvgPool { out },
            vec![x],
        )
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.node(Op::Add, vec![a, b], None)
    }

    pub fn flatten(&mut self, x: ValueId) -> ValueId {
        self.node(Op::Flatten, vec![x], None)
    }

    pub fn dropout(&mut self, name: &str, x: ValueId) -> ValueId {
        self.leaf(name, "Dropout", Op::Dropout, vec![x])
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
        let op = Op::Linear { weight, bias };
        Ok((self.leaf(name, "Linear", op, vec![x]), out_f))
    }

    pub fn finish(self, output: ValueId) -> Result<Graph> {
        self.store.check_all_used(&self.arch)?;
        let in_channels = self
            .nodes
            .iter()
            .find_map(|n| match n.op {
                Op::Conv2d { weight, .. } => Some(self.params[weight].shape[1]),
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
        })
    }
}
