//! The Open Inference Protocol (KServe V2, Triton): `POST /v2/models/<m>/infer` with named,
//! typed tensors, in JSON or with the binary tensor data extension.
//!
//! Inputs, told apart by datatype: FP32 `[N, C, H, W]` (preprocessed), or BYTES `[N]` (encoded
//! PNG/JPEG/WebP images, preprocessed with the model's transform; base64 strings in JSON), and
//! optionally INT32/INT64 `[N]` or `[1]` target classes. Outputs: `logits` FP32 `[N, K]`,
//! `class` INT64 `[N]`, `probability` FP32 `[N]`, `cam` FP32 `[N, H, W]`, and `overlay` BYTES
//! `[N]` (PNG) when asked for by name. Request parameters: `method`, `layer`, `class`,
//! `timeout_ms`, `binary_data_output`.

use super::batcher::{ModelQueue, Work};
use super::error::ApiError;
use super::http::{Call, Done, Params, Pixels, Server};
use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::time::Instant;

/// The binary extension's header: the length of the JSON part at the body's start.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor>,
}

#[derive(Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl Data {
    /// The binary extension's little-endian encoding (BYTES: each element's u32 length, then
    /// its bytes).
    fn to_binary(&self, bytes: &[Vec<u8>]) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Str(_) => bytes
                .iter()
                .flat_map(|b| {
                    (b.len() as u32)
                        .to_le_bytes()
                        .into_iter()
                        .chain(b.iter().copied())
                })
                .collect(),
        }
    }
}

const OUTPUTS: [&str; 5] = ["logits", "class", "probability", "cam", "overlay"];

/// `POST /v2/models/<m>/infer`.
pub async fn infer(
    server: &Server,
    queue: &ModelQueue,
    headers: &HeaderMap,
    body: Bytes,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let (json, mut binary) = split_body(headers, &body)?;
    let req: InferRequest = serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad(format!("the request is not a valid inference request: {e}")))?;
    let mut pixels = None;
    let mut classes = None;
    for input in &req.inputs {
        let raw = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    ApiError::bad(format!(
                        "input '{}': binary_data_size is not a byte count",
                        input.name
                    ))
                })? as usize;
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "input '{}' declares {size} bytes of binary data; the body has {} left",
                        input.name,
                        binary.len()
                    )));
                }
                Some(binary.split_to(size))
            }
            None => None,
        };
        let named = |e: ApiError| ApiError {
            message: format!("input '{}': {}", input.name, e.message),
            ..e
        };
        let found = match input.datatype.as_str() {
            "FP32" => {
                let shape = super::inputs::tensor_shape(
                    &input.shape,
                    queue.in_channels,
                    queue.max_batch,
                    server.max_image_pixels(),
                )
                .map_err(named)?;
                let data = match &raw {
                    Some(b) => f32_le(b).map_err(named)?,
                    None => json_f32(input.data.as_deref()).map_err(named)?,
                };
                Pixels::Tensor(super::inputs::tensor(shape, data).map_err(named)?)
            }
            "BYTES" => {
                let n = element_count(&input.shape, queue.max_batch).map_err(named)?;
                let images = match &raw {
                    Some(b) => bytes_elements(b, n).map_err(named)?,
                    None => json_base64(input.data.as_deref(), n).map_err(named)?,
                };
                Pixels::Encoded(images)
            }
            "INT32" | "INT64" => {
                let n = element_count(&input.shape, queue.max_batch).map_err(named)?;
                let wide = input.datatype == "INT64";
                let values = match &raw {
                    Some(b) => int_le(b, wide).map_err(named)?,
                    None => json_ints(input.data.as_deref()).map_err(named)?,
                };
                if values.len() != n {
                    return Err(named(ApiError::bad(format!(
                        "shape {:?} holds {n} values; the data has {}",
                        input.shape,
                        values.len()
                    ))));
                }
                classes = Some(values);
                continue;
            }
            other => {
                return Err(named(ApiError::bad(format!(
                    "datatype {other} is not taken: FP32 [N, C, H, W] preprocessed images, BYTES \
                     [N] encoded images, or INT32/INT64 target classes"
                ))))
            }
        };
        if pixels.replace(found).is_some() {
            return Err(ApiError::bad(
                "more than one image input: send one FP32 or one BYTES tensor",
            ));
        }
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data after the last input's",
            binary.len()
        )));
    }
    let pixels = pixels.ok_or_else(|| {
        ApiError::bad("no image input: send an FP32 [N, C, H, W] or a BYTES [N] tensor")
    })?;
    let all_binary = flag(&req.parameters, "binary_data_output")?;
    let mut wanted: Vec<(&'static str, bool)> = vec![];
    for o in &req.outputs {
        let name = OUTPUTS.iter().find(|n| **n == o.name).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown output '{}'; one of: {}",
                o.name,
                OUTPUTS.join(", ")
            ))
        })?;
        wanted.push((name, all_binary || flag(&o.parameters, "binary_data")?));
    }
    if wanted.is_empty() {
        wanted = OUTPUTS[..4].iter().map(|n| (*n, all_binary)).collect();
    }
    let overlay = wanted.iter().any(|(n, _)| *n == "overlay");
    let work = if wanted.iter().any(|(n, _)| matches!(*n, "cam" | "overlay")) {
        Work::Explain
    } else {
        Work::Predict
    };
    let call = Call {
        pixels,
        classes,
        params: Params::parse(&req.parameters, server.test_hooks())?,
        work,
        overlay,
    };
    let done = server.run(queue, call, arrived).await?;
    respond(&queue.name, req.id, &done, &wanted)
}

fn respond(
    model: &str,
    id: Option<String>,
    done: &Done,
    wanted: &[(&'static str, bool)],
) -> Result<Response, ApiError> {
    let overlays = &done.overlays;
    let a = &done.answer;
    let n = a.classes.len();
    let mut outputs = vec![];
    let mut binary: Vec<u8> = vec![];
    for &(name, bin) in wanted {
        let (datatype, shape, data) = match name {
            "logits" => (
                "FP32",
                a.logits.shape.clone(),
                Data::F32(a.logits.data.clone()),
            ),
            "class" => (
                "INT64",
                vec![n],
                Data::I64(a.classes.iter().map(|&c| c as i64).collect()),
            ),
            "probability" => ("FP32", vec![n], Data::F32(a.probabilities.clone())),
            "cam" => {
                let cam = done
                    .answer
                    .cam
                    .as_ref()
                    .ok_or_else(|| ApiError::internal("no map was computed"))?;
                ("FP32", cam.shape.clone(), Data::F32(cam.data.clone()))
            }
            _ => (
                "BYTES",
                vec![n],
                Data::Str(
                    overlays
                        .iter()
                        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                        .collect(),
                ),
            ),
        };
        let (parameters, data) = if bin {
            let b = data.to_binary(overlays);
            let size = b.len();
            binary.extend(b);
            (Some(serde_json::json!({ "binary_data_size": size })), None)
        } else {
            (None, Some(data))
        };
        outputs.push(OutputTensor {
            name,
            datatype,
            shape,
            parameters,
            data,
        });
    }
    let json = serde_json::to_vec(&InferResponse {
        model_name: model,
        model_version: "1",
        id,
        outputs,
    })
    .map_err(|e| ApiError::internal(format!("cannot write the response: {e}")))?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    let header_len = json.len().to_string();
    let mut body = json;
    body.extend(binary);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static(HEADER_LENGTH), header_len),
        ],
        body,
    )
        .into_response())
}

/// The JSON part and the binary part of a request body.
fn split_body(headers: &HeaderMap, body: &Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let Some(h) = headers.get(HEADER_LENGTH) else {
        return Ok((body.clone(), Bytes::new()));
    };
    let len = h
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| ApiError::bad("Inference-Header-Content-Length is not a byte count"))?;
    if len > body.len() {
        return Err(ApiError::bad(format!(
            "Inference-Header-Content-Length is {len}; the body has {} bytes",
            body.len()
        )));
    }
    Ok((body.slice(..len), body.slice(len..)))
}

fn flag(params: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    match params.get(name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::bad(format!(
            "parameter {name} must be true or false, not {v}"
        ))),
    }
}

/// Elements of a BYTES or INT tensor of `shape`: [N] (or [N, 1]), N ≤ `max`.
fn element_count(shape: &[i64], max: usize) -> Result<usize, ApiError> {
    if shape.is_empty() || shape.iter().any(|&d| d < 0) {
        return Err(ApiError::bad(format!("shape {shape:?} is not [N]")));
    }
    let n = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if n > max as u64 {
        return Err(ApiError::too_large(format!(
            "shape {shape:?} holds {n} elements; the limit is {max} (--max-batch)"
        )));
    }
    Ok(n as usize)
}

fn f32_le(b: &[u8]) -> Result<Vec<f32>, ApiError> {
    if !b.len().is_multiple_of(4) {
        return Err(ApiError::bad(format!(
            "{} bytes of FP32 data is not a whole number of values",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn int_le(b: &[u8], wide: bool) -> Result<Vec<i64>, ApiError> {
    let size = if wide { 8 } else { 4 };
    if !b.len().is_multiple_of(size) {
        return Err(ApiError::bad(format!(
            "{} bytes of integer data is not a whole number of values",
            b.len()
        )));
    }
    Ok(b.chunks_exact(size)
        .map(|c| match c.len() {
            8 => i64::from_le_bytes(c.try_into().expect("8 bytes")),
            _ => i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64,
        })
        .collect())
}

/// The binary extension's BYTES elements: `n` of (u32 little-endian length, bytes).
fn bytes_elements(b: &Bytes, n: usize) -> Result<Vec<Bytes>, ApiError> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for i in 0..n {
        let len = b
            .get(at..at + 4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "element {i}'s length is missing: the binary data ends"
                ))
            })?;
        at += 4;
        if at + len > b.len() {
            return Err(ApiError::bad(format!(
                "element {i} declares {len} bytes; {} are left",
                b.len() - at
            )));
        }
        out.push(b.slice(at..at + len));
        at += len;
    }
    if at != b.len() {
        return Err(ApiError::bad(format!(
            "{} bytes after the last of {n} elements",
            b.len() - at
        )));
    }
    Ok(out)
}

fn missing() -> ApiError {
    ApiError::bad("no data: give `data`, or binary data with `binary_data_size`")
}

fn json_f32(raw: Option<&RawValue>) -> Result<Vec<f32>, ApiError> {
    let raw = raw.ok_or_else(missing)?;
    if let Ok(flat) = serde_json::from_str::<Vec<f32>>(raw.get()) {
        return Ok(flat);
    }
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|e| ApiError::bad(format!("data: {e}")))?;
    let mut out = vec![];
    flatten(&v, &mut |x| match x {
        Value::Number(n) => n.as_f64().map(|f| out.push(f as f32)).ok_or(()),
        _ => Err(()),
    })
    .map_err(|()| ApiError::bad("FP32 data must be numbers (flat or nested arrays)"))?;
    Ok(out)
}

fn json_ints(raw: Option<&RawValue>) -> Result<Vec<i64>, ApiError> {
    let raw = raw.ok_or_else(missing)?;
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|e| ApiError::bad(format!("data: {e}")))?;
    let mut out = vec![];
    flatten(&v, &mut |x| x.as_i64().map(|i| out.push(i)).ok_or(()))
        .map_err(|()| ApiError::bad("integer data must be integers"))?;
    Ok(out)
}

fn json_base64(raw: Option<&RawValue>, n: usize) -> Result<Vec<Bytes>, ApiError> {
    let raw = raw.ok_or_else(missing)?;
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|e| ApiError::bad(format!("data: {e}")))?;
    let mut out = vec![];
    let mut bad = None;
    flatten(&v, &mut |x| {
        let s = x.as_str().ok_or(())?;
        match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(b) => out.push(Bytes::from(b)),
            Err(e) => bad = Some(format!("element {}: not base64 ({e})", out.len())),
        }
        Ok(())
    })
    .map_err(|()| {
        ApiError::bad("BYTES data in JSON must be base64 strings of the encoded images")
    })?;
    if let Some(b) = bad {
        return Err(ApiError::bad(b));
    }
    if out.len() != n {
        return Err(ApiError::bad(format!(
            "the shape holds {n} images; the data has {}",
            out.len()
        )));
    }
    Ok(out)
}

/// Calls `f` on every leaf of a (possibly nested) JSON array, in row-major order.
pub fn flatten(v: &Value, f: &mut impl FnMut(&Value) -> Result<(), ()>) -> Result<(), ()> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten(x, f)),
        leaf => f(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bytes_elements_are_length_prefixed() {
        let mut b = vec![];
        for e in [&b"ab"[..], b"", b"xyz"] {
            b.extend((e.len() as u32).to_le_bytes());
            b.extend(e);
        }
        let b = Bytes::from(b);
        let out = bytes_elements(&b, 3).unwrap();
        assert_eq!(
            out,
            vec![Bytes::from("ab"), Bytes::new(), Bytes::from("xyz")]
        );
        assert!(bytes_elements(&b, 2).is_err(), "bytes left over");
        assert!(bytes_elements(&b, 4).is_err(), "too few");
        assert!(
            bytes_elements(&b.slice(..8), 2).is_err(),
            "truncated element"
        );
        assert_eq!(
            Data::Str(vec![]).to_binary(&[b"ab".to_vec()]),
            b"\x02\0\0\0ab"
        );
    }

    #[test]
    fn json_tensors_may_be_flat_or_nested() {
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        assert_eq!(json_f32(Some(&raw("[1, 2.5]"))).unwrap(), vec![1.0, 2.5]);
        assert_eq!(
            json_f32(Some(&raw("[[1], [2, 3]]"))).unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        assert!(json_f32(Some(&raw("[1, \"a\"]"))).is_err());
        assert!(json_f32(None).is_err());
        assert_eq!(json_ints(Some(&raw("[[3], [4]]"))).unwrap(), vec![3, 4]);
        assert!(json_ints(Some(&raw("[1.5]"))).is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"png");
        assert_eq!(
            json_base64(Some(&raw(&format!("[\"{b64}\"]"))), 1).unwrap(),
            vec![Bytes::from("png")]
        );
        assert!(json_base64(Some(&raw("[\"@@\"]")), 1).is_err());
        assert!(json_base64(Some(&raw(&format!("[\"{b64}\"]"))), 2).is_err());
    }

    #[test]
    fn the_header_length_splits_json_from_binary() {
        let mut h = HeaderMap::new();
        let body = Bytes::from("{}abcd");
        assert_eq!(split_body(&h, &body).unwrap().1.len(), 0);
        h.insert(HEADER_LENGTH, "2".parse().unwrap());
        let (json, bin) = split_body(&h, &body).unwrap();
        assert_eq!((&json[..], &bin[..]), (&b"{}"[..], &b"abcd"[..]));
        h.insert(HEADER_LENGTH, "99".parse().unwrap());
        assert!(split_body(&h, &body).is_err());
        h.insert(HEADER_LENGTH, "x".parse().unwrap());
        assert!(split_body(&h, &body).is_err());
        assert_eq!(element_count(&[1 << 40], 8).unwrap_err().status, 413);
        assert_eq!(element_count(&[2, 1], 8).unwrap(), 2);
    }
}
