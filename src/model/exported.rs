//! A graph exported with the weights (scripts/export_model.py): JSON in the safetensors
//! metadata under [`METADATA_KEY`], validated here and built into the same [`Graph`] the
//! built-in families build, so the walker runs it as it runs them. The schema is documented in
//! the README ("My own model"); each way a graph can be wrong has its own clear error.

use super::arch::{Filter, Preprocess};
use super::builder::Builder;
use super::graph::op::{NodeError, NodeReader, Op};
use super::graph::{Graph, ValueId};
use super::weights::WeightStore;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The metadata key that holds the graph.
pub const METADATA_KEY: &str = "gradcam.graph";

/// The newest schema version this build reads.
pub const SCHEMA: u64 = 1;

/// An exported graph, built.
pub struct Exported {
    pub graph: Graph,
    /// The model's class name as the exporter saw it.
    pub model: String,
    pub producer: String,
    pub num_classes: usize,
    pub default_layer: String,
    pub preprocess: Option<Preprocess>,
}

/// The graph of `store`'s metadata, if it has one.
pub fn embedded(store: &WeightStore) -> Option<&str> {
    store.metadata(METADATA_KEY)
}

/// Validates the graph `text` against the tensors of `store` and builds it.
pub fn build(store: &WeightStore, text: &str) -> Result<Exported> {
    let bad = |reason: String| Error::Graph {
        path: store.path().to_owned(),
        reason,
    };
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let doc = doc
        .as_object()
        .ok_or_else(|| bad("the graph is not a JSON object".into()))?;
    match doc.get("schema").and_then(Value::as_u64) {
        Some(v) if v > SCHEMA => {
            return Err(bad(format!(
                "schema version {v} is from a newer exporter; this gradcam reads schema versions up to {SCHEMA}; upgrade gradcam"
            )))
        }
        Some(0) | None => {
            return Err(bad(
                "no schema version (\"schema\": a positive integer)".into(),
            ))
        }
        Some(_) => {}
    }
    let str_field = |k: &str| doc.get(k).and_then(Value::as_str);
    let input = doc
        .get("input")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"input\" object".into()))?;
    let input_name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("\"input\" has no \"name\"".into()))?;
    let input_shape = usizes(input.get("shape"))
        .filter(|s| s.len() == 3 && s.iter().all(|&d| d > 0 && d <= 1 << 16))
        .ok_or_else(|| {
            bad("\"input\".\"shape\" must be [C, H, W] of integers from 1 to 65536".into())
        })?;
    let nodes = doc
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"nodes\" array".into()))?;
    let nodes: Vec<NodeDoc> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeDoc::parse(i, n).map_err(&bad))
        .collect::<Result<_>>()?;
    let order = topological_order(input_name, &nodes).map_err(&bad)?;

    let model = str_field("model").unwrap_or("model").to_owned();
    let mut b = Builder::new(store, &format!("{model} (exported graph)"));
    let mut values: HashMap<&str, ValueId> = HashMap::from([(input_name, Builder::INPUT)]);
    for &i in &order {
        let n = &nodes[i];
        let inputs: Vec<ValueId> = n.inputs.iter().map(|s| values[s.as_str()]).collect();
        let v = add_node(&mut b, n, inputs).map_err(|e| match e {
            NodeError::Doc(reason) => bad(format!("{}: {reason}", n.at())),
            NodeError::Load(e) => e,
        })?;
        values.insert(&n.name, v);
    }
    let output = str_field("output").ok_or_else(|| bad("no \"output\"".into()))?;
    let output = *values
        .get(output)
        .ok_or_else(|| bad(format!("the output '{output}' refers to no node")))?;
    let modules = doc
        .get("modules")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"modules\" array".into()))?;
    let mut idle = Vec::new();
    for m in modules {
        let name = m.get("name").and_then(Value::as_str);
        let kind = m.get("kind").and_then(Value::as_str);
        let (Some(name), Some(kind)) = (name, kind) else {
            return Err(bad(format!(
                "a module entry without \"name\" and \"kind\": {m}"
            )));
        };
        match m.get("output") {
            // it did not run (an aux head), or returns no tensor
            None | Some(Value::Null) => idle.push(name.to_owned()),
            Some(Value::String(v)) => {
                let value = *values.get(v.as_str()).ok_or_else(|| {
                    bad(format!(
                        "module '{name}' outputs '{v}', which refers to no node"
                    ))
                })?;
                let id = b.begin(name, kind);
                b.end(id, value);
            }
            Some(other) => {
                return Err(bad(format!(
                    "module '{name}': \"output\" must be a node name or null, not {other}"
                )))
            }
        }
    }
    // Tensors the graph does not use (aux heads, num_batches_tracked) are left alone.
    b.ignore_prefix("");
    let mut graph = b.finish(output)?;
    graph.in_channels = input_shape[0];
    graph.idle_modules = idle;
    let plan = graph
        .plan(&[1, input_shape[0], input_shape[1], input_shape[2]])
        .map_err(|e| bad(format!("it does not fit its own input shape: {e}")))?;
    let num_classes = match plan.shapes[output][..] {
        [1, k] if k > 0 => k,
        ref s => {
            return Err(bad(format!(
                "its output has shape {s:?} at its input shape; logits [N, classes] expected"
            )))
        }
    };
    let default_layer = match doc.get("default_layer") {
        Some(Value::String(s)) => s.clone(),
        _ => graph
            .modules
            .iter()
            .rev()
            .find(|m| plan.shapes[m.value].len() == 4)
            .map(|m| m.name.clone())
            .ok_or_else(|| bad("no module with a [N, C, H, W] output to explain".into()))?,
    };
    if graph.module(&default_layer).is_none() {
        return Err(bad(format!(
            "the default layer '{default_layer}' is not a module of the graph"
        )));
    }
    let preprocess = match doc.get("preprocess") {
        None | Some(Value::Null) => None,
        Some(p) => Some(parse_preprocess(p).map_err(&bad)?),
    };
    Ok(Exported {
        graph,
        model,
        producer: str_field("producer")
            .unwrap_or("an unnamed exporter")
            .to_owned(),
        num_classes,
        default_layer,
        preprocess,
    })
}

/// The largest integer a graph may hold (a size, index or count): shape arithmetic on larger
/// ones could overflow.
pub(crate) const MAX_INT: u64 = 1 << 31;

pub(crate) fn usizes(v: Option<&Value>) -> Option<Vec<usize>> {
    v?.as_array()?
        .iter()
        .map(|d| d.as_u64().filter(|&d| d < MAX_INT).map(|d| d as usize))
        .collect()
}

/// {"resize": 256, "crop": 224, "interpolation": "bilinear" | "bicubic", "mean": [3], "std": [3]}
fn parse_preprocess(p: &Value) -> std::result::Result<Preprocess, String> {
    let err = || {
        format!("\"preprocess\" must be {{\"resize\", \"crop\", \"interpolation\", \"mean\", \"std\"}}, not {p}")
    };
    let get = |k: &str| p.get(k).ok_or_else(err);
    let size = |k: &str| {
        get(k)?
            .as_u64()
            .filter(|&d| d > 0)
            .map(|d| d as usize)
            .ok_or_else(err)
    };
    let three = |k: &str| -> std::result::Result<[f32; 3], String> {
        let v: Vec<f32> = get(k)?
            .as_array()
            .ok_or_else(err)?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or_else(err)?;
        v.try_into().map_err(|_| err())
    };
    let filter = match get("interpolation")?.as_str() {
        Some("bilinear") => Filter::Bilinear,
        Some("bicubic") => Filter::Bicubic,
        _ => return Err(err()),
    };
    let std = three("std")?;
    if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        return Err(err());
    }
    Ok(Preprocess {
        resize: size("resize")?,
        crop: size("crop")?,
        filter,
        mean: three("mean")?,
        std,
        weights: "the preprocessing recorded in the exported graph",
    })
}

/// One entry of "nodes", its fields checked for type.
struct NodeDoc {
    name: String,
    op: String,
    inputs: Vec<String>,
    params: Map<String, Value>,
    keys: std::collections::BTreeMap<String, String>,
    module: Option<String>,
}

impl NodeDoc {
    fn parse(i: usize, n: &Value) -> std::result::Result<NodeDoc, String> {
        let field = |k: &str| n.get(k);
        let name = field("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("node {i} has no \"name\""))?
            .to_owned();
        let op = field("op")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("node '{name}' has no \"op\""))?
            .to_owned();
        let inputs = field("inputs")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| format!("node '{name}': \"inputs\" must be an array of node names"))?;
        let object = |k: &str| match field(k) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(format!("node '{name}': \"{k}\" must be an object")),
        };
        let params = object("params")?;
        let tensors = object("tensors")?;
        let keys = tensors
            .iter()
            .map(|(role, v)| match v.as_str() {
                Some(k) => Ok((role.clone(), k.to_owned())),
                None => Err(format!(
                    "node '{name}': tensor '{role}' must be a state_dict key, not {v}"
                )),
            })
            .collect::<std::result::Result<_, _>>()?;
        let module = match field("module") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(_) => {
                return Err(format!(
                    "node '{name}': \"module\" must be a string or null"
                ))
            }
        };
        Ok(NodeDoc {
            name,
            op,
            inputs,
            params,
            keys,
            module,
        })
    }

    /// Where the node is, for messages.
    fn at(&self) -> String {
        match &self.module {
            Some(m) => format!("node '{}' ({} at module '{m}')", self.name, self.op),
            None => format!("node '{}' ({})", self.name, self.op),
        }
    }
}

/// The nodes in an order where every input comes first (the file's order where it already is),
/// or the input that names nothing, the name defined twice, or the cycle.
fn topological_order(input: &str, nodes: &[NodeDoc]) -> std::result::Result<Vec<usize>, String> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.name == input || index.insert(&n.name, i).is_some() {
            return Err(format!("the name '{}' is defined twice", n.name));
        }
    }
    for n in nodes {
        for i in &n.inputs {
            if i != input && !index.contains_key(i.as_str()) {
                return Err(format!("{} reads '{i}', which refers to nothing", n.at()));
            }
        }
    }
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let ready = |n: &NodeDoc, done: &[bool]| {
        n.inputs
            .iter()
            .all(|i| i == input || done[index[i.as_str()]])
    };
    // Repeated passes in file order: one pass when the file is already ordered.
    while order.len() < nodes.len() {
        let before = order.len();
        for (i, n) in nodes.iter().enumerate() {
            if !done[i] && ready(n, &done) {
                done[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            // every node left waits on another left: follow inputs until one repeats
            let mut at = (0..nodes.len())
                .find(|&i| !done[i])
                .expect("a node is left");
            let mut path = vec![at];
            loop {
                let next = nodes[at]
                    .inputs
                    .iter()
                    .map(|i| i.as_str())
                    .filter(|&i| i != input)
                    .map(|i| index[i])
                    .find(|&j| !done[j])
                    .expect("a waiting node waits on a node left");
                if let Some(p) = path.iter().position(|&j| j == next) {
                    let cycle: Vec<&str> = path[p..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&j| nodes[j].name.as_str())
                        .collect();
                    return Err(format!("the nodes form a cycle: {}", cycle.join(" -> ")));
                }
                path.push(next);
                at = next;
            }
        }
    }
    Ok(order)
}

/// Builds one node into `b`: the op its type reads from the node (`graph::op::Import`, in
/// the op's own file), with its tensors taken from the store in the shapes the op fixes.
fn add_node(
    b: &mut Builder,
    n: &NodeDoc,
    inputs: Vec<ValueId>,
) -> std::result::Result<ValueId, NodeError> {
    let mut node = NodeReader::new(b, &n.name, &n.op, inputs.len(), &n.params, &n.keys);
    let op = Op::import(&mut node)?;
    node.finish()?;
    Ok(b.node(op, inputs, n.module.as_deref()))
}
