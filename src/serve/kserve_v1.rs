//! KServe's V1 protocol: `POST /v1/models/<m>:predict` and `:explain` with
//! `{"instances": [...]}`, answered with `{"predictions": [...]}` or `{"explanations": [...]}`.
//!
//! An instance is an encoded image as `{"b64": "..."}` (or TensorFlow Serving's
//! `{"image_bytes": {"b64": "..."}}`), or a preprocessed image as a nested `[C][H][W]` array
//! (or `{"data": [C][H][W]}`); either may carry its target `"class"`. Request `parameters`
//! are the Open Inference Protocol's (`method`, `layer`, `class`, `timeout_ms`), plus
//! `"overlay": true` for each explanation's overlay PNG (base64).

use super::batcher::{ModelQueue, Work};
use super::error::ApiError;
use super::http::{Call, Params, Pixels, Server};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub async fn list(State(s): State<Arc<Server>>) -> Json<Value> {
    let names: Vec<&str> = s.models().map(|q| q.name.as_str()).collect();
    Json(json!({ "models": names }))
}

pub async fn status(State(s): State<Arc<Server>>, Path(model): Path<String>) -> Response {
    s.model(&model)
        .map(|q| Json(json!({ "name": q.name, "ready": true })))
        .into_response()
}

pub async fn call(
    server: &Server,
    queue: &ModelQueue,
    work: Work,
    body: Bytes,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let req: Map<String, Value> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the request is not a JSON object: {e}")))?;
    let instances = req
        .get("instances")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad("the request has no \"instances\" array"))?;
    if instances.is_empty() {
        return Err(ApiError::bad("\"instances\" is empty"));
    }
    if instances.len() > queue.max_batch {
        return Err(ApiError::too_large(format!(
            "{} instances in one request; the limit is {} (--max-batch)",
            instances.len(),
            queue.max_batch
        )));
    }
    let empty = Map::new();
    let parameters = match req.get("parameters") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(ApiError::bad("\"parameters\" must be an object")),
    };
    let overlay = match parameters.get("overlay") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad("parameter overlay must be true or false")),
    };
    let mut encoded = vec![];
    let mut tensors: Vec<(Vec<usize>, Vec<f32>)> = vec![];
    let mut classes = vec![];
    for (i, inst) in instances.iter().enumerate() {
        let at = |m: String| ApiError::bad(format!("instance {i}: {m}"));
        let (pixels, class) = match inst {
            Value::Object(o) => (
                o.get("b64")
                    .or_else(|| o.get("image_bytes").and_then(|b| b.get("b64")))
                    .or_else(|| o.get("data"))
                    .ok_or_else(|| at("expected {\"b64\": ...}, {\"image_bytes\": {\"b64\": ...}} or {\"data\": [C][H][W]}".into()))?,
                o.get("class"),
            ),
            array => (array, None),
        };
        match pixels {
            Value::String(s) => encoded.push(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| at(format!("not base64 ({e})")))?,
            )),
            Value::Array(_) => tensors.push(nested(pixels).map_err(at)?),
            _ => {
                return Err(at(
                    "the image must be a base64 string or a [C][H][W] array".into()
                ))
            }
        }
        if let Some(c) = class {
            classes.push(
                c.as_i64()
                    .ok_or_else(|| at("\"class\" must be an integer".into()))?,
            );
        }
    }
    if !classes.is_empty() && classes.len() != instances.len() {
        return Err(ApiError::bad("give \"class\" in every instance or in none"));
    }
    let pixels = match (encoded.is_empty(), tensors.is_empty()) {
        (false, true) => Pixels::Encoded(encoded),
        (true, false) => {
            let shape = tensors[0].0.clone();
            if let Some(i) = tensors.iter().position(|(s, _)| *s != shape) {
                return Err(ApiError::bad(format!(
                    "instance {i} is {:?}, instance 0 is {shape:?}: one request's arrays must have one shape",
                    tensors[i].0
                )));
            }
            let &[c, h, w] = shape.as_slice() else {
                return Err(ApiError::bad(format!(
                    "an instance array must be [C][H][W], not {shape:?}"
                )));
            };
            let dims = [tensors.len() as i64, c as i64, h as i64, w as i64];
            let shape = super::inputs::tensor_shape(
                &dims,
                queue.in_channels,
                queue.max_batch,
                server.max_image_pixels(),
            )?;
            let data = tensors.into_iter().flat_map(|(_, d)| d).collect();
            Pixels::Tensor(super::inputs::tensor(shape, data)?)
        }
        _ => {
            return Err(ApiError::bad(
                "mixed encoded and array instances: send one kind per request",
            ))
        }
    };
    if overlay && work == Work::Predict {
        return Err(ApiError::bad("overlay is an explanation: use :explain"));
    }
    let call = Call {
        pixels,
        classes: (!classes.is_empty()).then_some(classes),
        params: Params::parse(parameters, server.test_hooks())?,
        work,
        overlay,
    };
    let done = server.run(queue, call, arrived).await?;
    let a = &done.answer;
    let k = a.logits.shape[1];
    // Written straight from the results (a CAM is tens of thousands of numbers: no
    // serde_json::Value per number).
    let items: Vec<Item> = (0..a.classes.len())
        .map(|i| {
            let cam = a.cam.as_ref().filter(|_| work == Work::Explain).map(|cam| {
                let (h, w) = (cam.shape[1], cam.shape[2]);
                cam.data[i * h * w..(i + 1) * h * w].chunks(w).collect()
            });
            Item {
                class: a.classes[i],
                probability: a.probabilities[i],
                logits: cam.is_none().then(|| &a.logits.data[i * k..(i + 1) * k]),
                cam,
                overlay: done
                    .overlays
                    .get(i)
                    .map(|png| base64::engine::general_purpose::STANDARD.encode(png)),
            }
        })
        .collect();
    let key = if work == Work::Explain {
        "explanations"
    } else {
        "predictions"
    };
    let body = serde_json::to_vec(&std::collections::BTreeMap::from([(key, items)]))
        .map_err(|e| ApiError::internal(format!("cannot write the response: {e}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One prediction or explanation.
#[derive(serde::Serialize)]
struct Item<'a> {
    class: usize,
    probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<&'a [f32]>,
    /// Rows of the map.
    #[serde(skip_serializing_if = "Option::is_none")]
    cam: Option<Vec<&'a [f32]>>,
    /// The overlay PNG, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay: Option<String>,
}

/// A nested array's shape and its numbers, row-major; ragged arrays and non-numbers are
/// refused.
fn nested(v: &Value) -> Result<(Vec<usize>, Vec<f32>), String> {
    let mut shape = vec![];
    let mut probe = v;
    while let Value::Array(a) = probe {
        shape.push(a.len());
        match a.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    fn walk(v: &Value, shape: &[usize], data: &mut Vec<f32>) -> Result<(), String> {
        match (v, shape.split_first()) {
            (Value::Array(a), Some((&len, rest))) if a.len() == len => {
                a.iter().try_for_each(|x| walk(x, rest, data))
            }
            (Value::Number(n), None) => {
                data.push(n.as_f64().unwrap_or(f64::NAN) as f32);
                Ok(())
            }
            _ => Err("the array is ragged or holds something other than numbers".into()),
        }
    }
    walk(v, &shape, &mut data)?;
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_must_be_rectangular_numbers() {
        let (shape, data) = nested(&json!([[[1, 2], [3, 4]]])).unwrap();
        assert_eq!((shape, data), (vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert!(nested(&json!([[1, 2], [3]])).is_err());
        assert!(nested(&json!([[1, "a"]])).is_err());
        assert!(nested(&json!([[1], 2])).is_err());
    }
}
