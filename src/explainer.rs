//! The library's entry point: an [`Explainer`] runs a model on one backend for one set of
//! methods and layers, and turns a preprocessed batch into an [`Explanation`].
//!
//! An explainer owns one worker thread, which creates the engine and runs every request in
//! turn; [`Explainer::explain`] queues the request and waits for its answer. So the explainer is
//! `Send + Sync` whatever the backend (the engines keep `RefCell`s and `Rc`s, and a wgpu or
//! CUDA queue wants one submitter), any number of threads may share it, and the caller's thread
//! only waits — a Python binding can release the GIL, a server can hand it work from every
//! connection. The cost: requests to one explainer run one at a time (the CPU backend already
//! spreads each over every core; a GPU runs one queue anyway), and each request's input is
//! copied once into the job (a few milliseconds for a batch of 224² images, well under 1% of an
//! explanation). Several explainers run side by side.

use crate::engine::{Classes, MapKind, Method, MethodOptions, Request};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::runner::{AnyEngine, BackendKind};
use crate::tensor::Tensor;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Which class each image's maps explain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Targets {
    /// Each image's top-1 prediction (ties to the lower class index, as numpy's argmax).
    #[default]
    Top,
    /// The same class for every image.
    Class(usize),
    /// One class per image, in batch order.
    PerImage(Vec<usize>),
}

/// How to build an [`Explainer`]: the backend, the methods, the layers and the methods'
/// options. Every setting has a default: Grad-CAM of the model's default layer on the best
/// backend there is.
pub struct ExplainerBuilder {
    model: Model,
    backend: BackendKind,
    methods: Vec<Method>,
    layers: Vec<String>,
    options: MethodOptions,
    threads: Option<usize>,
}

impl ExplainerBuilder {
    /// The backend (default [`BackendKind::Auto`]).
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// The methods, each computed from one shared forward pass (default: Grad-CAM).
    pub fn methods(mut self, methods: &[Method]) -> Self {
        self.methods = methods.to_vec();
        self
    }

    /// Target layers as PyTorch module paths (default: the model's usual target). With several,
    /// each method's map is their mean, as pytorch-grad-cam aggregates `target_layers`.
    pub fn layers<S: Into<String>>(mut self, layers: impl IntoIterator<Item = S>) -> Self {
        self.layers = layers.into_iter().map(Into::into).collect();
        self
    }

    /// The methods' options: the score explained, aug_smooth, eigen_smooth, the perturbation
    /// methods' batch size, patch, stride, steps, SmoothGrad, the seed.
    pub fn options(mut self, options: MethodOptions) -> Self {
        self.options = options;
        self
    }

    /// Threads of the CPU backend's work (default: the global rayon pool, every core).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Starts the worker, creates the backend there and uploads the weights. Fails on an
    /// unknown layer, an invalid combination of methods and options, or a backend that is not
    /// there.
    pub fn build(self) -> Result<Explainer> {
        if self.threads == Some(0) {
            return Err(Error::BadOption("threads must be at least 1".into()));
        }
        let config = Config {
            methods: self.methods,
            layers: self.layers,
            options: self.options,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::sync_channel(1);
        let (model, backend, threads) = (self.model, self.backend, self.threads);
        let worker = std::thread::Builder::new()
            .name("gradcam-explainer".into())
            .spawn(move || Worker::start(model, backend, threads, config, ready, queue))
            .map_err(|e| Error::Backend {
                backend: "worker".into(),
                reason: format!("cannot start the explainer's thread: {e}"),
            })?;
        match started.recv() {
            Ok(Ok(info)) => Ok(Explainer {
                jobs: Some(jobs),
                worker: Some(worker),
                info,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Backend {
                backend: "worker".into(),
                reason: "the explainer's thread stopped while creating the engine".into(),
            }),
        }
    }
}

/// What the explainer computes for every request.
struct Config {
    methods: Vec<Method>,
    layers: Vec<String>,
    options: MethodOptions,
}

/// What an explainer says of itself.
#[derive(Clone, Debug)]
struct Info {
    backend: String,
    num_classes: usize,
    in_channels: usize,
    methods: Vec<Method>,
    layers: Vec<String>,
}

/// One request on its way to the worker, and where its answer goes.
struct Job {
    x: Tensor,
    /// `None`: the forward pass only ([`Explainer::predict`]).
    targets: Option<Targets>,
    reply: mpsc::SyncSender<Result<Explanation>>,
}

/// A model on a backend with its methods and layers, ready to explain batches. `Send + Sync`:
/// share it between threads (in an `Arc`); requests run one at a time on its worker thread.
pub struct Explainer {
    /// The queue to the worker; `None` once dropped, which ends the worker's loop.
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    info: Info,
}

impl Explainer {
    /// Starts building an explainer for `model`.
    pub fn builder(model: Model) -> ExplainerBuilder {
        ExplainerBuilder {
            model,
            backend: BackendKind::Auto,
            methods: vec![Method::Gradcam],
            layers: vec![],
            options: MethodOptions::default(),
            threads: None,
        }
    }

    /// Explains the batch `x` [N, C, H, W] (preprocessed, e.g. by
    /// [`Transform::batch`](crate::image::Transform::batch)). Images whose input, logits or
    /// maps are not finite are named in [`Explanation::failures`], and their rows of every map
    /// are NaN; the rest of the batch is explained as usual.
    pub fn explain(&self, x: &Tensor, targets: Targets) -> Result<Explanation> {
        self.check(x, &targets)?;
        self.submit(x.clone(), Some(targets))
    }

    /// [`Explainer::explain`] of a batch the caller hands over (no copy).
    pub fn explain_owned(&self, x: Tensor, targets: Targets) -> Result<Explanation> {
        self.check(&x, &targets)?;
        self.submit(x, Some(targets))
    }

    /// The forward pass alone: the logits, each image's top-1 class and its probability, and
    /// the failures, with no maps. A fraction of an explanation's cost (no backward pass).
    pub fn predict(&self, x: &Tensor) -> Result<Explanation> {
        self.predict_owned(x.clone())
    }

    /// [`Explainer::predict`] of a batch the caller hands over (no copy).
    pub fn predict_owned(&self, x: Tensor) -> Result<Explanation> {
        self.check(&x, &Targets::Top)?;
        self.submit(x, None)
    }

    fn submit(&self, x: Tensor, targets: Option<Targets>) -> Result<Explanation> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || Error::Backend {
            backend: self.info.backend.clone(),
            reason: "the explainer's worker thread has stopped".into(),
        };
        let job = Job { x, targets, reply };
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// The backend the worker runs on, e.g. "cpu" or the GPU's name.
    pub fn backend_name(&self) -> &str {
        &self.info.backend
    }

    /// Classes of the model's output.
    pub fn num_classes(&self) -> usize {
        self.info.num_classes
    }

    /// Channels of the model's input.
    pub fn in_channels(&self) -> usize {
        self.info.in_channels
    }

    /// The methods every explanation has maps of, in order.
    pub fn methods(&self) -> &[Method] {
        &self.info.methods
    }

    /// The target layers (the model's default layer when none was given).
    pub fn layers(&self) -> &[String] {
        &self.info.layers
    }

    /// What can be checked without the engine: the rank, the channels, the data's length and
    /// the targets.
    fn check(&self, x: &Tensor, targets: &Targets) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InputShape {
                input: x.shape.clone(),
                reason,
            })
        };
        let &[n, c, h, w] = x.shape.as_slice() else {
            return bad(format!(
                "expected [N, C, H, W] (rank 4), got rank {}",
                x.shape.len()
            ));
        };
        if n == 0 || h == 0 || w == 0 {
            return bad("every dimension must be at least 1".into());
        }
        if c != self.info.in_channels {
            return bad(format!(
                "the model takes {} input channels; the input has {c}",
                self.info.in_channels
            ));
        }
        let len = x.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if len != Some(x.data.len()) {
            return bad(format!("the data holds {} values", x.data.len()));
        }
        if let Targets::PerImage(cs) = targets {
            if cs.len() != n {
                return bad(format!("{} target classes for {n} images", cs.len()));
            }
        }
        Ok(())
    }
}

impl Drop for Explainer {
    /// Closes the queue and waits for the worker to finish the request it runs.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker thread's state: the engine and what it computes.
struct Worker {
    engine: AnyEngine,
    config: Config,
}

impl Worker {
    /// The worker thread's body: with `threads`, everything (the engine included) runs inside
    /// a pool of that many threads, so the CPU backend's parallel loops use that pool.
    fn start(
        model: Model,
        backend: BackendKind,
        threads: Option<usize>,
        config: Config,
        ready: mpsc::SyncSender<Result<Info>>,
        queue: mpsc::Receiver<Job>,
    ) {
        let pool = threads.map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Error::BadOption(format!("cannot start {n} threads: {e}")))
        });
        match pool {
            Some(Err(e)) => {
                let _ = ready.send(Err(e));
            }
            Some(Ok(pool)) => pool.install(|| Self::serve(model, backend, config, ready, queue)),
            None => Self::serve(model, backend, config, ready, queue),
        }
    }

    fn serve(
        model: Model,
        backend: BackendKind,
        config: Config,
        ready: mpsc::SyncSender<Result<Info>>,
        queue: mpsc::Receiver<Job>,
    ) {
        let worker = match Self::new(model, backend, config) {
            Ok((w, info)) => {
                let _ = ready.send(Ok(info));
                w
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        for job in queue {
            // A panic is a bug; it answers its request with an error and the worker goes on
            // (the engine's borrows are released as the panic unwinds).
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| match &job.targets {
                Some(targets) => worker.explain(job.x, targets),
                None => worker.predict(job.x),
            }))
            .unwrap_or_else(|panic| {
                let what = crate::error::panic_message(&*panic);
                Err(Error::Backend {
                    backend: worker.engine.backend_name(),
                    reason: format!("internal error ({what}); please report this as a bug"),
                })
            });
            let _ = job.reply.send(result);
        }
    }

    fn new(model: Model, backend: BackendKind, config: Config) -> Result<(Self, Info)> {
        let engine = AnyEngine::new(backend, model)?;
        let model = engine.model();
        for layer in &config.layers {
            model.module(layer)?;
        }
        let probe = Request {
            methods: &config.methods,
            layers: &config.layers,
            classes: Classes::TopK(1),
            options: &config.options,
        };
        engine.check_request(&probe)?;
        let info = Info {
            backend: engine.backend_name(),
            num_classes: model.num_classes,
            in_channels: model.graph.in_channels,
            methods: config.methods.clone(),
            layers: if config.layers.is_empty() {
                vec![model.default_layer.clone()]
            } else {
                config.layers.clone()
            },
        };
        Ok((Worker { engine, config }, info))
    }

    fn explain(&self, mut x: Tensor, targets: &Targets) -> Result<Explanation> {
        self.engine.check_activations(&x.shape)?;
        let mut failures = zero_non_finite(&mut x);
        let req = Request {
            methods: &self.config.methods,
            layers: &self.config.layers,
            classes: match targets {
                Targets::Top => Classes::TopK(1),
                Targets::Class(c) => Classes::Fixed(*c),
                Targets::PerImage(cs) => Classes::PerImage(cs.clone()),
            },
            options: &self.config.options,
        };
        let mut a = self.engine.attribute(&x, &req)?;
        for (i, f) in failures.iter_mut().enumerate() {
            if f.is_none() {
                *f = a.non_finite(i);
            }
        }
        let t = a.targets.swap_remove(0);
        let mut e = Explanation {
            logits: a.logits,
            classes: t.classes,
            probabilities: t.scores,
            maps: t
                .maps
                .into_iter()
                .map(|m| MethodMap {
                    method: m.method,
                    kind: m.method.kind(),
                    data: m.data,
                })
                .collect(),
            failures,
        };
        e.withhold_failed();
        Ok(e)
    }

    fn predict(&self, mut x: Tensor) -> Result<Explanation> {
        self.engine.check_activations(&x.shape)?;
        let mut failures = zero_non_finite(&mut x);
        let logits = self.engine.forward(&x)?;
        let k = logits.shape[1];
        let (mut classes, mut probabilities) = (vec![], vec![]);
        for (i, row) in logits.data.chunks(k).enumerate() {
            if failures[i].is_none() {
                failures[i] = crate::engine::non_finite_logit(row);
            }
            let top = crate::engine::argmax(row);
            classes.push(top);
            probabilities.push(crate::engine::softmax_at(row, top));
        }
        let mut e = Explanation {
            logits,
            classes,
            probabilities,
            maps: vec![],
            failures,
        };
        e.withhold_failed();
        Ok(e)
    }
}

/// An image with a non-finite value runs as zeros, so that the rest of the batch is explained;
/// its results are then withheld. Returns why each image failed, if it did.
fn zero_non_finite(x: &mut Tensor) -> Vec<Option<String>> {
    let n = x.shape[0];
    let per = x.data.len() / n;
    let plane = x.shape[2] * x.shape[3];
    let width = x.shape[3];
    let mut failures: Vec<Option<String>> = vec![None; n];
    for (i, img) in x.data.chunks_mut(per).enumerate() {
        if let Some(k) = img.iter().position(|v| !v.is_finite()) {
            failures[i] = Some(format!(
                "non-finite input value {} at [{i}, {}, {}, {}]",
                img[k],
                k / plane,
                k % plane / width,
                k % width
            ));
            img.fill(0.0);
        }
    }
    failures
}

/// One method's maps for a batch.
#[derive(Clone, Debug)]
pub struct MethodMap {
    /// The method that made it.
    pub method: Method,
    /// What the map is: [`MapKind::Cam`] maps are [N, H, W] in [0, 1] at the input's size.
    pub kind: MapKind,
    /// [N, H, W] for CAMs and occlusion's score differences, [N, C, H, W] for gradient maps.
    pub data: Tensor,
}

impl MethodMap {
    /// Image `i`'s map (H·W values for a CAM, row-major).
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.data.len() / self.data.shape[0];
        &self.data.data[i * per..(i + 1) * per]
    }

    /// The map's (height, width).
    pub fn size(&self) -> (usize, usize) {
        let s = &self.data.shape;
        (s[s.len() - 2], s[s.len() - 1])
    }
}

/// What [`Explainer::explain`] returns for a batch of N images.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// [N, classes]
    pub logits: Tensor,
    /// The class each image's maps explain.
    pub classes: Vec<usize>,
    /// The softmax probability of that class.
    pub probabilities: Vec<f32>,
    /// One per method, in the explainer's order; each aggregates the explainer's layers.
    pub maps: Vec<MethodMap>,
    /// Per image: `None`, or why it has no maps (a non-finite input, logit or map). A failed
    /// image's rows of the logits, probabilities and maps are NaN, so they cannot pass for
    /// results.
    pub failures: Vec<Option<String>>,
}

impl Explanation {
    /// The map of `method`, if the explainer computes it.
    pub fn map(&self, method: Method) -> Option<&MethodMap> {
        self.maps.iter().find(|m| m.method == method)
    }

    /// This explanation of rows `rows` of a batch, spread back into the whole batch of
    /// `failures.len()` images: the other rows are NaN, with their entry of `failures` as the
    /// reason (their `classes` entry is 0 and means nothing). For a batch some of whose images
    /// could not even be decoded.
    pub fn scatter(self, rows: &[usize], failures: Vec<Option<String>>) -> Explanation {
        let n = failures.len();
        let spread = |t: Tensor| {
            let per = t.data.len() / t.shape[0].max(1);
            let mut data = vec![f32::NAN; n * per];
            for (j, &i) in rows.iter().enumerate() {
                data[i * per..(i + 1) * per].copy_from_slice(&t.data[j * per..(j + 1) * per]);
            }
            let mut shape = t.shape;
            shape[0] = n;
            Tensor::new(shape, data)
        };
        let mut classes = vec![0; n];
        let mut probabilities = vec![f32::NAN; n];
        let mut all_failures = failures;
        for (j, &i) in rows.iter().enumerate() {
            classes[i] = self.classes[j];
            probabilities[i] = self.probabilities[j];
            all_failures[i] = self.failures[j].clone();
        }
        Explanation {
            logits: spread(self.logits),
            classes,
            probabilities,
            maps: self
                .maps
                .into_iter()
                .map(|m| MethodMap {
                    data: spread(m.data),
                    ..m
                })
                .collect(),
            failures: all_failures,
        }
    }

    fn withhold_failed(&mut self) {
        let rows = |t: &mut Tensor, i: usize| {
            let per = t.data.len() / t.shape[0];
            t.data[i * per..(i + 1) * per].fill(f32::NAN);
        };
        for i in (0..self.failures.len()).filter(|&i| self.failures[i].is_some()) {
            rows(&mut self.logits, i);
            self.probabilities[i] = f32::NAN;
            for m in &mut self.maps {
                rows(&mut m.data, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explainer_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Explainer>();
        shared::<Explanation>();
    }
}
