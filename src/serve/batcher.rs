//! One model's queue, and the thread that turns it into batches.
//!
//! A batch runs when it holds `max_batch` images or its oldest request has waited `max_delay`.
//! Requests batch together when they want the same work (explain or predict), method, layers,
//! input size and kind of target (top class or given classes); the oldest request always
//! goes first, and later ones that fit join it. Requests whose deadline passed or whose client
//! left are dropped before they run.

use super::error::ApiError;
use super::inputs;
use super::stats::Stats;
use super::ModelSpec;
use crate::engine::{Method, MethodOptions};
use crate::error::Result;
use crate::explainer::{Explainer, Explanation, Targets};
use crate::image::{RgbImage, Transform};
use crate::model::{LoadOptions, Model};
use crate::runner::BackendKind;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Explainers a model keeps, one per method and layers asked for; the least recently used
/// goes beyond this (each holds its weights on the backend).
const MAX_VARIANTS: usize = 4;

/// A method and its target layers: what one explainer computes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub method: Method,
    pub layers: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Logits, class and probability, no map.
    Predict,
    Explain,
}

/// The tests' hooks (`--test-hooks`): a slow batch, a batch that panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TestHooks {
    pub sleep_ms: u64,
    pub panic: bool,
}

/// A request's images: a preprocessed tensor, or encoded images whose headers were checked
/// (decoded by the batcher, in the compute threads, just before their batch).
pub enum Input {
    Tensor(Tensor),
    Encoded(inputs::Encoded),
}

/// One request's images, checked, on their way to a batch.
pub struct Job {
    pub input: Input,
    /// [n, C, H, W] of the network input, n ≤ max_batch.
    pub shape: [usize; 4],
    /// One class per image, or each image's top class.
    pub classes: Option<Vec<usize>>,
    pub variant: Variant,
    pub work: Work,
    pub hooks: TestHooks,
    pub deadline: Instant,
}

/// What a request gets back: its rows of the batch's results.
pub struct Answer {
    /// [n, classes]
    pub logits: Tensor,
    pub classes: Vec<usize>,
    pub probabilities: Vec<f32>,
    /// [n, H, W]; `None` for [`Work::Predict`].
    pub cam: Option<Tensor>,
    /// Encoded inputs: the preprocessed pictures, for the overlays.
    pub rgb: Vec<RgbImage>,
}

/// A job's network input and pictures, or why its images do not decode.
type Prepared<'a> = std::result::Result<(Cow<'a, [f32]>, Vec<RgbImage>), ApiError>;

/// A request's answer, or why it has none.
pub type Outcome = std::result::Result<Answer, ApiError>;

type Reply = oneshot::Sender<Outcome>;

struct Queued {
    job: Job,
    reply: Reply,
    arrived: Instant,
}

impl Queued {
    fn n(&self) -> usize {
        self.job.shape[0]
    }

    fn key(&self) -> Key<'_> {
        let j = &self.job;
        Key {
            work: j.work,
            variant: (j.work == Work::Explain).then_some(&j.variant),
            classes: j.classes.is_some(),
            size: &j.shape[1..],
            hooks: j.hooks,
        }
    }
}

/// Requests with equal keys can share a batch.
#[derive(PartialEq)]
struct Key<'a> {
    work: Work,
    /// Predictions share the default explainer whatever their variant.
    variant: Option<&'a Variant>,
    classes: bool,
    size: &'a [usize],
    hooks: TestHooks,
}

/// What the HTTP side holds of a model: its queue and what requests are checked against.
pub struct ModelQueue {
    pub name: String,
    pub default: Variant,
    pub num_classes: usize,
    pub in_channels: usize,
    /// The preprocessing of encoded images.
    pub transform: crate::image::Transform,
    /// The (height, width) encoded images are preprocessed to.
    pub image_size: (usize, usize),
    pub arch: String,
    pub backend: String,
    pub max_batch: usize,
    max_queue: usize,
    queued: Arc<AtomicUsize>,
    jobs: Mutex<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

impl ModelQueue {
    /// Loads the model, builds its default explainer (so that a bad model, layer or backend
    /// fails at start, not at the first request) and starts the batcher thread.
    pub fn start(
        spec: &ModelSpec,
        backend: BackendKind,
        limits: (usize, Duration, usize),
        stats: Arc<Stats>,
    ) -> Result<ModelQueue> {
        let (max_batch, max_delay, max_queue) = limits;
        let load = LoadOptions {
            arch: spec.arch.clone(),
            transform_input: spec.transform_input,
        };
        let model = Model::load_with(&spec.weights, &load)?;
        let transform = model.preprocessing();
        let arch = model.arch.clone();
        let image_size = model.input_size();
        let build = Builder {
            weights: spec.weights.clone(),
            load,
            backend,
            options: spec.options.clone(),
        };
        let default = Variant {
            method: spec.method,
            layers: spec.layers.clone(),
        };
        let explainer = build.explainer(model, &default)?;
        let default = Variant {
            layers: explainer.layers().to_vec(),
            ..default
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let (jobs, queue) = mpsc::channel();
        let batcher = Batcher {
            model: spec.name.clone(),
            transform: transform.clone(),
            build,
            default: default.clone(),
            explainers: vec![(default.clone(), explainer)],
            max_batch,
            max_delay,
            queued: queued.clone(),
            stats: stats.clone(),
        };
        let (num_classes, in_channels) = {
            let e = &batcher.explainers[0].1;
            (e.num_classes(), e.in_channels())
        };
        let backend_name = batcher.explainers[0].1.backend_name().to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("gradcam-batcher-{}", spec.name))
            .spawn(move || batcher.run(queue))
            .map_err(|e| crate::Error::Backend {
                backend: backend_name.clone(),
                reason: format!("cannot start the batcher thread: {e}"),
            })?;
        Ok(ModelQueue {
            name: spec.name.clone(),
            default,
            num_classes,
            in_channels,
            transform,
            image_size,
            arch,
            backend: backend_name,
            max_batch,
            max_queue,
            queued,
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// Images waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// 413 for more images than a batch holds, 503 when the queue has no room for `n` more
    /// images now.
    pub fn check_room(&self, n: usize) -> std::result::Result<(), ApiError> {
        if n > self.max_batch {
            return Err(ApiError::too_large(format!(
                "{n} images in one request; the limit is {} (--max-batch)",
                self.max_batch
            )));
        }
        if self.queued() + n > self.max_queue {
            return Err(self.full());
        }
        Ok(())
    }

    fn full(&self) -> ApiError {
        self.stats.dropped(&self.name, "queue_full");
        ApiError::busy(format!(
            "model '{}' has {} images queued, the limit (--max-queue {}); retry later",
            self.name,
            self.queued(),
            self.max_queue
        ))
    }

    /// Queues `job`, or refuses it at once ([`ModelQueue::check_room`]).
    pub fn submit(&self, job: Job) -> std::result::Result<oneshot::Receiver<Outcome>, ApiError> {
        let n = job.shape[0];
        self.check_room(n)?;
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q + n <= self.max_queue).then_some(q + n)
            })
            .map_err(|_| self.full())?;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            job,
            reply,
            arrived: Instant::now(),
        };
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.as_ref().map(|j| j.send(queued).is_ok()));
        if sent != Some(true) {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(ApiError::busy("the server is shutting down"));
        }
        Ok(answer)
    }

    /// Closes the queue and waits for the batcher to answer what is in it.
    pub fn stop(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// How the batcher makes an explainer for a variant.
struct Builder {
    weights: std::path::PathBuf,
    load: LoadOptions,
    backend: BackendKind,
    options: MethodOptions,
}

impl Builder {
    fn explainer(&self, model: Model, v: &Variant) -> Result<Explainer> {
        Explainer::builder(model)
            .backend(self.backend)
            .methods(&[v.method])
            .layers(v.layers.clone())
            .options(self.options.clone())
            .build()
    }

    fn load_explainer(&self, v: &Variant) -> Result<Explainer> {
        self.explainer(Model::load_with(&self.weights, &self.load)?, v)
    }
}

/// The batcher thread's state: the explainers, most recently used last.
struct Batcher {
    model: String,
    transform: Transform,
    build: Builder,
    default: Variant,
    explainers: Vec<(Variant, Explainer)>,
    max_batch: usize,
    max_delay: Duration,
    queued: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

impl Batcher {
    fn run(mut self, queue: mpsc::Receiver<Queued>) {
        let mut pending: VecDeque<Queued> = VecDeque::new();
        let mut open = true;
        loop {
            while let Ok(q) = queue.try_recv() {
                pending.push_back(q);
            }
            if pending.is_empty() {
                if !open {
                    return;
                }
                match queue.recv() {
                    Ok(q) => pending.push_back(q),
                    Err(_) => return,
                }
            }
            self.drop_stale(&mut pending);
            let Some(head) = pending.front() else {
                continue;
            };
            // Wait for a full batch of the head's kind, or for the head's delay to pass.
            let until = head.arrived + self.max_delay;
            while open {
                let ready: usize = {
                    let key = pending[0].key();
                    pending
                        .iter()
                        .filter(|q| q.key() == key)
                        .map(Queued::n)
                        .sum()
                };
                let now = Instant::now();
                if ready >= self.max_batch || now >= until {
                    break;
                }
                match queue.recv_timeout(until - now) {
                    Ok(q) => pending.push_back(q),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            let batch = self.take_batch(&mut pending);
            self.release(batch.iter().map(Queued::n).sum());
            self.run_batch(batch);
        }
    }

    /// The head and every later request like it that fits, in order.
    fn take_batch(&self, pending: &mut VecDeque<Queued>) -> Vec<Queued> {
        let mut batch: Vec<Queued> = vec![];
        let mut images = 0;
        let mut rest = VecDeque::with_capacity(pending.len());
        for q in pending.drain(..) {
            let fits = batch.first().is_none_or(|h| h.key() == q.key())
                && images + q.n() <= self.max_batch;
            if fits {
                images += q.n();
                batch.push(q);
            } else {
                rest.push_back(q);
            }
        }
        *pending = rest;
        batch
    }

    /// `n` images have left the queue.
    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
    }

    /// Removes the requests whose client has gone or whose deadline has passed (their
    /// handler's own timer has answered them).
    fn drop_stale(&self, pending: &mut VecDeque<Queued>) {
        let now = Instant::now();
        let mut gone = 0;
        pending.retain_mut(|q| {
            let reason = if q.reply.is_closed() {
                "cancelled"
            } else if now >= q.job.deadline {
                "timeout"
            } else {
                return true;
            };
            self.stats.dropped(&self.model, reason);
            gone += q.n();
            false
        });
        self.release(gone);
    }

    fn run_batch(&mut self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let label = Stats::model(&self.model);
        let images: usize = batch.iter().map(Queued::n).sum();
        self.stats
            .batch_images
            .get_or_create(&label)
            .observe(images as f64);
        let jobs: Vec<&Job> = batch.iter().map(|q| &q.job).collect();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(&jobs)));
        let answers = match result {
            Ok(answers) => answers,
            Err(panic) => {
                let what = crate::error::panic_message(&*panic);
                self.restart(&batch[0].job);
                let e = ApiError::internal(format!(
                    "internal error in the batch ({what}); its explainer was restarted"
                ));
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        };
        self.stats
            .batch_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        for (q, a) in batch.into_iter().zip(answers) {
            // The client may have gone meanwhile; then nobody waits for this answer.
            let _ = q.reply.send(a);
        }
    }

    /// Drops the explainer a failed batch ran on; the next request of its kind builds a new
    /// one.
    fn restart(&mut self, job: &Job) {
        self.stats
            .restarts
            .get_or_create(&Stats::model(&self.model))
            .inc();
        let v = self.variant_of(job).clone();
        self.explainers.retain(|(w, _)| *w != v);
    }

    fn variant_of<'a>(&'a self, job: &'a Job) -> &'a Variant {
        match job.work {
            Work::Predict => &self.default,
            Work::Explain => &job.variant,
        }
    }

    /// The explainer of `v`, built on first use.
    fn explainer(&mut self, v: &Variant) -> std::result::Result<&Explainer, ApiError> {
        if let Some(i) = self.explainers.iter().position(|(w, _)| w == v) {
            let e = self.explainers.remove(i);
            self.explainers.push(e);
        } else {
            let e = self
                .build
                .load_explainer(v)
                .map_err(|e| ApiError::from_library(&e))?;
            if self.explainers.len() >= MAX_VARIANTS {
                self.explainers.remove(0);
            }
            self.explainers.push((v.clone(), e));
        }
        Ok(&self.explainers.last().expect("just pushed").1)
    }

    /// Runs the batch of `jobs` (all of one key): decodes the encoded ones in the compute
    /// threads, runs those that decoded as one batch, and answers each job with its rows or
    /// its own error.
    fn compute(&mut self, jobs: &[&Job]) -> Vec<Outcome> {
        let head = jobs[0];
        if head.hooks.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(head.hooks.sleep_ms));
        }
        if head.hooks.panic {
            panic!("test_panic was asked for");
        }
        let transform = &self.transform;
        let mut prepared: Vec<Prepared> = jobs
            .par_iter()
            .map(|j| match &j.input {
                Input::Tensor(t) => Ok((Cow::Borrowed(&t.data[..]), vec![])),
                Input::Encoded(e) => {
                    inputs::decode(e, transform).map(|(x, rgb)| (Cow::Owned(x), rgb))
                }
            })
            .collect();
        let ok: Vec<usize> = (0..jobs.len()).filter(|&i| prepared[i].is_ok()).collect();
        let mut out: Vec<Outcome> = prepared
            .iter()
            .map(|p| match p {
                Err(e) => Err(e.clone()),
                Ok(_) => Err(ApiError::internal("not run")),
            })
            .collect();
        if ok.is_empty() {
            return out;
        }
        let mut shape = head.shape.to_vec();
        shape[0] = ok.iter().map(|&i| jobs[i].shape[0]).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for &i in &ok {
            if let Ok((x, _)) = &prepared[i] {
                data.extend_from_slice(x);
            }
        }
        let x = Tensor::new(shape, data);
        let targets = match head.classes {
            None => Targets::Top,
            Some(_) => Targets::PerImage(
                ok.iter()
                    .flat_map(|&i| jobs[i].classes.iter().flatten().copied())
                    .collect(),
            ),
        };
        let ran: Vec<&Job> = ok.iter().map(|&i| jobs[i]).collect();
        let answers = match self.run_explainer(head, x, targets) {
            Ok(e) => split(e, &ran),
            Err(e) => ran.iter().map(|_| Err(e.clone())).collect(),
        };
        for (&i, mut answer) in ok.iter().zip(answers) {
            if let (Ok(a), Ok((_, rgb))) = (&mut answer, &mut prepared[i]) {
                a.rgb = std::mem::take(rgb);
            }
            out[i] = answer;
        }
        out
    }

    fn run_explainer(
        &mut self,
        head: &Job,
        x: Tensor,
        targets: Targets,
    ) -> std::result::Result<Explanation, ApiError> {
        let variant = self.variant_of(head).clone();
        let explainer = self.explainer(&variant)?;
        let result = match head.work {
            Work::Predict => explainer.predict_owned(x),
            Work::Explain => explainer.explain_owned(x, targets),
        };
        result.map_err(|e| {
            if let crate::Error::Backend { .. } = e {
                // The explainer's worker may be gone; build a new one next time.
                self.restart(head);
            }
            ApiError::from_library(&e)
        })
    }
}

/// The batch's explanation, cut back into one answer per job; a job with a failed image gets
/// an error naming it: 422, since inputs are checked finite before they are queued, so a
/// failure here is a well-formed image whose result is not finite.
fn split(e: Explanation, jobs: &[&Job]) -> Vec<Outcome> {
    let mut start = 0;
    let rows = |t: &Tensor, a: usize, b: usize| {
        let per = t.data.len() / t.shape[0];
        let mut shape = t.shape.clone();
        shape[0] = b - a;
        Tensor::new(shape, t.data[a * per..b * per].to_vec())
    };
    jobs.iter()
        .map(|j| {
            let (a, b) = (start, start + j.shape[0]);
            start = b;
            if let Some((i, why)) = (a..b).find_map(|i| e.failures[i].as_ref().map(|f| (i, f))) {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    format!("image {}: {why}", i - a),
                ));
            }
            Ok(Answer {
                logits: rows(&e.logits, a, b),
                classes: e.classes[a..b].to_vec(),
                probabilities: e.probabilities[a..b].to_vec(),
                cam: e.maps.first().map(|m| rows(&m.data, a, b)),
                rgb: vec![],
            })
        })
        .collect()
}
