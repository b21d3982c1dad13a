//! The routes, the server's shared state, and what every model endpoint does: read the body
//! within its limit, check the request, queue it, wait for its batch within its deadline.

use super::batcher::{Answer, Input, Job, ModelQueue, TestHooks, Variant, Work};
use super::error::ApiError;
use super::stats::{RequestLabels, Stats};
use super::{inputs, kserve_v1, oip, Config};
use crate::engine::Method;
use crate::error::Result;
use crate::named::Named;
use crate::tensor::Tensor;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Server {
    config: Arc<Config>,
    models: BTreeMap<String, ModelQueue>,
    stats: Arc<Stats>,
    draining: AtomicBool,
}

/// The images of a request: encoded (decoded here) or a preprocessed tensor.
pub enum Pixels {
    Encoded(Vec<Bytes>),
    Tensor(Tensor),
}

/// A model request, parsed, in either protocol.
pub struct Call {
    pub pixels: Pixels,
    /// Per-image target classes (or one for all).
    pub classes: Option<Vec<i64>>,
    pub params: Params,
    pub work: Work,
    /// The overlay PNGs are wanted (encoded images only).
    pub overlay: bool,
}

/// A request's parameters, common to both protocols.
#[derive(Default)]
pub struct Params {
    pub method: Option<Method>,
    pub layers: Option<Vec<String>>,
    pub class: Option<i64>,
    pub timeout: Option<Duration>,
    pub hooks: TestHooks,
}

impl Params {
    /// Reads the parameters this server knows and ignores the rest (clients add their own,
    /// e.g. tritonclient's `binary_data_output`).
    pub fn parse(
        p: &Map<String, Value>,
        test_hooks: bool,
    ) -> std::result::Result<Params, ApiError> {
        let bad =
            |name: &str, want: &str| ApiError::bad(format!("parameter {name} must be {want}"));
        let mut out = Params::default();
        if let Some(m) = p.get("method") {
            let m = m.as_str().ok_or_else(|| bad("method", "a method's name"))?;
            out.method = Some(cam_method(m)?);
        }
        match p.get("layer") {
            None => {}
            Some(Value::String(s)) => out.layers = Some(vec![s.clone()]),
            Some(Value::Array(a)) => {
                let layers: Option<Vec<String>> =
                    a.iter().map(|v| v.as_str().map(str::to_owned)).collect();
                out.layers = Some(
                    layers
                        .filter(|l| !l.is_empty())
                        .ok_or_else(|| bad("layer", "a module path or a list of them"))?,
                );
            }
            Some(_) => return Err(bad("layer", "a module path or a list of them")),
        }
        if let Some(c) = p.get("class") {
            out.class = Some(c.as_i64().ok_or_else(|| bad("class", "an integer"))?);
        }
        if let Some(t) = p.get("timeout_ms") {
            let ms = t
                .as_u64()
                .filter(|&t| t > 0)
                .ok_or_else(|| bad("timeout_ms", "a positive integer"))?;
            out.timeout = Some(Duration::from_millis(ms));
        }
        if test_hooks {
            out.hooks.sleep_ms = p.get("test_sleep_ms").and_then(Value::as_u64).unwrap_or(0);
            out.hooks.panic = p
                .get("test_panic")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if p.contains_key("test_panic_handler") {
                panic!("test_panic_handler was asked for");
            }
        }
        Ok(out)
    }
}

/// The method called `name`, if it gives a CAM ([N, H, W] in [0, 1]): gradient images and
/// occlusion's score grid are not what the `cam` output promises.
pub fn cam_method(name: &str) -> std::result::Result<Method, ApiError> {
    let m = Method::parse(name).map_err(|e| ApiError::bad(e.to_string()))?;
    if m.kind() != crate::engine::MapKind::Cam {
        let cams: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.kind() == crate::engine::MapKind::Cam)
            .map(|m| m.name())
            .collect();
        return Err(ApiError::bad(format!(
            "method {} does not give a CAM; the server serves: {}",
            m.name(),
            cams.join(", ")
        )));
    }
    Ok(m)
}

/// A request's answer, and its overlays when it asked for them.
pub struct Done {
    pub answer: Answer,
    /// One PNG per image, or none.
    pub overlays: Vec<Vec<u8>>,
}

/// The overlay PNG of each image (CPU work, off the async threads).
async fn overlays(answer: &Answer) -> std::result::Result<Vec<Vec<u8>>, ApiError> {
    let cam = answer
        .cam
        .clone()
        .ok_or_else(|| ApiError::internal("no map was computed"))?;
    let rgb = answer.rgb.clone();
    blocking(move || {
        let per = cam.data.len() / cam.shape[0];
        rgb.iter()
            .zip(cam.data.chunks(per))
            .map(|(img, m)| inputs::overlay_png(img, m))
            .collect()
    })
    .await
}

/// Runs CPU work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal error ({e})")))?
}

impl Server {
    pub fn start(config: Arc<Config>) -> Result<Arc<Server>> {
        let stats = Arc::new(Stats::new());
        let mut models = BTreeMap::new();
        for spec in &config.models {
            let q = ModelQueue::start(
                spec,
                config.backend,
                (config.max_batch, config.max_delay, config.max_queue),
                stats.clone(),
            )
            .map_err(|e| crate::Error::Usage(format!("model '{}': {e}", spec.name)))?;
            eprintln!(
                "model '{}': {} on {}, {} of {}",
                q.name,
                q.arch,
                q.backend,
                q.default.method.name(),
                q.default.layers.join(" + ")
            );
            models.insert(spec.name.clone(), q);
        }
        Ok(Arc::new(Server {
            config,
            models,
            stats,
            draining: AtomicBool::new(false),
        }))
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn queued(&self) -> usize {
        self.models.values().map(ModelQueue::queued).sum()
    }

    /// Closes every queue once its requests are answered.
    pub fn stop(&self) {
        for m in self.models.values() {
            m.stop();
        }
    }

    pub fn max_image_pixels(&self) -> u64 {
        self.config.max_image_pixels
    }

    pub fn test_hooks(&self) -> bool {
        self.config.test_hooks
    }

    pub fn model(&self, name: &str) -> std::result::Result<&ModelQueue, ApiError> {
        self.models.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            ApiError::not_found(format!(
                "no model '{name}'; this server has: {}",
                known.join(", ")
            ))
        })
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelQueue> {
        self.models.values()
    }

    /// Checks `call`, queues it, and waits for its answer until its deadline (counted from the
    /// request's arrival, `arrived`, body reading included).
    pub async fn run(
        &self,
        queue: &ModelQueue,
        call: Call,
        arrived: Instant,
    ) -> std::result::Result<Done, ApiError> {
        let timeout = call
            .params
            .timeout
            .map_or(self.config.timeout, |t| t.min(self.config.timeout));
        let deadline = arrived + timeout;
        if call.overlay && matches!(call.pixels, Pixels::Tensor(_)) {
            return Err(ApiError::bad(
                "the overlay needs encoded images: a preprocessed tensor has no picture to draw on",
            ));
        }
        let (input, shape) = match call.pixels {
            Pixels::Tensor(x) => {
                let shape = [x.shape[0], x.shape[1], x.shape[2], x.shape[3]];
                (Input::Tensor(x), shape)
            }
            Pixels::Encoded(images) => {
                // Refused before anything is read, when the queue is full.
                queue.check_room(images.len())?;
                let transform = queue.transform.clone();
                let max = self.config.max_image_pixels;
                let checked = blocking(move || {
                    let refs: Vec<&[u8]> = images.iter().map(|b| &b[..]).collect();
                    inputs::check_encoded(&refs, &transform, max)
                });
                let checked = tokio::time::timeout_at(deadline.into(), checked)
                    .await
                    .map_err(|_| timed_out(timeout))??;
                let (h, w) = checked.size;
                let shape = [checked.images.len(), queue.in_channels, h, w];
                (Input::Encoded(checked), shape)
            }
        };
        let n = shape[0];
        let classes = match (&call.classes, call.params.class) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(
                    "target classes given twice: as an input and as a parameter",
                ))
            }
            (Some(c), None) => Some(inputs::classes(c, n, queue.num_classes)?),
            (None, Some(c)) => Some(inputs::classes(&[c], n, queue.num_classes)?),
            (None, None) => None,
        };
        if classes.is_some() && call.work == Work::Predict {
            return Err(ApiError::bad(
                "target classes only apply to explanations (ask for the cam or overlay output)",
            ));
        }
        let job = Job {
            input,
            shape,
            classes,
            variant: Variant {
                method: call.params.method.unwrap_or(queue.default.method),
                layers: call
                    .params
                    .layers
                    .unwrap_or_else(|| queue.default.layers.clone()),
            },
            work: call.work,
            hooks: call.params.hooks,
            deadline,
        };
        let answer = queue.submit(job)?;
        let answer = tokio::time::timeout_at(deadline.into(), answer)
            .await
            .map_err(|_| timed_out(timeout))?
            .map_err(|_| ApiError::internal("the batcher dropped the request"))??;
        let overlays = if call.overlay {
            overlays(&answer).await?
        } else {
            vec![]
        };
        Ok(Done { answer, overlays })
    }

    /// The response of a model endpoint, counted.
    fn finish(
        &self,
        model: &str,
        endpoint: &'static str,
        started: Instant,
        result: std::result::Result<Response, ApiError>,
    ) -> Response {
        let response = result.unwrap_or_else(IntoResponse::into_response);
        let model = if self.models.contains_key(model) {
            model
        } else {
            ""
        };
        self.stats
            .requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                endpoint,
                code: response.status().as_u16(),
            })
            .inc();
        self.stats
            .latency
            .get_or_create(&Stats::model(model))
            .observe(started.elapsed().as_secs_f64());
        response
    }

    /// The body of a request that arrived at `arrived`, within `--max-body-bytes` (413 naming
    /// it) and `--timeout-ms`.
    async fn body(
        &self,
        headers: &HeaderMap,
        body: Body,
        arrived: Instant,
    ) -> std::result::Result<Bytes, ApiError> {
        let limit = self.config.max_body_bytes;
        let too_large = || {
            ApiError::too_large(format!(
                "the request body is larger than the limit of {limit} bytes (--max-body-bytes)"
            ))
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > limit as u64) {
            return Err(too_large());
        }
        let read = axum::body::to_bytes(body, limit);
        match tokio::time::timeout_at((arrived + self.config.timeout).into(), read).await {
            Err(_) => Err(timed_out(self.config.timeout)),
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(s) = source {
                    if s.is::<http_body_util::LengthLimitError>() {
                        return Err(too_large());
                    }
                    source = s.source();
                }
                Err(ApiError::bad(format!("cannot read the request body: {e}")))
            }
        }
    }
}

fn timed_out(after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "no answer within the request's timeout of {} ms",
            after.as_millis()
        ),
    )
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v1/models", get(kserve_v1::list))
        .route("/v1/models/{target}", get(kserve_v1::status).post(v1_post))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        // A panic in a handler (a bug) answers 500 instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let what = crate::error::panic_message(&*panic);
                ApiError::internal(format!(
                    "internal error ({what}); please report this as a bug"
                ))
                .into_response()
            },
        ))
        .with_state(server)
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "gradcam",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(s): State<Arc<Server>>) -> StatusCode {
    if s.draining.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

fn check_version(version: &str) -> std::result::Result<(), ApiError> {
    if version == "1" {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no version '{version}'; each model has version 1"
        )))
    }
}

async fn model_metadata(State(s): State<Arc<Server>>, Path(model): Path<String>) -> Response {
    metadata(&s, &model).into_response()
}

async fn model_metadata_version(
    State(s): State<Arc<Server>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    check_version(&version)
        .and_then(|()| metadata(&s, &model))
        .into_response()
}

fn metadata(s: &Server, model: &str) -> std::result::Result<Json<Value>, ApiError> {
    let q = s.model(model)?;
    let (h, w) = q.image_size;
    let tensor = |name: &str, datatype: &str, shape: Value| json!({"name": name, "datatype": datatype, "shape": shape});
    Ok(Json(json!({
        "name": q.name,
        "versions": ["1"],
        "platform": "gradcam",
        "inputs": [
            tensor("input", "FP32", json!([-1, q.in_channels, -1, -1])),
            tensor("image", "BYTES", json!([-1])),
            tensor("class", "INT64", json!([-1])),
        ],
        "outputs": [
            tensor("logits", "FP32", json!([-1, q.num_classes])),
            tensor("class", "INT64", json!([-1])),
            tensor("probability", "FP32", json!([-1])),
            tensor("cam", "FP32", json!([-1, -1, -1])),
            tensor("overlay", "BYTES", json!([-1])),
        ],
        "parameters": {
            "arch": q.arch,
            "backend": q.backend,
            "method": q.default.method.name(),
            "layer": q.default.layers,
            "image_size": [h, w],
            "max_batch": q.max_batch,
        },
    })))
}

async fn model_ready(State(s): State<Arc<Server>>, Path(model): Path<String>) -> Response {
    s.model(&model).map(|_| StatusCode::OK).into_response()
}

async fn model_ready_version(
    State(s): State<Arc<Server>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    check_version(&version)
        .and_then(|()| s.model(&model).map(|_| StatusCode::OK))
        .into_response()
}

async fn infer(
    State(s): State<Arc<Server>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        let queue = s.model(&model)?;
        // A full queue refuses before the body is read.
        queue.check_room(1)?;
        let body = s.body(&headers, body, started).await?;
        oip::infer(&s, queue, &headers, body, started).await
    }
    .await;
    s.finish(&model, "v2_infer", started, result)
}

async fn infer_version(
    State(s): State<Arc<Server>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = check_version(&version) {
        return s.finish(&model, "v2_infer", Instant::now(), Err(e));
    }
    infer(State(s), Path(model), headers, body).await
}

/// `POST /v1/models/<m>:predict` and `:explain`.
async fn v1_post(
    State(s): State<Arc<Server>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (model, verb) = target.rsplit_once(':').unwrap_or((&target, ""));
    let (endpoint, work) = match verb {
        "predict" => ("v1_predict", Work::Predict),
        "explain" => ("v1_explain", Work::Explain),
        _ => {
            let e = ApiError::not_found(format!(
                "POST /v1/models/{target}: expected /v1/models/<model>:predict or :explain"
            ));
            return s.finish("", "v1", started, Err(e));
        }
    };
    let result = async {
        let queue = s.model(model)?;
        queue.check_room(1)?;
        let body = s.body(&headers, body, started).await?;
        kserve_v1::call(&s, queue, work, body, started).await
    }
    .await;
    s.finish(model, endpoint, started, result)
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    for q in s.models() {
        s.stats
            .queue_images
            .get_or_create(&Stats::model(&q.name))
            .set(q.queued() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.stats.text(),
    )
        .into_response()
}
