//! Runs a model on a backend: a forward pass that keeps only what the backward passes will
//! need, and backward passes that start at the logits, visit only the ops downstream of their
//! target (a layer for Grad-CAM, the input for guided backpropagation), compute input gradients
//! only (no weight gradients), and stop at the target.

use crate::backend::Backend;
pub use crate::backend::Profile;
use crate::error::{Error, Result};
use crate::model::graph::op::Ctx;
use crate::model::graph::walk::{self, Keep, Scope, Values};
use crate::model::graph::Plan;
use crate::model::Model;
use crate::ops::{rank_cmp, ClassPick, ClassSeedParams, GradCamParams};
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
            .map(|t| backend.upload(&t.data))
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

    /// The context the graph's ops run in; `guided` for guided backpropagation.
    fn ctx(&self, guided: bool) -> Ctx<'_, B> {
        Ctx {
            guided,
            profile: self.profile.as_ref(),
            ..Ctx::new(&self.backend, &self.params, &self.model.graph)
        }
    }

    fn timed<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.ctx(false).timed(key, f)
    }

    /// Logits [N, classes] for input [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = &self.model.graph;
        let plan = g.plan(&x.shape)?;
        let keep = Keep::for_scopes(g, &[], &[g.output]);
        let fw = self.run_forward(x, &plan, &keep)?;
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
        walk::forward(&self.ctx(false), plan, input, keep, true)
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
        let cam_pass = cam_target.map(|t| Scope::new(g, t, true));
        let guided_pass = outputs.guided.then(|| Scope::new(g, g.input, true));

        // Keep what the chosen backward passes read, the target activation and the logits.
        let scopes: Vec<&Scope> = cam_pass.iter().chain(&guided_pass).collect();
        let mut extra = vec![g.output];
        extra.extend(cam_target);
        let keep = Keep::for_scopes(g, &scopes, &extra);
        let fw = self.run_forward(x, &plan, &keep)?;
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

    /// Walks back from the logits (gradient `seed`) through the ops of `scope` only, computing
    /// input gradients only, and returns the gradient at `scope.target`.
    fn backward(
        &self,
        plan: &Plan,
        fw: &Values<B>,
        scope: &Scope,
        seed: Rc<B::Buf>,
        guided: bool,
    ) -> Result<Rc<B::Buf>> {
        let mut grads = walk::backward(&self.ctx(guided), plan, fw, scope, seed, |_, _, _| Ok(()))?;
        Ok(grads[scope.target]
            .take()
            .expect("gradient reaches the target"))
    }

    /// The fused Grad-CAM step on the target's activation and gradient, upsampled to the input:
    /// [N, H, W] on the device.
    fn grad_cam(
        &self,
        plan: &Plan,
        fw: &Values<B>,
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
