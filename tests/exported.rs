//! Graphs exported with scripts/export_model.py, from the committed outputs of
//! scripts/make_exported_fixtures.py (CI has no torch):
//! - every torchvision family fixture's exported graph, joined to that fixture's tensors, gives
//!   the built-in builder's logits and CAMs, and lists every module the builder lists;
//! - models no family covers (a custom CNN, a TensorFlow port with static-same padding, narrowed
//!   timm models) match PyTorch + pytorch-grad-cam, at the tolerances of tests/parity.rs (logits
//!   relative L2 ≤ 1e-4, CAM max abs ≤ 1e-3);
//! - each way a graph can be invalid is refused with its own error.

use gradcam::internal::engine::Engine;
use gradcam::internal::model::arch::Filter;
use gradcam::internal::model::exported::METADATA_KEY;
use gradcam::internal::model::weights::WeightStore;
use gradcam::internal::model::Model;
use gradcam::internal::tensor::Tensor;
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::fixture_tensor as tensor;

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The parity fixtures of exported models.
fn exported_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(common::fixture("exported"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "expected 8 exported fixtures");
    dirs
}

/// `store` with the graph `text` embedded, as the exporter would have written it.
fn with_graph(path: &Path, text: String) -> WeightStore {
    let mut store = WeightStore::load(path).unwrap();
    store.set_metadata(METADATA_KEY, text);
    store
}

/// The input, logits and (layer, class, classes, CAM) cases of a fixture directory.
struct Expected {
    x: Tensor,
    logits: Tensor,
    cases: Vec<(String, Option<usize>, Vec<usize>, Tensor)>,
}

fn expected(dir: &Path) -> Expected {
    let manifest = read_json(&dir.join("manifest.json"));
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let cases = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let classes = c["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (
                c["layer"].as_str().unwrap().to_owned(),
                c["class"].as_u64().map(|v| v as usize),
                classes,
                tensor(&st, c["cam"].as_str().unwrap()),
            )
        })
        .collect();
    Expected {
        x: tensor(&st, "input"),
        logits: tensor(&st, "logits"),
        cases,
    }
}

/// Checks `model` against PyTorch's logits and pytorch-grad-cam's CAMs; returns the cases run.
fn matches_pytorch(name: &str, model: Model, e: &Expected) -> usize {
    let engine = Engine::new(common::cpu(), model).unwrap();
    let fw = engine.forward(&e.x).unwrap();
    assert_eq!(fw.shape, e.logits.shape, "{name}: logits shape");
    let err = rel_l2(&fw.data, &e.logits.data);
    assert!(err <= 1e-4, "{name}: logits relative L2 {err}");
    for (layer, class, classes, cam) in &e.cases {
        let out = engine
            .explain(&e.x, Some(layer), *class)
            .unwrap_or_else(|err| panic!("{name} {layer}: {err}"));
        assert_eq!(&out.classes, classes, "{name} {layer}: classes");
        assert_eq!(out.cams.shape, cam.shape, "{name} {layer}: CAM shape");
        assert!(out.cams.data.iter().all(|v| v.is_finite()));
        let err = max_abs(&out.cams.data, &cam.data);
        assert!(err <= 1e-3, "{name} {layer}: CAM max abs difference {err}");
    }
    e.cases.len()
}

#[test]
fn exported_models_match_pytorch_grad_cam() {
    let mut checked = 0;
    for dir in exported_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model =
            Model::load(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.family, "exported", "{name}");
        assert!(model.embedded.is_some(), "{name}");
        let manifest = read_json(&dir.join("manifest.json"));
        assert_eq!(
            model.default_layer,
            manifest["default_layer"].as_str().unwrap(),
            "{name}: default layer"
        );
        let pre = model.preprocess.unwrap();
        let constructor = manifest["constructor"].as_str().unwrap();
        if name == "custom_cnn" {
            // given to the exporter
            assert_eq!(
                (pre.resize, pre.crop, pre.filter),
                (40, 32, Filter::Bilinear)
            );
            assert_eq!((pre.mean, pre.std), ([0.5; 3], [0.25; 3]));
        } else if constructor.contains("._gen_") || constructor.contains("._create_") {
            // timm's pretrained config of the variant, recorded by the exporter
            assert_eq!(
                (pre.resize, pre.crop, pre.filter),
                (256, 224, Filter::Bicubic),
                "{name}"
            );
            assert_eq!(
                pre.weights,
                "the preprocessing recorded in the exported graph"
            );
        } else {
            assert!(pre.weights.starts_with("ImageNet's defaults"), "{name}");
        }
        checked += matches_pytorch(&name, model, &expected(&dir));
    }
    assert!(checked >= 24, "only {checked} cases checked");
}

/// Every family fixture's graph, exported from the same torchvision model: the same logits and
/// CAMs as the built-in builder (1e-5 / 1e-4: the same f32 ops, where the builder may order
/// a sum or fold a constant differently), PyTorch's within the parity tolerances, and every
/// module the builder lists, with the same output shape.
#[test]
fn exported_family_graphs_match_the_builtin_builders() {
    let graphs = common::fixture("exported/families");
    let mut names: Vec<String> = std::fs::read_dir(&graphs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "expected the 18 family graphs");
    for name in names {
        let dir = common::fixture(&format!("families/{name}"));
        let weights = dir.join("model.safetensors");
        let text = std::fs::read_to_string(graphs.join(format!("{name}.json"))).unwrap();
        let exported = Model::from_store(&with_graph(&weights, text), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(exported.family, "exported");
        let builtin = Model::load(&weights).unwrap();
        assert_eq!(exported.num_classes, builtin.num_classes, "{name}");
        let e = expected(&dir);
        let (ge, gb) = (&exported.graph, &builtin.graph);
        let (pe, pb) = (ge.plan(&e.x.shape).unwrap(), gb.plan(&e.x.shape).unwrap());
        for m in &gb.modules {
            let other = ge
                .module(&m.name)
                .unwrap_or_else(|| panic!("{name}: the exported graph lacks module {}", m.name));
            assert_eq!(
                pe.shapes[other.value], pb.shapes[m.value],
                "{name}: output shape of {}",
                m.name
            );
        }
        let (ee, eb) = (
            Engine::new(common::cpu(), exported).unwrap(),
            Engine::new(common::cpu(), builtin).unwrap(),
        );
        let (le, lb) = (ee.forward(&e.x).unwrap(), eb.forward(&e.x).unwrap());
        let err = rel_l2(&le.data, &lb.data);
        assert!(
            err <= 1e-5,
            "{name}: logits differ from the builder's by {err}"
        );
        let err = rel_l2(&le.data, &e.logits.data);
        assert!(err <= 1e-4, "{name}: logits relative L2 {err} to PyTorch's");
        for (layer, class, classes, cam) in &e.cases {
            let (a, b) = (
                ee.explain(&e.x, Some(layer), *class).unwrap(),
                eb.explain(&e.x, Some(layer), *class).unwrap(),
            );
            assert_eq!(a.classes, b.classes, "{name} {layer}");
            assert_eq!(&a.classes, classes, "{name} {layer}");
            let err = max_abs(&a.cams.data, &b.cams.data);
            assert!(
                err <= 1e-4,
                "{name} {layer}: CAMs differ from the builder's by {err}"
            );
            let err = max_abs(&a.cams.data, &cam.data);
            assert!(
                err <= 1e-3,
                "{name} {layer}: CAM max abs {err} to pytorch-grad-cam's"
            );
        }
    }
}

/// The custom CNN's file and its graph as JSON, to be broken by each test case.
fn custom() -> (PathBuf, Value) {
    let path = common::fixture("exported/custom_cnn/model.safetensors");
    let store = WeightStore::load(&path).unwrap();
    let graph = serde_json::from_str(store.metadata(METADATA_KEY).unwrap()).unwrap();
    (path, graph)
}

fn refused(path: &Path, graph: &Value) -> String {
    match Model::from_store(&with_graph(path, graph.to_string()), None) {
        Ok(_) => panic!("the graph was accepted: {graph}"),
        Err(e) => e.to_string(),
    }
}

/// The index of the first node with op `op`.
fn node(g: &Value, op: &str) -> usize {
    g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n["op"] == op)
        .unwrap()
}

#[test]
fn invalid_graphs_are_refused_with_one_clear_error() {
    let (path, good) = custom();
    Model::from_store(&with_graph(&path, good.to_string()), None).unwrap();
    let conv = node(&good, "conv2d");
    let cat = node(&good, "cat");
    type Break<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "unknown op",
            Box::new(|g| g["nodes"][cat]["op"] = "frobnicate".into()),
            "unknown op 'frobnicate' (supported: conv2d, ",
        ),
        (
            "unknown parameter",
            Box::new(|g| g["nodes"][conv]["params"]["padding_mode"] = "reflect".into()),
            "unknown parameter 'padding_mode' of op 'conv2d' (its parameters: kernel, stride, padding, dilation, groups)",
        ),
        (
            "missing parameter",
            Box::new(|g| {
                g["nodes"][conv]["params"]
                    .as_object_mut()
                    .unwrap()
                    .remove("groups");
            }),
            "missing parameter 'groups'",
        ),
        (
            "unknown tensor role",
            Box::new(|g| g["nodes"][cat]["tensors"]["weight"] = "stem.weight".into()),
            "unknown tensor role 'weight' of op 'cat' (its tensors: none)",
        ),
        (
            "dangling input",
            Box::new(|g| g["nodes"][cat]["inputs"][1] = "nowhere".into()),
            "reads 'nowhere', which refers to nothing",
        ),
        (
            "dangling module output",
            Box::new(|g| g["modules"][0]["output"] = "nowhere".into()),
            "outputs 'nowhere', which refers to no node",
        ),
        (
            "cycle",
            Box::new(|g| {
                let later = g["nodes"][cat + 1]["name"].clone();
                g["nodes"][cat]["inputs"][0] = later;
            }),
            "the nodes form a cycle: ",
        ),
        (
            "missing tensor",
            Box::new(|g| g["nodes"][conv]["tensors"]["weight"] = "no.such.weight".into()),
            "missing tensor 'no.such.weight'",
        ),
        (
            "tensor whose shape disagrees with its op",
            Box::new(|g| g["nodes"][conv]["params"]["kernel"] = serde_json::json!([5, 5])),
            "tensor 'stem.weight' has shape [8, 3, 3, 3], expected [?, ?, 5, 5]",
        ),
        (
            "channels that do not chain",
            Box::new(|g| g["input"]["shape"][0] = 4.into()),
            "does not fit its own input shape",
        ),
        (
            "schema from the future",
            Box::new(|g| g["schema"] = 99.into()),
            "schema version 99 is from a newer exporter; this gradcam reads schema versions up to 1",
        ),
        (
            "no schema",
            Box::new(|g| {
                g.as_object_mut().unwrap().remove("schema");
            }),
            "no schema version",
        ),
        (
            "a negative stride",
            Box::new(|g| g["nodes"][conv]["params"]["stride"] = serde_json::json!([-1, 1])),
            "parameter 'stride' must be 2 integers ≥ 1, not [-1,1]",
        ),
        (
            "a slice past the address space",
            Box::new(|g| {
                let s = node(g, "cat");
                g["nodes"][s]["op"] = "slice".into();
                g["nodes"][s]["inputs"] = serde_json::json!([g["nodes"][0]["name"]]);
                g["nodes"][s]["params"] =
                    serde_json::json!({"axis": 1, "start": u64::MAX, "len": 2});
            }),
            "parameter 'start' must be an integer ≥ 0, not 18446744073709551615",
        ),
        (
            "a name defined twice",
            Box::new(|g| {
                let first = g["nodes"][0]["name"].clone();
                g["nodes"][1]["name"] = first;
            }),
            "is defined twice",
        ),
    ];
    for (what, break_it, message) in cases {
        let mut g = good.clone();
        break_it(&mut g);
        let err = refused(&path, &g);
        assert!(
            err.contains(message),
            "{what}: expected '{message}' in: {err}"
        );
        assert!(err.contains("custom_cnn"), "{what}: no file path in: {err}");
    }
    let err = Model::from_store(&with_graph(&path, "{not json".into()), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("invalid exported graph: not JSON"), "{err}");
}

/// A tensor of a dtype the engine does not read (F64), in a file with a graph: refused when the
/// file is read, naming the tensor and the dtype.
#[test]
fn unsupported_dtypes_are_refused() {
    use safetensors::tensor::{Dtype, TensorView};
    let (_, graph) = custom();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.safetensors");
    let data: Vec<u8> = (0..8 * 3 * 3 * 3)
        .flat_map(|i| (i as f64 / 100.0).to_le_bytes())
        .collect();
    let view = TensorView::new(Dtype::F64, vec![8, 3, 3, 3], &data).unwrap();
    let meta = std::collections::HashMap::from([(METADATA_KEY.to_owned(), graph.to_string())]);
    let bytes = safetensors::serialize([("stem.weight", view)], Some(meta)).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let err = Model::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("tensor 'stem.weight' has unsupported dtype F64 (supported: F32, F16, BF16)"),
        "{err}"
    );
}

#[test]
fn inspect_names_the_embedded_graph_and_lists_its_layers() {
    let path = common::fixture("exported/custom_cnn/model.safetensors");
    let out = common::gradcam(&["inspect", "--weights", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("graph: embedded in the weights file (written by scripts/export_model.py")
    );
    assert!(
        text.contains("architecture: CustomCNN (exported)"),
        "{text}"
    );
    assert!(text.contains("default layer: down"), "{text}");
    // the nn.Sequential inside the nn.ModuleDict and its children are targets
    for layer in ["paths.a", "paths.b", "paths.b.2", "act", "down"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{layer} "))),
            "{layer} not listed:\n{text}"
        );
    }
}

/// A module the forward never called (an auxiliary head, a leftover layer) is listed in the
/// export without an output; asking for it says so instead of "unknown layer".
#[test]
fn a_module_the_forward_did_not_call_is_named_as_such() {
    let (path, mut graph) = custom();
    graph["modules"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "aux_head", "kind": "Linear", "output": null}));
    let model = Model::from_store(&with_graph(&path, graph.to_string()), None).unwrap();
    let e = model.module("aux_head").expect_err("an error").to_string();
    assert!(
        e.contains("layer 'aux_head' is a module of the model, but its forward did not call it"),
        "{e}"
    );
    let e = model.module("aux_hed").expect_err("an error").to_string();
    assert!(e.starts_with("unknown layer 'aux_hed'"), "{e}");
}
