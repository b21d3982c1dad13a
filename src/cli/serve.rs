//! `gradcam serve`'s flags (the server itself is `crate::serve`).

use crate::engine::{Method, MethodOptions, Score};
use crate::named::Named;
use crate::runner::BackendKind;
use crate::serve::{Config, ModelSpec};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
#[command(after_help = "\
Endpoints: Open Inference Protocol v2 (GET /v2/health/live, /v2/health/ready, /v2/models/NAME, \
/v2/models/NAME/ready; POST /v2/models/NAME/infer, JSON or binary tensor data), KServe V1 \
(POST /v1/models/NAME:predict and :explain), and GET /metrics (Prometheus). README.md shows a \
request; docs/serve.md has the details.")]
pub struct Args {
    /// A model to serve, as NAME=WEIGHTS[,layer=L][,method=M][,arch=A][,score=logit|softmax]
    /// [,no-transform-input]: its default method and layer (requests may ask for others).
    /// Repeat for several models.
    #[arg(long = "model", required = true, value_parser = parse_model)]
    models: Vec<ModelSpec>,
    #[arg(long, value_parser = super::named::<BackendKind>(), default_value = "auto")]
    backend: BackendKind,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0: any free one; the address is printed as `listening on http://HOST:PORT`).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Images per batch at most, and per request.
    #[arg(long, default_value_t = 8, value_parser = |s: &str| super::parse_count(s, 1, 4096).map(|v| v as usize))]
    max_batch: usize,
    /// How long the oldest queued request waits for a fuller batch, in ms.
    #[arg(long, default_value_t = 5, value_parser = |s: &str| super::parse_count(s, 0, 60_000))]
    max_delay_ms: u64,
    /// Images queued per model at most; beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = |s: &str| super::parse_count(s, 1, 1 << 20).map(|v| v as usize))]
    max_queue: usize,
    /// A request's deadline from arrival to answer, in ms (504 after it; a request's
    /// `timeout_ms` parameter may shorten it).
    #[arg(long, default_value_t = 30_000, value_parser = |s: &str| super::parse_count(s, 1, 3_600_000))]
    timeout_ms: u64,
    /// Request bodies larger than this get 413.
    #[arg(long, default_value_t = 64 << 20, value_parser = |s: &str| super::parse_count(s, 1, 1 << 32).map(|v| v as usize))]
    max_body_bytes: usize,
    /// Pixels of a decoded image, or of a tensor input's H·W, at most (413 above).
    #[arg(long, default_value_t = 4096 * 4096, value_parser = |s: &str| super::parse_count(s, 1, u64::MAX))]
    max_image_pixels: u64,
    /// For the tests: request parameters test_sleep_ms and test_panic slow down or crash a batch.
    #[arg(long, hide = true)]
    test_hooks: bool,
}

pub fn run(a: Args) -> crate::Result<()> {
    let mut names: Vec<&str> = a.models.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(crate::Error::Usage(format!(
            "two models are called '{}'",
            w[0]
        )));
    }
    crate::serve::run(Config {
        models: a.models,
        backend: a.backend,
        host: a.host,
        port: a.port,
        max_batch: a.max_batch,
        max_delay: Duration::from_millis(a.max_delay_ms),
        max_queue: a.max_queue.max(a.max_batch),
        timeout: Duration::from_millis(a.timeout_ms),
        max_body_bytes: a.max_body_bytes,
        max_image_pixels: a.max_image_pixels,
        test_hooks: a.test_hooks,
    })
}

fn parse_model(s: &str) -> Result<ModelSpec, String> {
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or_default();
    let (name, weights) = first
        .split_once('=')
        .ok_or_else(|| format!("'{first}' is not NAME=WEIGHTS"))?;
    let name = name.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || !name.chars().all(valid) {
        return Err(format!(
            "model name '{name}': use letters, digits, '-', '_' and '.' (it is part of URLs)"
        ));
    }
    let mut spec = ModelSpec {
        name: name.to_owned(),
        weights: PathBuf::from(weights),
        arch: None,
        transform_input: None,
        layers: vec![],
        method: Method::Gradcam,
        options: MethodOptions::default(),
    };
    for part in parts {
        match part.split_once('=') {
            Some(("layer", l)) => spec.layers.push(l.to_owned()),
            Some(("method", m)) => {
                spec.method = crate::serve::cam_method(m).map_err(|e| e.message)?
            }
            Some(("arch", a)) => spec.arch = Some(a.to_owned()),
            Some(("score", v)) => {
                spec.options.score = Score::parse(v).map_err(|e| e.to_string())?
            }
            None if part == "no-transform-input" => spec.transform_input = Some(false),
            _ => {
                return Err(format!(
                    "'{part}' is not one of layer=, method=, arch=, score=, no-transform-input"
                ))
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs() {
        let m = parse_model("seed=w.safetensors,layer=features.3,layer=features.6,method=hirescam")
            .unwrap();
        assert_eq!(m.name, "seed");
        assert_eq!(m.weights, PathBuf::from("w.safetensors"));
        assert_eq!(m.layers, ["features.3", "features.6"]);
        assert_eq!(m.method, Method::Hirescam);
        assert!(parse_model("w.safetensors").is_err());
        assert!(parse_model("a/b=w.safetensors").is_err());
        assert!(parse_model("a=w,method=nope")
            .unwrap_err()
            .contains("gradcam"));
        assert!(parse_model("a=w,colour=red").is_err());
        assert!(parse_model("a=w,method=saliency")
            .unwrap_err()
            .contains("not give a CAM"));
    }
}
