//! The server's Prometheus metrics (`GET /metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    /// `v2_infer`, `v1_predict`, `v1_explain`.
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub model: String,
    /// `queue_full`, `timeout`, `cancelled`.
    pub reason: &'static str,
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

pub struct Stats {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histograms,
    pub batch_images: Histograms,
    pub batch_seconds: Histograms,
    pub queue_images: Family<ModelLabel, Gauge>,
    pub drops: Family<DropLabels, Counter>,
    pub restarts: Family<ModelLabel, Counter>,
}

fn seconds() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn images() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

impl Stats {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gradcam");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        let batch_images = Histograms::new_with_constructor(images as fn() -> Histogram);
        let batch_seconds = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        let queue_images = Family::<ModelLabel, Gauge>::default();
        let drops = Family::<DropLabels, Counter>::default();
        let restarts = Family::<ModelLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by model, endpoint and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer",
            latency.clone(),
        );
        registry.register(
            "batch_images",
            "Images in each batch run",
            batch_images.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time to run one batch",
            batch_seconds.clone(),
        );
        registry.register(
            "queue_images",
            "Images waiting in a model's queue",
            queue_images.clone(),
        );
        registry.register(
            "dropped_requests",
            "Requests not run: queue full, deadline passed, or client gone",
            drops.clone(),
        );
        registry.register(
            "worker_restarts",
            "Batches that failed inside the engine, after which its explainer was rebuilt",
            restarts.clone(),
        );
        Stats {
            registry,
            requests,
            latency,
            batch_images,
            batch_seconds,
            queue_images,
            drops,
            restarts,
        }
    }

    pub fn model(name: &str) -> ModelLabel {
        ModelLabel {
            model: name.to_owned(),
        }
    }

    pub fn dropped(&self, model: &str, reason: &'static str) {
        self.drops
            .get_or_create(&DropLabels {
                model: model.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
