//! Runs a model on a backend: a forward pass that keeps only what the backward passes will
//! need, and backward passes that start at the logits, visit only the ops downstream of their
//! targets (the layers of a CAM, the input for guided backpropagation), compute input
//! gradients only (no weight gradients), and stop at the targets. `methods` turns them into
//! every attribution method of [`Method`]; `perturb` runs the methods made of many forward
//! passes (ScoreCAM, AblationCAM, occlusion, integrated gradients, SmoothGrad).

mod eigen;
mod fullgrad;
mod method;
mod methods;
mod perturb;

pub use crate::backend::Profile;
pub use method::{MapKind, Method};
pub use methods::{MethodOptions, Request, Score};

use crate::backend::Backend;
use crate::error::Result;
use crate::model::graph::op::{Ctx, ReluRule};
use crate::model::graph::walk::{self, Keep, Scope, Values};
use crate::model::graph::Plan;
use crate::model::Model;
use crate::ops::rank_cmp;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Engine<B: Backend> {
    pub backend: B,
    pub model: Model,
    params: Vec<B::Buf>,
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

impl<B: Backend> Engine<B> {
    /// Uploads the weights once; they stay on the backend for every later call.
    pub fn new(backend: B, model: Model) -> Result<Self> {
        let params = model
            .graph
            .params
            .iter()
            .map(|t| backend.upload_weight(&t.data))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            backend,
            model,
            params,
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

    /// The context the graph's ops run in.
    fn ctx(&self) -> Ctx<'_, B> {
        Ctx {
            profile: self.profile.as_ref(),
            ..Ctx::new(&self.backend, &self.params, &self.model.graph)
        }
    }

    fn timed<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.ctx().timed(key, f)
    }

    /// Logits [N, classes] for input [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_buf(self.backend.upload(&x.data)?, &x.shape)
    }

    /// Logits for an input already on the device, of shape `shape`.
    fn forward_buf(&self, x: B::Buf, shape: &[usize]) -> Result<Tensor> {
        let g = &self.model.graph;
        let plan = g.plan(shape)?;
        let keep = Keep::for_scopes(g, &[], &[g.output]);
        let fw = walk::forward(&self.ctx(), &plan, x, &keep, true)?;
        self.logits(&fw, &plan)
    }

    fn logits(&self, fw: &Values<B>, plan: &Plan) -> Result<Tensor> {
        let out = self.model.graph.output;
        let buf = fw.values[out].as_ref().expect("logits kept");
        let data = self.backend.download(buf)?;
        Ok(Tensor::new(plan.shapes[out].clone(), data))
    }

    fn run_forward(&self, x: &Tensor, plan: &Plan, keep: &Keep) -> Result<Values<B>> {
        let input = self.backend.upload(&x.data)?;
        walk::forward(&self.ctx(), plan, input, keep, true)
    }

    /// Grad-CAM of layer `layer` (default: the architecture's usual target) for class `class`
    /// (default: each image's top-1 prediction).
    pub fn explain(
        &self,
        x: &Tensor,
        layer: Option<&str>,
        class: Option<usize>,
    ) -> Result<Explanation> {
        let classes = match class {
            Some(c) => Classes::Fixed(c),
            None => Classes::TopK(1),
        };
        let layers: Vec<String> = layer.into_iter().map(str::to_owned).collect();
        let req = Request {
            methods: &[Method::Gradcam],
            layers: &layers,
            classes,
            options: &MethodOptions::default(),
        };
        let mut a = self.attribute(x, &req)?;
        let mut t = a.targets.remove(0);
        Ok(Explanation {
            logits: a.logits,
            classes: t.classes,
            scores: t.scores,
            cams: t.maps.remove(0).data,
        })
    }

    /// Walks back from the logits (gradient `seed`) through the ops of `scope` only, computing
    /// input gradients only, with ReLUs following `rule`; returns the gradients of the scope's
    /// targets, in its order.
    fn backward(
        &self,
        plan: &Plan,
        fw: &Values<B>,
        scope: &Scope,
        seed: Rc<B::Buf>,
        rule: ReluRule,
    ) -> Result<Vec<Rc<B::Buf>>> {
        let cx = Ctx {
            relu_rule: rule,
            ..self.ctx()
        };
        let grads = walk::backward(&cx, plan, fw, scope, seed, |_, _, _| Ok(()))?;
        Ok(scope
            .targets
            .iter()
            .map(|&t| grads[t].clone().expect("gradient reaches the target"))
            .collect())
    }
}

/// Which classes to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classes {
    /// The same class for every image.
    Fixed(usize),
    /// One class per image of the batch, in order.
    PerImage(Vec<usize>),
    /// Each image's K most probable classes, most probable first.
    TopK(usize),
}

/// What `attribute` returns: the logits, and per target rank the classes and maps.
pub struct Attribution {
    /// [N, classes]
    pub logits: Tensor,
    /// One per rank (one for a fixed class).
    pub targets: Vec<Target>,
}

impl Attribution {
    /// Why the results of image `j` of an attribution cannot be written, if they cannot: a
    /// non-finite logit, CAM or gradient (the input or the weights overflow f32).
    pub fn non_finite(&self, j: usize) -> Option<String> {
        let classes = self.logits.shape[1];
        if let Some(why) = non_finite_logit(&self.logits.data[j * classes..(j + 1) * classes]) {
            return Some(why);
        }
        for t in &self.targets {
            for map in &t.maps {
                let tensor = &map.data;
                let per = tensor.len() / tensor.shape[0];
                if tensor.data[j * per..(j + 1) * per]
                    .iter()
                    .any(|v| !v.is_finite())
                {
                    return Some(format!(
                        "the {} map for class {} is not finite (NaN or infinite values)",
                        map.method.name(),
                        t.classes[j]
                    ));
                }
            }
        }
        None
    }
}

/// Why a row of logits cannot be a result, if it cannot: its first non-finite logit.
pub fn non_finite_logit(row: &[f32]) -> Option<String> {
    let c = row.iter().position(|v| !v.is_finite())?;
    Some(format!(
        "the network's logit for class {c} is {} (not finite): the input or the weights overflow f32",
        row[c]
    ))
}

pub struct Target {
    /// The class explained for each image.
    pub classes: Vec<usize>,
    /// Softmax probability of that class.
    pub scores: Vec<f32>,
    /// One per requested method, in the request's order.
    pub maps: Vec<Map>,
}

/// One method's result for a batch (shapes in [`MapKind`]).
pub struct Map {
    pub method: Method,
    pub data: Tensor,
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
