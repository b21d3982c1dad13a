//! Every torchvision CNN variant (68 of them) is detected from its tensor names and shapes and
//! builds the graph torchvision defines: the same `named_modules()` (names, classes, order)
//! with the same output shapes at 224×224 (299×299 for inception_v3). Checked against the
//! key→shape manifests that scripts/make_family_fixtures.py writes from torchvision itself;
//! the weights are drawn here (zeros, BatchNorm variances one: only shapes matter).
//!
//! `GRADCAM_FAMILY=name` restricts the run to variants whose family or name contains `name`.

use gradcam::internal::model::weights::WeightStore;
use gradcam::internal::model::Model;
use gradcam::internal::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;

struct Manifest {
    variant: String,
    input: Vec<usize>,
    /// (name, class, output shape) of every module that runs.
    modules: Vec<(String, String, Vec<usize>)>,
    tensors: BTreeMap<String, Tensor>,
}

fn shape(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("shape is an array")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect()
}

fn manifests() -> Vec<PathBuf> {
    let dir = common::fixture("families/manifests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("manifests exist")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with("preprocess"))
        })
        .collect();
    paths.sort();
    paths
}

fn load(path: &PathBuf) -> Manifest {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read manifest"))
            .expect("manifest JSON");
    let mut tensors = BTreeMap::new();
    for t in m["tensors"].as_array().expect("tensors") {
        let (name, dtype) = (t[0].as_str().expect("name"), t[1].as_str().expect("dtype"));
        if dtype != "F32" {
            continue; // num_batches_tracked
        }
        let s = shape(&t[2]);
        let fill = if name.ends_with("running_var") {
            1.0
        } else {
            0.0
        };
        let data = vec![fill; s.iter().product()];
        tensors.insert(name.to_owned(), Tensor::new(s, data));
    }
    let modules = m["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .filter(|e| !e[2].is_null())
        .map(|e| {
            let mut s = shape(&e[2]);
            s[0] = 0;
            (
                e[0].as_str().expect("name").to_owned(),
                e[1].as_str().expect("class").to_owned(),
                s,
            )
        })
        .collect();
    Manifest {
        variant: m["variant"].as_str().expect("variant").to_owned(),
        input: shape(&m["input"]),
        modules,
        tensors,
    }
}

/// What differs between the engine's module listing and torchvision's (None: nothing).
fn compare(model: &Model, m: &Manifest) -> Option<String> {
    let plan = match model.graph.plan(&m.input) {
        Ok(p) => p,
        Err(e) => return Some(format!("planning at {:?}: {e}", m.input)),
    };
    let ours: Vec<(String, String, Vec<usize>)> = model
        .graph
        .modules
        .iter()
        .map(|md| {
            let mut s = plan.shapes[md.value].clone();
            s[0] = 0;
            (md.name.clone(), md.kind.clone(), s)
        })
        .collect();
    for (i, (a, b)) in ours.iter().zip(&m.modules).enumerate() {
        if a != b {
            return Some(format!(
                "module #{i}: engine {a:?}, torchvision {b:?} (N shown as 0)"
            ));
        }
    }
    if ours.len() != m.modules.len() {
        let extra = if ours.len() > m.modules.len() {
            format!("engine also lists {:?}", ours[m.modules.len()])
        } else {
            format!("torchvision also lists {:?}", m.modules[ours.len()])
        };
        return Some(format!(
            "{} modules, torchvision {}: {extra}",
            ours.len(),
            m.modules.len()
        ));
    }
    None
}

#[test]
fn every_torchvision_variant_is_detected_and_builds_torchvisions_modules() {
    let filter = std::env::var("GRADCAM_FAMILY").ok();
    let mut failures = vec![];
    let mut checked = 0;
    for path in manifests() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let mut m = load(&path);
        // Moved, not copied: the largest variant's weights are 2.6 GB.
        let store = WeightStore::from_tensors(&m.variant, std::mem::take(&mut m.tensors));
        let model = match Model::from_store(&store, None) {
            Ok(model) => model,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if model.arch != m.variant {
            failures.push(format!("{name}: detected as {}", model.arch));
        }
        if let Some(diff) = compare(&model, &m) {
            failures.push(format!("{name}: {diff}"));
        }
        drop(model);
        // --arch insists on the variant it names.
        if let Err(e) = Model::from_store(&store, Some(&m.variant)) {
            failures.push(format!("{name}: --arch {}: {e}", m.variant));
        }
        checked += 1;
    }
    assert!(checked > 0, "no manifest matched");
    assert!(
        failures.is_empty(),
        "{} of {checked} variants differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
