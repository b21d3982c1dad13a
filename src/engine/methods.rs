//! `Engine::attribute`: every method of a request from one forward pass and the fewest
//! backward passes (one to all target layers, one to the input and FullGrad's bias layers, one
//! with guided ReLUs, one with deconvnet ReLUs, per class rank), then each method's map; the
//! multi-forward methods (`perturb`) score their perturbed inputs once for all ranks.
//! With `--aug-smooth` the whole pass runs on 6 augmented inputs (pytorch-grad-cam's).

use super::method::{MapKind, Method};
use super::{eigen, fullgrad, ranked, softmax_at, Attribution, Classes, Engine, Map, Target};
use crate::backend::cpu::cam::{channel_weight, normalize};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::graph::op::ReluRule;
use crate::model::graph::walk::{self, Keep, Scope, Values};
use crate::model::graph::{Plan, ValueId};
use crate::ops::{CamCombine, ClassPick, ClassSeedParams, GradCamParams};
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use std::rc::Rc;

/// The score a method explains (pytorch-grad-cam's targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Score {
    /// The class's logit (ClassifierOutputTarget).
    #[default]
    Logit,
    /// The class's softmax probability (ClassifierOutputSoftmaxTarget).
    Softmax,
}

impl Score {
    /// The score of class `c` for one row of logits.
    pub fn of_row(self, logits: &[f32], c: usize) -> f32 {
        match self {
            Score::Logit => logits[c],
            Score::Softmax => softmax_at(logits, c),
        }
    }

    /// d score / d logits for one row (the seed of a backward pass).
    pub fn seed_row(self, logits: &[f32], c: usize, out: &mut [f32]) {
        out.fill(0.0);
        match self {
            Score::Logit => out[c] = 1.0,
            Score::Softmax => {
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let pc = e[c] / z;
                for (j, o) in out.iter_mut().enumerate() {
                    let pj = e[j] / z;
                    *o = (pc * (f64::from(u8::from(j == c)) - pj)) as f32;
                }
            }
        }
    }

    /// Its name on the command line and in metric records.
    pub fn name(self) -> &'static str {
        match self {
            Score::Logit => "logit",
            Score::Softmax => "softmax",
        }
    }

    /// The score of `classes[b]` in row b of `logits` [B, K].
    pub fn of(self, logits: &Tensor, classes: &[usize]) -> Result<Vec<f32>> {
        let &[rows, k] = logits.shape.as_slice() else {
            return Err(Error::Usage(format!(
                "metrics: logits of shape {:?}, expected [batch, classes]",
                logits.shape
            )));
        };
        if k == 0 {
            return Err(Error::Usage("metrics: the network has no classes".into()));
        }
        if rows != classes.len() {
            return Err(Error::Usage(format!(
                "metrics: {rows} rows of logits for {} classes",
                classes.len()
            )));
        }
        let rows = logits.data.chunks_exact(k);
        rows.zip(classes)
            .map(|(row, &class)| {
                if class >= k {
                    return Err(Error::ClassOutOfRange { class, classes: k });
                }
                Ok(match self {
                    Score::Logit => row[class],
                    Score::Softmax => crate::engine::softmax_at(row, class),
                })
            })
            .collect()
    }
}

impl crate::named::Named for Score {
    const ALL: &'static [Self] = &[Score::Logit, Score::Softmax];
    const WHAT: &'static str = "score";

    fn name(self) -> &'static str {
        Score::name(self)
    }

    fn about(self) -> &'static str {
        match self {
            Score::Logit => "the class's logit (ClassifierOutputTarget)",
            Score::Softmax => "the class's softmax probability (ClassifierOutputSoftmaxTarget)",
        }
    }
}

impl std::str::FromStr for Score {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::named::Named::parse(s)
    }
}

/// The options of the methods.
#[derive(Clone, Debug)]
pub struct MethodOptions {
    pub score: Score,
    /// pytorch-grad-cam's `aug_smooth`: the mean of the CAMs of 6 augmented inputs.
    pub aug_smooth: bool,
    /// pytorch-grad-cam's `eigen_smooth`: the first principal component of the weighted
    /// activations instead of their sum.
    pub eigen_smooth: bool,
    /// Perturbed inputs per forward pass: ScoreCAM's masks, AblationCAM's ablations,
    /// occlusion's patches, integrated gradients' steps.
    pub batch_size: usize,
    /// Occlusion: the side of the square patch, the step between patch centres, and the value
    /// the patch is filled with (in network-input units: 0 is the mean colour).
    pub patch: usize,
    pub stride: usize,
    pub fill: f32,
    /// Integrated gradients: Gauss–Legendre points on the path (Captum's default method).
    pub steps: usize,
    /// SmoothGrad: noisy samples (0: off) and the noise's standard deviation, in
    /// network-input units.
    pub smooth: usize,
    pub noise: f32,
    /// Seeds the random CAM's weights and SmoothGrad's noise.
    pub seed: u64,
}

impl Default for MethodOptions {
    fn default() -> Self {
        MethodOptions {
            score: Score::Logit,
            aug_smooth: false,
            eigen_smooth: false,
            batch_size: 16,
            patch: 35,
            stride: 8,
            fill: 0.0,
            steps: 50,
            smooth: 0,
            noise: 0.15,
            seed: 0,
        }
    }
}

/// What to explain.
pub struct Request<'a> {
    pub methods: &'a [Method],
    /// Target layers (module paths); empty: the model's default layer.
    pub layers: &'a [String],
    pub classes: Classes,
    pub options: &'a MethodOptions,
}

/// The methods SmoothGrad averages.
pub const SMOOTHABLE: [Method; 3] = [
    Method::Saliency,
    Method::GuidedBackprop,
    Method::IntegratedGradients,
];

/// pytorch-grad-cam's test-time augmentation: ttach's HorizontalFlip × Multiply(0.9, 1, 1.1).
const AUGMENTATIONS: [(bool, f32); 6] = [
    (false, 0.9),
    (false, 1.0),
    (false, 1.1),
    (true, 0.9),
    (true, 1.0),
    (true, 1.1),
];

impl<B: Backend> Engine<B> {
    /// Every method of `req` on the batch `x` [N, C, H, W].
    pub fn attribute(&self, x: &Tensor, req: &Request) -> Result<Attribution> {
        self.check_request(req)?;
        let mut a = self.pass(x, req)?;
        if req.options.aug_smooth {
            // The plain pass is the (no flip, ×1) augmentation; its logits and classes are
            // the ones reported. As pytorch-grad-cam, without --class each augmented pass
            // explains its own top classes.
            for &(flip, factor) in AUGMENTATIONS.iter().filter(|a| **a != (false, 1.0)) {
                let xa = augment(x, flip, factor);
                let b = self.pass(&xa, req)?;
                for (ta, tb) in a.targets.iter_mut().zip(b.targets) {
                    for (ma, mb) in ta.maps.iter_mut().zip(tb.maps) {
                        let mut cam = mb.data;
                        if flip {
                            flip_last_axis(&mut cam);
                        }
                        ma.data
                            .data
                            .iter_mut()
                            .zip(&cam.data)
                            .for_each(|(s, v)| *s += v);
                    }
                }
            }
            for t in &mut a.targets {
                for m in &mut t.maps {
                    let count = AUGMENTATIONS.len() as f32;
                    m.data.data.iter_mut().for_each(|v| *v /= count);
                }
            }
        }
        Ok(a)
    }

    pub(crate) fn check_request(&self, req: &Request) -> Result<()> {
        let ms = req.methods;
        let o = req.options;
        let bad = |m: String| Err(Error::BadOption(m));
        if ms.is_empty() {
            return bad("no `method` given".into());
        }
        for (i, m) in ms.iter().enumerate() {
            if ms[..i].contains(m) {
                return bad(format!("`method` lists {} twice", m.name()));
            }
        }
        if let Some(m) = ms
            .iter()
            .find(|m| m.kind() != MapKind::Cam)
            .filter(|_| o.aug_smooth)
        {
            return bad(format!(
                "`aug_smooth` applies to the CAM methods; {} is not one",
                m.name()
            ));
        }
        if o.eigen_smooth && ms.contains(&Method::Fullgrad) {
            return bad("`eigen_smooth` does not apply to fullgrad".into());
        }
        if o.smooth > 0 && !ms.iter().any(|m| SMOOTHABLE.contains(m)) {
            return bad(
                "`smooth` applies to saliency, guided-backprop and integrated-gradients; \
                 none is among the methods"
                    .into(),
            );
        }
        if o.batch_size == 0 || o.patch == 0 || o.stride == 0 || o.steps == 0 {
            return bad("`batch_size`, `patch`, `stride` and `steps` must be at least 1".into());
        }
        if !(o.noise.is_finite() && o.noise >= 0.0 && o.fill.is_finite()) {
            return bad("`noise` and the occlusion fill value must be finite".into());
        }
        let out_of_range = |&class: &usize| class >= self.model.num_classes;
        match &req.classes {
            Classes::Fixed(c) if out_of_range(c) => Err(Error::ClassOutOfRange {
                class: *c,
                classes: self.model.num_classes,
            }),
            Classes::PerImage(cs) => match cs.iter().find(|c| out_of_range(c)) {
                Some(&class) => Err(Error::ClassOutOfRange {
                    class,
                    classes: self.model.num_classes,
                }),
                None => Ok(()),
            },
            Classes::TopK(0) => Err(Error::Usage("`top_k` must be at least 1".into())),
            _ => Ok(()),
        }
    }

    /// The value ids of the target layers, each checked to be [N, C, h, w].
    pub(super) fn layer_values(&self, layers: &[String], plan: &Plan) -> Result<Vec<ValueId>> {
        let default = [self.model.default_layer.clone()];
        let names = if layers.is_empty() {
            &default[..]
        } else {
            layers
        };
        names
            .iter()
            .map(|name| {
                let v = self.model.module(name)?.value;
                if plan.shapes[v].len() != 4 {
                    return Err(Error::NotSpatial {
                        name: name.clone(),
                        shape: plan.shapes[v].clone(),
                    });
                }
                Ok(v)
            })
            .collect()
    }

    /// One forward pass on `x`, then per class rank the backward passes and every map.
    fn pass(&self, x: &Tensor, req: &Request) -> Result<Attribution> {
        let g = &self.model.graph;
        let (ms, o) = (req.methods, req.options);
        let has = |m: Method| ms.contains(&m);
        let plan = g.plan(&x.shape)?;
        if let Classes::PerImage(cs) = &req.classes {
            if cs.len() != x.shape[0] {
                return Err(Error::InputShape {
                    input: x.shape.clone(),
                    reason: format!("{} target classes for {} images", cs.len(), x.shape[0]),
                });
            }
        }
        let layers = if ms.iter().any(|m| m.uses_layer()) {
            self.layer_values(req.layers, &plan)?
        } else {
            vec![]
        };
        let bias = if has(Method::Fullgrad) {
            fullgrad::bias_layers(g)
        } else {
            vec![]
        };
        let cam_scope = ms
            .iter()
            .any(|m| m.layer_gradient())
            .then(|| Scope::multi(g, &layers));
        let input_scope = (has(Method::Fullgrad) || has(Method::Saliency)).then(|| {
            let targets: Vec<ValueId> = std::iter::once(g.input)
                .chain(bias.iter().map(|b| b.value))
                .collect();
            Scope::multi(g, &targets)
        });
        let guided = has(Method::GuidedBackprop) || has(Method::GuidedGradcam);
        let relu_scope = (guided || has(Method::Deconvnet)).then(|| Scope::new(g, g.input, true));
        let ablation: Vec<(Scope, Vec<ValueId>)> = if has(Method::Ablationcam) {
            layers
                .iter()
                .map(|&l| {
                    let s = Scope::multi(g, &[l]);
                    let outside = walk::read_from_outside(g, &s);
                    (s, outside)
                })
                .collect()
        } else {
            vec![]
        };
        let scopes: Vec<&Scope> = cam_scope
            .iter()
            .chain(&input_scope)
            .chain(&relu_scope)
            .collect();
        let mut extra = vec![g.output];
        extra.extend(&layers);
        ablation.iter().for_each(|(_, out)| extra.extend(out));
        let keep = Keep::for_scopes(g, &scopes, &extra);
        let fw = self.run_forward(x, &plan, &keep)?;
        let logits = self.logits(&fw, &plan)?;
        let (n, k) = (logits.shape[0], logits.shape[1]);
        let ranks = match req.classes {
            Classes::Fixed(_) | Classes::PerImage(_) => 1,
            Classes::TopK(r) => r.min(k),
        };
        let order: Vec<Vec<usize>> = match req.classes {
            Classes::Fixed(_) | Classes::PerImage(_) => vec![],
            Classes::TopK(_) => logits.data.chunks(k).map(ranked).collect(),
        };

        // What every rank shares: host copies of the layers' activations, and the logits of
        // the perturbed inputs.
        let acts: Vec<Vec<f32>> = layers
            .iter()
            .map(|&v| self.backend.download(value(&fw, v)))
            .collect::<Result<_>>()?;
        let score_logits = if has(Method::Scorecam) {
            layers
                .iter()
                .zip(&acts)
                .map(|(&v, a)| {
                    let buf = value(&fw, v);
                    self.scorecam_logits(x, a, buf, &plan.shapes[v], o.batch_size)
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        let ablation_logits = ablation
            .iter()
            .zip(&layers)
            .zip(&acts)
            .map(|(((scope, outside), &v), a)| {
                self.ablation_logits(x, &plan, &fw, v, a, scope, outside, o.batch_size)
            })
            .collect::<Result<Vec<_>>>()?;
        let occlusion = if has(Method::Occlusion) {
            Some(self.occlusion_logits(x, o)?)
        } else {
            None
        };

        let mut targets = Vec::with_capacity(ranks);
        #[allow(clippy::needless_range_loop)] // `rank` picks a column of every image's order
        for rank in 0..ranks {
            let classes: Vec<usize> = (0..n)
                .map(|i| match &req.classes {
                    Classes::Fixed(c) => *c,
                    Classes::PerImage(cs) => cs[i],
                    Classes::TopK(_) => order[i][rank],
                })
                .collect();
            let pick = match req.classes {
                Classes::Fixed(c) => Some(ClassPick::Fixed(c)),
                Classes::PerImage(_) => None,
                Classes::TopK(_) => Some(ClassPick::Rank(rank)),
            };
            let seed = Rc::new(self.seed(&fw, &logits, pick, &classes, o.score)?);
            let back = |scope: &Option<Scope>, rule| -> Result<Option<Vec<Rc<B::Buf>>>> {
                scope
                    .as_ref()
                    .map(|s| self.backward(&plan, &fw, s, seed.clone(), rule))
                    .transpose()
            };
            let layer_grads = back(&cam_scope, ReluRule::Gradient)?;
            let input_grads = back(&input_scope, ReluRule::Gradient)?;
            let guided_grad = if guided {
                back(&relu_scope, ReluRule::Guided)?
            } else {
                None
            };
            let deconv_grad = if has(Method::Deconvnet) {
                back(&relu_scope, ReluRule::Deconv)?
            } else {
                None
            };
            let layer_cam = |m: Method, weights: &dyn Fn(usize) -> Result<Vec<f32>>| {
                self.layer_cam(
                    m,
                    &plan,
                    &layers,
                    &acts,
                    layer_grads.as_deref(),
                    weights,
                    x,
                    o,
                )
            };
            let no_weights = |_: usize| -> Result<Vec<f32>> { unreachable!("no weights") };
            let download = |b: &Option<Vec<Rc<B::Buf>>>| -> Result<Tensor> {
                let b = &b.as_ref().expect("pass ran")[0];
                Ok(Tensor::new(x.shape.clone(), self.backend.download(b)?))
            };
            let mut maps = Vec::with_capacity(ms.len());
            for &m in ms {
                let data = match m {
                    Method::Scorecam => layer_cam(m, &|l| {
                        Ok(scorecam_weights(&score_logits[l], &classes, k, o.score))
                    })?,
                    Method::Ablationcam => layer_cam(m, &|l| {
                        Ok(ablation_weights(
                            &ablation_logits[l],
                            &logits,
                            &classes,
                            o.score,
                        ))
                    })?,
                    Method::Random => layer_cam(m, &|l| {
                        let c = plan.shapes[layers[l]][1];
                        let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed + l as u64);
                        Ok((0..n * c).map(|_| rng.random_range(-1.0..1.0)).collect())
                    })?,
                    Method::Fullgrad => {
                        let grads = input_grads.as_ref().expect("input pass ran");
                        self.fullgrad(x, grads, &bias)?
                    }
                    Method::Saliency if o.smooth > 0 => self.smooth_grad(x, &classes, o, m)?,
                    Method::Saliency => download(&input_grads)?,
                    Method::GuidedBackprop if o.smooth > 0 => {
                        self.smooth_grad(x, &classes, o, m)?
                    }
                    Method::GuidedBackprop => download(&guided_grad)?,
                    Method::GuidedGradcam => {
                        let cam = layer_cam(Method::Gradcam, &no_weights)?;
                        let mut gb = download(&guided_grad)?;
                        guided_times_cam(&mut gb, &cam);
                        gb
                    }
                    Method::Deconvnet => download(&deconv_grad)?,
                    Method::IntegratedGradients if o.smooth > 0 => {
                        self.smooth_grad(x, &classes, o, m)?
                    }
                    Method::IntegratedGradients => self.integrated_gradients(x, &classes, o)?,
                    Method::Occlusion => {
                        let occ = occlusion.as_ref().expect("occlusion ran");
                        occlusion_map(occ, &logits, &classes, o.score)
                    }
                    _ => layer_cam(m, &no_weights)?,
                };
                maps.push(Map { method: m, data });
            }
            let scores = logits
                .data
                .chunks(k)
                .zip(&classes)
                .map(|(row, &c)| softmax_at(row, c))
                .collect();
            targets.push(Target {
                classes,
                scores,
                maps,
            });
        }
        Ok(Attribution { logits, targets })
    }

    /// The gradient that starts a backward pass: made on the device from the logits for the
    /// logit score and a class `pick` the kernel knows (no host round trip), on the host for
    /// the softmax and for classes given per image.
    fn seed(
        &self,
        fw: &Values<B>,
        logits: &Tensor,
        pick: Option<ClassPick>,
        classes: &[usize],
        score: Score,
    ) -> Result<B::Buf> {
        let (n, k) = (logits.shape[0], logits.shape[1]);
        match (score, pick) {
            (Score::Logit, Some(pick)) => {
                let out = value(fw, self.model.graph.output);
                let p = ClassSeedParams { n, k, pick };
                self.timed("class_seed", || self.backend.class_seed(&p, out))
            }
            _ => self.backend.upload(&host_seed(logits, classes, score)),
        }
    }

    /// A layer CAM of method `m` on every target layer, aggregated as pytorch-grad-cam does
    /// (each layer ReLU'd, normalized and resized, then the mean, normalized again): [N, H, W].
    /// `weights(l)` gives the channel weights [N, C] of the methods that compute them on the
    /// host (ScoreCAM, AblationCAM, random).
    #[allow(clippy::too_many_arguments)]
    fn layer_cam(
        &self,
        m: Method,
        plan: &Plan,
        layers: &[ValueId],
        acts: &[Vec<f32>],
        grads: Option<&[Rc<B::Buf>]>,
        weights: &dyn Fn(usize) -> Result<Vec<f32>>,
        x: &Tensor,
        o: &MethodOptions,
    ) -> Result<Tensor> {
        let (n, out_h, out_w) = (x.shape[0], x.shape[2], x.shape[3]);
        let single = layers.len() == 1;
        let mut sum = vec![0f32; n * out_h * out_w];
        for (l, &v) in layers.iter().enumerate() {
            let shape = &plan.shapes[v];
            let mut p = GradCamParams::new(shape, out_h, out_w, CamCombine::Weights);
            p.renormalize = single;
            let grad = || grads.map(|g| &*g[l]).expect("gradient pass ran");
            let host_grad = || self.backend.download(grad());
            let combine = m.combine();
            let cam = match m {
                Method::Eigencam => self.map_cam(&p, eigen_maps(shape, &acts[l], None)?)?,
                Method::Eigengradcam => {
                    let g = host_grad()?;
                    let w = Weighting::Elementwise(CamCombine::HiRes, &g);
                    self.map_cam(&p, eigen_maps(shape, &acts[l], Some(w))?)?
                }
                _ if o.eigen_smooth => {
                    let (g, w);
                    let how = match combine {
                        Some(
                            c @ (CamCombine::HiRes | CamCombine::ElementWise | CamCombine::Layer),
                        ) => {
                            g = host_grad()?;
                            Weighting::Elementwise(c, &g)
                        }
                        Some(CamCombine::Fem) => Weighting::Channel(CamCombine::Fem, &acts[l]),
                        Some(c) => {
                            g = host_grad()?;
                            Weighting::Channel(c, &g)
                        }
                        None => {
                            w = weights(l)?;
                            Weighting::Given(&w)
                        }
                    };
                    self.map_cam(&p, eigen_maps(shape, &acts[l], Some(how))?)?
                }
                _ => {
                    let act = self.backend.upload(&acts[l])?;
                    match combine {
                        Some(c) => {
                            p.combine = c;
                            let second = if c == CamCombine::Fem { &act } else { grad() };
                            self.timed("grad_cam", || self.backend.grad_cam(&p, &act, second))?
                        }
                        None => {
                            let w = self.backend.upload(&weights(l)?)?;
                            self.timed("grad_cam", || self.backend.grad_cam(&p, &act, &w))?
                        }
                    }
                }
            };
            let cam = self.backend.download(&cam)?;
            sum.iter_mut().zip(&cam).for_each(|(s, v)| *s += v.max(0.0));
        }
        if !single {
            let count = layers.len() as f32;
            for img in sum.chunks_mut(out_h * out_w) {
                img.iter_mut().for_each(|v| *v /= count);
                normalize(img);
            }
        }
        Ok(Tensor::new(vec![n, out_h, out_w], sum))
    }

    /// The CAM tail (ReLU, normalize, resize, normalize) of maps made on the host: [N, h·w].
    fn map_cam(&self, p: &GradCamParams, maps: Vec<f32>) -> Result<B::Buf> {
        let p = GradCamParams { c: 1, ..*p };
        let act = self.backend.upload(&maps)?;
        let ones = self.backend.upload(&vec![1.0; p.n])?;
        self.timed("grad_cam", || self.backend.grad_cam(&p, &act, &ones))
    }

    /// FullGrad from the input pass's gradients (the input's, then each bias layer's).
    fn fullgrad(
        &self,
        x: &Tensor,
        grads: &[Rc<B::Buf>],
        bias: &[fullgrad::BiasLayer],
    ) -> Result<Tensor> {
        let input_grad = self.backend.download(&grads[0])?;
        let plan = self.model.graph.plan(&x.shape)?;
        let terms = bias
            .iter()
            .zip(&grads[1..])
            .map(|(b, g)| {
                Ok(fullgrad::Term {
                    grad: self.backend.download(g)?,
                    bias: &self.model.graph.params[b.bias].data,
                    shape: &plan.shapes[b.value],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(fullgrad::combine(x, &input_grad, &terms))
    }

    /// d score / d input for explicit per-image classes, with ReLUs following `rule`.
    pub(super) fn input_gradient(
        &self,
        x: &Tensor,
        classes: &[usize],
        score: Score,
        rule: ReluRule,
    ) -> Result<Tensor> {
        let g = &self.model.graph;
        let plan = g.plan(&x.shape)?;
        let scope = Scope::new(g, g.input, true);
        let keep = Keep::for_scopes(g, &[&scope], &[g.output]);
        let fw = self.run_forward(x, &plan, &keep)?;
        let logits = self.logits(&fw, &plan)?;
        let seed = Rc::new(self.backend.upload(&host_seed(&logits, classes, score))?);
        let grad = self.backward(&plan, &fw, &scope, seed, rule)?;
        Ok(Tensor::new(
            x.shape.clone(),
            self.backend.download(&grad[0])?,
        ))
    }
}

fn value<B: Backend>(fw: &Values<B>, v: ValueId) -> &B::Buf {
    fw.values[v].as_deref().expect("value kept")
}

/// Seeds [N, K] for explicit classes.
pub(super) fn host_seed(logits: &Tensor, classes: &[usize], score: Score) -> Vec<f32> {
    let k = logits.shape[1];
    let mut seed = vec![0f32; logits.len()];
    for ((row, out), &c) in logits.data.chunks(k).zip(seed.chunks_mut(k)).zip(classes) {
        score.seed_row(row, c, out);
    }
    seed
}

/// How the values a principal component is taken of are made from A (`eigen_maps`).
enum Weighting<'a> {
    /// f(g, A) element by element (HiResCAM, element-wise, LayerCAM; g ⊙ A for
    /// Eigen-Grad-CAM).
    Elementwise(CamCombine, &'a [f32]),
    /// w_c·A_c with the method's channel weights from g [N, C, h, w].
    Channel(CamCombine, &'a [f32]),
    /// w_c·A_c with given weights [N, C].
    Given(&'a [f32]),
}

/// The first-principal-component maps [N, h·w] of A (or of its weighting), per image.
fn eigen_maps(shape: &[usize], act: &[f32], how: Option<Weighting>) -> Result<Vec<f32>> {
    let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut out = Vec::with_capacity(n * hw);
    for i in 0..n {
        let a = &act[i * c * hw..(i + 1) * c * hw];
        let vals: Vec<f64> = match &how {
            None => a.iter().map(|&v| v as f64).collect(),
            Some(Weighting::Elementwise(how, g)) => {
                let g = &g[i * c * hw..(i + 1) * c * hw];
                let f: fn(f64, f64) -> f64 = match how {
                    CamCombine::ElementWise => |g, a| (g * a).max(0.0),
                    CamCombine::Layer => |g, a| g.max(0.0) * a,
                    _ => |g, a| g * a,
                };
                a.iter()
                    .zip(g)
                    .map(|(&a, &g)| f(g as f64, a as f64))
                    .collect()
            }
            Some(Weighting::Channel(how, g)) => {
                let g = &g[i * c * hw..(i + 1) * c * hw];
                a.chunks(hw)
                    .zip(g.chunks(hw))
                    .flat_map(|(ac, gc)| {
                        let w = channel_weight(*how, ac, gc);
                        ac.iter().map(move |&v| w * v as f64)
                    })
                    .collect()
            }
            Some(Weighting::Given(w)) => a
                .chunks(hw)
                .zip(&w[i * c..(i + 1) * c])
                .flat_map(|(ac, &w)| ac.iter().map(move |&v| w as f64 * v as f64))
                .collect(),
        };
        let proj = eigen::projection(&vals, c, hw).ok_or_else(|| Error::Backend {
            backend: "cpu (EigenCAM)".into(),
            reason: format!("the eigensolver did not converge on image {i}'s [{c}, {hw}] values"),
        })?;
        out.extend(proj.iter().map(|&v| v as f32));
    }
    Ok(out)
}

/// ScoreCAM's weights [N, C]: the softmax over channels of the masked inputs' scores.
/// `logits`: per image, [C, K].
fn scorecam_weights(logits: &[Vec<f32>], classes: &[usize], k: usize, score: Score) -> Vec<f32> {
    let mut w = Vec::new();
    for (rows, &class) in logits.iter().zip(classes) {
        let s: Vec<f64> = rows
            .chunks(k)
            .map(|r| score.of_row(r, class) as f64)
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
        w.extend(s.iter().map(|v| ((v - m).exp() / z) as f32));
    }
    w
}

/// AblationCAM's weights [N, C]: (s − s_c) / s, s the image's score, s_c with channel c
/// ablated. `ablated`: per image, [C, K].
fn ablation_weights(
    ablated: &[Vec<f32>],
    logits: &Tensor,
    classes: &[usize],
    score: Score,
) -> Vec<f32> {
    let k = logits.shape[1];
    let mut w = Vec::new();
    for ((rows, row), &class) in ablated.iter().zip(logits.data.chunks(k)).zip(classes) {
        let s = score.of_row(row, class);
        w.extend(rows.chunks(k).map(|r| (s - score.of_row(r, class)) / s));
    }
    w
}

/// Occlusion's map [N, gh, gw]: occluded minus plain score.
fn occlusion_map(
    occ: &super::perturb::Occlusion,
    logits: &Tensor,
    classes: &[usize],
    score: Score,
) -> Tensor {
    let k = logits.shape[1];
    let mut data = Vec::new();
    for ((rows, row), &class) in occ.logits.iter().zip(logits.data.chunks(k)).zip(classes) {
        let s = score.of_row(row, class);
        data.extend(rows.chunks(k).map(|r| score.of_row(r, class) - s));
    }
    Tensor::new(vec![classes.len(), occ.grid.0, occ.grid.1], data)
}

/// kazuto1011's guided Grad-CAM: gradient [N, 3, H, W] times CAM [N, H, W], in place.
pub fn guided_times_cam(guided: &mut Tensor, cam: &Tensor) {
    let plane = cam.shape[1] * cam.shape[2];
    let per = guided.len() / guided.shape[0].max(1);
    for (g, c) in guided.data.chunks_mut(per).zip(cam.data.chunks(plane)) {
        for (i, v) in g.iter_mut().enumerate() {
            *v *= c[i % plane];
        }
    }
}

/// ttach's augmentation of the input: flipped left-right, then multiplied.
fn augment(x: &Tensor, flip: bool, factor: f32) -> Tensor {
    let mut t = x.clone();
    if flip {
        flip_last_axis(&mut t);
    }
    t.data.iter_mut().for_each(|v| *v *= factor);
    t
}

fn flip_last_axis(t: &mut Tensor) {
    let w = *t.shape.last().expect("a shape");
    t.data.chunks_mut(w).for_each(|row| row.reverse());
}
