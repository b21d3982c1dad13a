//! Runs a model on a backend: a forward pass that keeps only what the backward passes will
//! need, and backward passes that start at the logits, visit only the ops downstream of their
//! target (a layer for Grad-CAM, the input for guided backpropagation), compute input gradients
//! only (no weight gradients), and stop at the target.

use crate::backend::{Backend, ConvEpilogue};
use crate::error::{Error, Result};
use crate::model::graph::{Op, Plan, Planned};
use crate::model::Model;
use crate::ops::{rank_cmp, ClassPick, ClassSeedParams, GradCamParams};
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Time spent per kernel, keyed by op kind ("conv2d", "conv2d.backward", …).
pub type Profile = BTreeMap<String, (Duration, usize)>;

pub struct Engine<B: Backend> {
    pub backend: B,
    pub model: Model,
    params: Vec<B::Buf>,
    /// For each value, the index of the last node that reads it.
    last_use: Vec<usize>,
    profile: Option<RefCell<Profile>>,
}

/// What one Grad-CAM run returns, all on the host.
pub struct Explanation {
    /// [N, classes]
    pub logits: Tensor,
    /// The class explained for each image.
    pub classes: Vec<usize>,
    /// Softmax probability of that class.
    pub scores: Vec<f32>,
    /// [N, H, W], normalized to [0, 1].
    pub cams: Tensor,
}

struct Forward<B: Backend> {
    values: Vec<Option<Rc<B::Buf>>>,
    argmax: Vec<Option<B::Idx>>,
}

impl<B: Backend> Engine<B> {
    /// Uploads the weights once; they stay on the backend for every later call.
    pub fn new(backend: B, model: Model) -> Result<Self> {
        let params = model
            .graph
            .params
            .iter()
            .map(|t| backend.upload(&t.data))
            .collect::<Result<Vec<_>>>()?;
        let g = &model.graph;
        let mut last_use = vec![usize::MAX; g.num_values];
        for (i, n) in g.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last_use[v] = i;
            }
        }
        Ok(Self {
            backend,
            model,
            params,
            last_use,
            profile: None,
        })
    }

    /// Starts recording time per kernel (host-side timing: exact for synchronous backends).
    pub fn enable_profile(&mut self) {
        self.profile = Some(RefCell::default());
    }

    pub fn take_profile(&self) -> Profile {
        self.profile
            .as_ref()
            .map(|p| std::mem::take(&mut *p.borrow_mut()))
            .unwrap_or_default()
    }

    fn timed<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(profile) = &self.profile else {
            return f();
        };
        let start = Instant::now();
        let out = f()?;
        let mut p = profile.borrow_mut();
        let e = p.entry(key.to_owned()).or_default();
        e.0 += start.elapsed();
        e.1 += 1;
        Ok(out)
    }

    fn bias(&self, b: &Option<usize>) -> Option<&B::Buf> {
        b.map(|i| &self.params[i])
    }

    /// Logits [N, classes] for input [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let plan = self.model.graph.plan(&x.shape)?;
        let mut keep = vec![false; self.model.graph.num_values];
        keep[self.model.graph.output] = true;
        let fw = self.run_forward(x, &plan, &keep, &[])?;
        self.logits(&fw, &plan)
    }

    fn logits(&self, fw: &Forward<B>, plan: &Plan) -> Result<Tensor> {
        let out = self.model.graph.output;
        let buf = fw.values[out].as_ref().expect("logits kept");
        let data = self.backend.download(buf)?;
        Ok(Tensor::new(plan.shapes[out].clone(), data))
    }

    fn run_forward(
        &self,
        x: &Tensor,
        plan: &Plan,
        keep: &[bool],
        keep_argmax: &[bool],
    ) -> Result<Forward<B>> {
        let g = &self.model.graph;
        let be = &self.backend;
        let mut values: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
        let mut argmax: Vec<Option<B::Idx>> = (0..g.nodes.len()).map(|_| None).collect();
        values[g.input] = Some(Rc::new(be.upload(&x.data)?));
        let mut i = 0;
        while i < g.nodes.len() {
            let node = &g.nodes[i];
            let x = values[node.inputs[0]].clone().expect("input computed");
            let kind = node.op.kind();
            // Nodes this step computes: conv → BatchNorm (→ add) (→ ReLU) go in one fused call
            // when nothing else reads the values in between.
            let mut last = i;
            let fused = match node.op {
                Op::Conv2d { .. } => self.fusable(i, keep),
                _ => None,
            };
            let out = match (&node.op, &plan.nodes[i]) {
                (_, Planned::Alias) => x,
                (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) if fused.is_some() => {
                    let f = fused.expect("checked");
                    last = f.last;
                    let residual = f.residual.map(|v| values[v].clone().expect("computed"));
                    let e = ConvEpilogue {
                        scale: &self.params[f.scale],
                        shift: &self.params[f.shift],
                        residual: residual.as_deref(),
                        relu: f.relu,
                    };
                    let key = f.key();
                    Rc::new(self.timed(key, || {
                        be.conv2d_fused(p, &x, &self.params[*weight], self.bias(bias), &e)
                    })?)
                }
                (Op::Conv2d { weight, bias, .. }, Planned::Conv2d(p)) => {
                    Rc::new(self.timed(kind, || {
                        be.conv2d(p, &x, &self.params[*weight], self.bias(bias))
                    })?)
                }
                (Op::BatchNorm { scale, shift }, Planned::Affine(p)) => {
                    Rc::new(self.timed(kind, || {
                        be.channel_affine(p, &x, &self.params[*scale], &self.params[*shift])
                    })?)
                }
                (Op::Relu, Planned::Elementwise(len)) => {
                    Rc::new(self.timed(kind, || be.relu(&x, *len))?)
                }
                (Op::Add, Planned::Elementwise(len)) => {
                    let y = values[node.inputs[1]].clone().expect("input computed");
                    Rc::new(self.timed(kind, || be.add(&x, &y, *len))?)
                }
                (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                    let (y, idx) = self.timed(kind, || be.max_pool2d(p, &x))?;
                    if keep_argmax.get(i).copied().unwrap_or(false) {
                        argmax[i] = Some(idx);
                    }
                    Rc::new(y)
                }
                (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                    Rc::new(self.timed(kind, || be.adaptive_avg_pool2d(p, &x))?)
                }
                (Op::Linear { weight, bias }, Planned::Linear(p)) => {
                    Rc::new(self.timed(kind, || {
                        be.linear(p, &x, &self.params[*weight], self.bias(bias))
                    })?)
                }
                (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
            };
            values[g.nodes[last].output] = Some(out);
            for n in &g.nodes[i..=last] {
                for &v in &n.inputs {
                    if self.last_use[v] <= last && !keep[v] {
                        values[v] = None;
                    }
                }
            }
            i = last + 1;
        }
        Ok(Forward { values, argmax })
    }

    /// Whether conv node `i` can run fused with the BatchNorm after it, then a residual add,
    /// then a ReLU (each optional but the BatchNorm): each reads the previous one's output,
    /// which nothing else reads or keeps; the add's other input is computed before the conv.
    fn fusable(&self, i: usize, keep: &[bool]) -> Option<Fusion> {
        let nodes = &self.model.graph.nodes;
        // Whether node `to` is the only reader of node `from`'s output, which is not kept.
        let only_reader = |from: usize, to: usize| {
            let v = nodes[from].output;
            nodes.get(to).is_some_and(|n| n.inputs.contains(&v))
                && self.last_use[v] == to
                && !keep[v]
        };
        let reads_only = |from: usize, to: usize| {
            only_reader(from, to) && nodes[to].inputs == [nodes[from].output]
        };
        if !reads_only(i, i + 1) {
            return None;
        }
        let Op::BatchNorm { scale, shift } = nodes[i + 1].op else {
            return None;
        };
        let mut f = Fusion {
            scale,
            shift,
            residual: None,
            relu: false,
            last: i + 1,
        };
        if only_reader(i + 1, i + 2) && matches!(nodes[i + 2].op, Op::Add) {
            let add = &nodes[i + 2];
            let bn_out = nodes[i + 1].output;
            let other = add.inputs.iter().copied().find(|&v| v != bn_out);
            // The other operand must exist before the conv runs: produced by an earlier node
            // (or the graph input), i.e. not by the conv or its BatchNorm.
            let g = &self.model.graph;
            let earlier = |v: usize| v == g.input || nodes[..i].iter().any(|n| n.output == v);
            if let Some(r) = other.filter(|&r| add.inputs.len() == 2 && earlier(r)) {
                f.residual = Some(r);
                f.last = i + 2;
            }
        }
        if reads_only(f.last, f.last + 1) && matches!(nodes[f.last + 1].op, Op::Relu) {
            f.relu = true;
            f.last += 1;
        }
        Some(f)
    }

    /// Grad-CAM of layer `layer` (default: the architecture's usual target) for class `class`
    /// (default: each image's top-1 prediction).
    pub fn explain(
        &self,
        x: &Tensor,
        layer: Option<&str>,
        class: Option<usize>,
    ) -> Result<Explanation> {
        let choice = match class {
            Some(c) => Classes::Fixed(c),
            None => Classes::TopK(1),
        };
        let mut a = self.attribute(x, layer, choice, Outputs::CAM)?;
        let t = a.targets.remove(0);
        Ok(Explanation {
            logits: a.logits,
            classes: t.classes,
            scores: t.scores,
            cams: t.cams.expect("CAM requested"),
        })
    }

    /// One forward pass, then one backward pass per target rank and per requested output:
    /// Grad-CAM (a partial backward pass to `layer`) and/or guided backpropagation (a full
    /// backward pass to the input with guided ReLUs, as kazuto1011/grad-cam-pytorch).
    pub fn attribute(
        &self,
        x: &Tensor,
        layer: Option<&str>,
        classes: Classes,
        outputs: Outputs,
    ) -> Result<Attribution> {
        let g = &self.model.graph;
        let cam_layer = if outputs.cam {
            let layer = layer.unwrap_or(&self.model.default_layer);
            Some((layer, self.model.module(layer)?.value))
        } else {
            None
        };
        match classes {
            Classes::Fixed(c) if c >= self.model.num_classes => {
                return Err(Error::ClassOutOfRange {
                    class: c,
                    classes: self.model.num_classes,
                });
            }
            Classes::TopK(0) => return Err(Error::Usage("--top-k must be at least 1".into())),
            _ => {}
        }
        let plan = g.plan(&x.shape)?;
        if let Some((layer, target)) = cam_layer {
            let t_shape = &plan.shapes[target];
            if t_shape.len() != 4 {
                return Err(Error::NotSpatial {
                    name: layer.to_owned(),
                    shape: t_shape.clone(),
                });
            }
        }
        let cam_target = cam_layer.map(|(_, t)| t);
        let cam_pass = cam_target.map(|t| self.backward_scope(t));
        let guided_pass = outputs.guided.then(|| self.backward_scope(g.input));

        // Keep what the chosen backward passes need: ReLU outputs, max-pool argmaxes, the
        // target activation and the logits.
        let mut keep = vec![false; g.num_values];
        keep[g.output] = true;
        if let Some(t) = cam_target {
            keep[t] = true;
        }
        let mut keep_argmax = vec![false; g.nodes.len()];
        for scope in cam_pass.iter().chain(&guided_pass) {
            for (i, n) in g.nodes.iter().enumerate() {
                if scope.downstream[i] {
                    match n.op {
                        Op::Relu => keep[n.output] = true,
                        Op::MaxPool { .. } => keep_argmax[i] = true,
                        _ => {}
                    }
                }
            }
        }
        let fw = self.run_forward(x, &plan, &keep, &keep_argmax)?;
        let logits_shape = &plan.shapes[g.output];
        let (n, k) = (logits_shape[0], logits_shape[1]);
        let ranks = match classes {
            Classes::Fixed(_) => 1,
            Classes::TopK(r) => r.min(k),
        };
        // All device work first (the seeds come from the logits on the device), then the
        // read-backs, so a GPU runs forward and backward passes without waiting for the host.
        let mut results = Vec::with_capacity(ranks);
        for rank in 0..ranks {
            let pick = match classes {
                Classes::Fixed(c) => ClassPick::Fixed(c),
                Classes::TopK(_) => ClassPick::Rank(rank),
            };
            let logits = fw.values[g.output].as_ref().expect("logits kept");
            let p = ClassSeedParams { n, k, pick };
            let seed = Rc::new(self.timed("class_seed", || self.backend.class_seed(&p, logits))?);
            let cam = match (&cam_pass, cam_target) {
                (Some(scope), Some(target)) => {
                    let grad = self.backward(&plan, &fw, scope, seed.clone(), false)?;
                    Some(self.grad_cam(&plan, &fw, target, &grad, x)?)
                }
                _ => None,
            };
            let guided = match &guided_pass {
                Some(scope) => Some(self.backward(&plan, &fw, scope, seed, true)?),
                None => None,
            };
            results.push((pick, cam, guided));
        }
        let logits = self.logits(&fw, &plan)?;
        // Each image's classes in rank order, sorted once for all ranks.
        let order: Vec<Vec<usize>> = match classes {
            Classes::Fixed(_) => vec![],
            Classes::TopK(_) => logits.data.chunks(k).map(ranked).collect(),
        };
        let mut targets = Vec::with_capacity(ranks);
        for (pick, cam, guided) in results {
            let classes: Vec<usize> = (0..n)
                .map(|i| match pick {
                    ClassPick::Fixed(c) => c,
                    ClassPick::Rank(r) => order[i][r],
                })
                .collect();
            let scores = logits
                .data
                .chunks(k)
                .zip(&classes)
                .map(|(row, &c)| softmax_at(row, c))
                .collect();
            let cams = match cam {
                Some(buf) => Some(Tensor::new(
                    vec![n, x.shape[2], x.shape[3]],
                    self.backend.download(&buf)?,
                )),
                None => None,
            };
            let guided = match guided {
                Some(buf) => Some(Tensor::new(x.shape.clone(), self.backend.download(&buf)?)),
                None => None,
            };
            targets.push(Target {
                classes,
                scores,
                cams,
                guided,
            });
        }
        Ok(Attribution { logits, targets })
    }

    /// The ops a backward pass to `target` visits, and the values that receive a gradient.
    fn backward_scope(&self, target: usize) -> Scope {
        let g = &self.model.graph;
        let mut needs = vec![false; g.num_values];
        needs[target] = true;
        let mut downstream = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            if n.inputs.iter().any(|&v| needs[v]) {
                downstream[i] = true;
                needs[n.output] = true;
            }
        }
        Scope {
            target,
            needs,
            downstream,
        }
    }

    /// Walks back from the logits (gradient `seed`) through the ops of `scope` only, computing
    /// input gradients only, and returns the gradient at `scope.target`. With `guided`, every
    /// ReLU passes back only positive gradients where its output was positive
    /// (dx = dy·[y>0]·[dy>0]), which is relu_grad_input(y, relu(dy)): no new backend op.
    fn backward(
        &self,
        plan: &Plan,
        fw: &Forward<B>,
        scope: &Scope,
        seed: Rc<B::Buf>,
        guided: bool,
    ) -> Result<Rc<B::Buf>> {
        let g = &self.model.graph;
        let be = &self.backend;
        let mut grads: Vec<Option<Rc<B::Buf>>> = vec![None; g.num_values];
        grads[g.output] = Some(seed);
        for (i, node) in g.nodes.iter().enumerate().rev() {
            if !scope.downstream[i] {
                continue;
            }
            let Some(dy) = grads[node.output].take() else {
                continue;
            };
            let kind = format!("{}.backward", node.op.kind());
            let dx: Rc<B::Buf> = match (&node.op, &plan.nodes[i]) {
                (_, Planned::Alias) => dy,
                (Op::Add, _) => dy,
                (Op::Conv2d { weight, .. }, Planned::Conv2d(p)) => {
                    Rc::new(self.timed(&kind, || {
                        be.conv2d_grad_input(p, &dy, &self.params[*weight])
                    })?)
                }
                (Op::BatchNorm { scale, .. }, Planned::Affine(p)) => {
                    Rc::new(self.timed(&kind, || {
                        be.channel_affine_grad_input(p, &dy, &self.params[*scale])
                    })?)
                }
                (Op::Relu, Planned::Elementwise(len)) => {
                    let y = fw.values[node.output].as_ref().expect("relu output kept");
                    if guided {
                        let pos = self.timed("relu.guided", || be.relu(&dy, *len))?;
                        Rc::new(self.timed(&kind, || be.relu_grad_input(y, &pos, *len))?)
                    } else {
                        Rc::new(self.timed(&kind, || be.relu_grad_input(y, &dy, *len))?)
                    }
                }
                (Op::MaxPool { .. }, Planned::MaxPool(p)) => {
                    let idx = fw.argmax[i].as_ref().expect("argmax kept");
                    Rc::new(self.timed(&kind, || be.max_pool2d_grad_input(p, idx, &dy))?)
                }
                (Op::AdaptiveAvgPool { .. }, Planned::AdaptiveAvgPool(p)) => {
                    Rc::new(self.timed(&kind, || be.adaptive_avg_pool2d_grad_input(p, &dy))?)
                }
                (Op::Linear { weight, .. }, Planned::Linear(p)) => {
                    Rc::new(self.timed(&kind, || {
                        be.linear_grad_input(p, &dy, &self.params[*weight])
                    })?)
                }
                (op, planned) => unreachable!("plan {planned:?} does not fit op {op:?}"),
            };
            for &v in &node.inputs {
                if !scope.needs[v] {
                    continue;
                }
                grads[v] = Some(match grads[v].take() {
                    None => dx.clone(),
                    Some(acc) => {
                        let len = plan.shapes[v].iter().product();
                        Rc::new(self.timed("add.backward", || be.add(&acc, &dx, len))?)
                    }
                });
            }
        }
        Ok(grads[scope.target]
            .take()
            .expect("gradient reaches the target"))
    }

    /// The fused Grad-CAM step on the target's activation and gradient, upsampled to the input:
    /// [N, H, W] on the device.
    fn grad_cam(
        &self,
        plan: &Plan,
        fw: &Forward<B>,
        target: usize,
        grad: &B::Buf,
        x: &Tensor,
    ) -> Result<B::Buf> {
        let t_shape = &plan.shapes[target];
        let act = fw.values[target].as_ref().expect("target activation kept");
        let p = GradCamParams {
            n: t_shape[0],
            c: t_shape[1],
            h: t_shape[2],
            w: t_shape[3],
            out_h: x.shape[2],
            out_w: x.shape[3],
        };
        self.timed("grad_cam", || self.backend.grad_cam(&p, act, grad))
    }
}

/// A conv → BatchNorm (→ add) (→ ReLU) chain that runs as one `conv2d_fused` call.
struct Fusion {
    scale: usize,
    shift: usize,
    /// The value added after the BatchNorm.
    residual: Option<usize>,
    relu: bool,
    /// The chain's last node.
    last: usize,
}

impl Fusion {
    /// The name its time is reported under.
    fn key(&self) -> &'static str {
        match (self.residual.is_some(), self.relu) {
            (false, false) => "conv2d+batch_norm",
            (false, true) => "conv2d+batch_norm+relu",
            (true, false) => "conv2d+batch_norm+add",
            (true, true) => "conv2d+batch_norm+add+relu",
        }
    }
}

/// Which classes to explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classes {
    /// The same class for every image.
    Fixed(usize),
    /// Each image's K most probable classes, most probable first.
    TopK(usize),
}

/// Which attributions to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub cam: bool,
    pub guided: bool,
}

impl Outputs {
    pub const CAM: Outputs = Outputs {
        cam: true,
        guided: false,
    };
}

/// What `attribute` returns: the logits, and per target rank the classes and attributions.
pub struct Attribution {
    /// [N, classes]
    pub logits: Tensor,
    /// One per rank (one for a fixed class).
    pub targets: Vec<Target>,
}

pub struct Target {
    /// The class explained for each image.
    pub classes: Vec<usize>,
    /// Softmax probability of that class.
    pub scores: Vec<f32>,
    /// [N, H, W], normalized to [0, 1], when a CAM was requested.
    pub cams: Option<Tensor>,
    /// [N, C, H, W]: d class score / d input with guided ReLUs, when requested.
    pub guided: Option<Tensor>,
}

/// The part of the graph one backward pass visits.
struct Scope {
    target: usize,
    needs: Vec<bool>,
    downstream: Vec<bool>,
}

/// Class indices in the order of `ranks_before`: descending logit, ties to the lower index.
pub fn ranked(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| rank_cmp(v, a, b));
    idx
}

/// Index of the first maximum (numpy's argmax): the top class of `ranked`, and where a CAM
/// points.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

pub fn softmax_at(logits: &[f32], i: usize) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    ((logits[i] as f64 - m).exp() / z) as f32
}
