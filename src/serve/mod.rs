//! `gradcam serve`: explanations over HTTP, in the protocols serving platforms speak.
//!
//! Layout: [`http`] routes the endpoints (Open Inference Protocol v2 in [`oip`], KServe V1 in
//! [`kserve_v1`], Prometheus text at `/metrics` from [`stats`]); [`inputs`] turns request
//! bodies into network inputs within the limits; [`batcher`] queues each model's requests and
//! runs them in batches on one [`Explainer`](crate::Explainer) per method and layer.
//!
//! Threads: tokio's runtime accepts connections and parses requests (image decoding on its
//! blocking pool); each model has one batcher thread that owns its explainers, so a model's
//! batches run one at a time (the CPU backend spreads each over every core; a GPU runs one
//! queue anyway), and the async side never blocks on compute.
//!
//! What keeps it up: the queue is bounded in images (503 with Retry-After when full), bodies
//! and pixels are bounded (413), everything a request can get wrong is checked before it joins
//! a batch (so one request cannot fail another's batch), a panic in a batch answers that
//! batch's requests with 500 and the batcher rebuilds its explainer, and requests whose client
//! left or whose deadline passed are dropped from the queue unrun.

mod batcher;
mod error;
mod http;
mod inputs;
mod kserve_v1;
mod oip;
mod stats;

pub use http::cam_method;

use crate::engine::{Method, MethodOptions};
use crate::error::{Error, Result};
use crate::runner::BackendKind;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One model the server explains, from `--model NAME=WEIGHTS[,key=value...]`.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub weights: PathBuf,
    pub arch: Option<String>,
    pub transform_input: Option<bool>,
    /// The default target layers (the model's usual one when empty).
    pub layers: Vec<String>,
    /// The default method.
    pub method: Method,
    pub options: MethodOptions,
}

/// Everything `gradcam serve` is told.
#[derive(Clone, Debug)]
pub struct Config {
    pub models: Vec<ModelSpec>,
    pub backend: BackendKind,
    pub host: IpAddr,
    pub port: u16,
    /// Images per batch at most; also the most one request may carry.
    pub max_batch: usize,
    /// How long the oldest queued request waits for a fuller batch.
    pub max_delay: Duration,
    /// Images queued per model at most, beyond which requests get 503.
    pub max_queue: usize,
    /// A request's deadline, from its arrival to its answer (504 after it).
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Pixels of a decoded image, and of a tensor input's H·W, at most (413 above).
    pub max_image_pixels: u64,
    /// Request parameters `test_sleep_ms` and `test_panic` work (the tests' slow and failing
    /// batches); off unless `--test-hooks`.
    pub test_hooks: bool,
}

/// Loads the models, serves until SIGTERM or SIGINT, then drains: stops accepting, answers
/// every request already received, and returns.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .enable_all()
        .thread_name("gradcam-serve")
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the server's runtime: {e}")))?;
    let config = Arc::new(config);
    let server = http::Server::start(config.clone())?;
    let addr = SocketAddr::new(config.host, config.port);
    let serving = server.clone();
    runtime.block_on(async move {
        let server = serving;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("cannot listen on {addr}: {e}")))?;
        eprintln!("listening on http://{local}");
        let app = http::router(server.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(server.clone()))
            .await
            .map_err(|e| Error::Usage(format!("the server stopped: {e}")))?;
        Ok::<(), Error>(())
    })?;
    // Every connection is closed and every request answered; the batchers end with their queue.
    server.stop();
    eprintln!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere than Unix), and starts the drain.
async fn shutdown_signal(server: Arc<http::Server>) {
    let name = stop_signal().await;
    server.begin_drain();
    eprintln!(
        "{name}: draining ({} images queued); no new connections",
        server.queued()
    );
}

#[cfg(unix)]
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot watch for SIGTERM; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn stop_signal() -> &'static str {
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("error: cannot watch for Ctrl-C; stop the server by ending its process");
        std::future::pending::<()>().await;
    }
    "Ctrl-C"
}
