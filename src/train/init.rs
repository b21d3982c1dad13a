//! Fresh weights as PyTorch initialises them, and head replacement for fine-tuning.

use crate::error::{Error, Result};
use crate::model::graph::op::Linear;
use crate::model::{graph::Op, Model};
use crate::tensor::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;

pub type StateDict = BTreeMap<String, Tensor>;

/// A state dict for `arch` with `classes` outputs, initialised like a freshly constructed
/// PyTorch module: `nn.Conv2d`/`nn.Linear` weights kaiming-uniform with a = √5, which is
/// U(-1/√fan_in, 1/√fan_in), biases U(-1/√fan_in, 1/√fan_in); BatchNorm weight 1, bias 0,
/// running mean 0, running variance 1. The tensor layout comes from `model::zoo`.
pub fn fresh(arch: &str, classes: usize, seed: u64) -> Result<StateDict> {
    let mut state = crate::model::zoo::random_state_dict(arch, classes, seed)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = state.keys().cloned().collect();
    for name in names {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let shape = state[&name].shape.clone();
        if let Some(mean) = state.get_mut(&format!("{module}.running_mean")) {
            mean.data.fill(0.0);
            state
                .get_mut(&format!("{module}.running_var"))
                .expect("var")
                .data
                .fill(1.0);
            state.get_mut(&name).expect("weight").data.fill(1.0);
            state
                .get_mut(&format!("{module}.bias"))
                .expect("bias")
                .data
                .fill(0.0);
            continue;
        }
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in as f32).sqrt();
        for v in state.get_mut(&name).expect("weight").data.iter_mut() {
            *v = rng.random_range(-bound..bound);
        }
        if let Some(b) = state.get_mut(&format!("{module}.bias")) {
            for v in b.data.iter_mut() {
                *v = rng.random_range(-bound..bound);
            }
        }
    }
    Ok(state)
}

/// Replaces the model's last linear layer (`fc2`, `classifier.6`, `fc`) by a freshly
/// initialised one with `classes` outputs, as `model.fc2 = nn.Linear(in_f, classes)` does.
pub fn replace_head(state: &mut StateDict, model: &Model, classes: usize, seed: u64) -> Result<()> {
    if classes == 0 {
        return Err(Error::Usage("--replace-head needs at least 1 class".into()));
    }
    let g = &model.graph;
    let Some(Op::Linear(Linear { weight, .. })) = g.nodes.last().map(|n| &n.op) else {
        return Err(Error::Usage(
            "the model does not end with a linear layer".into(),
        ));
    };
    let wname = &g.param_names[*weight];
    let module = wname.strip_suffix(".weight").unwrap_or(wname);
    let in_f = g.params[*weight].shape[1];
    let bound = 1.0 / (in_f as f32).sqrt();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4EAD);
    let mut uniform = |n: usize| (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    state.insert(
        wname.clone(),
        Tensor::new(vec![classes, in_f], uniform(classes * in_f)),
    );
    state.insert(
        format!("{module}.bias"),
        Tensor::new(vec![classes], uniform(classes)),
    );
    Ok(())
}
