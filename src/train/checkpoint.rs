//! Saving a trained state dict as PyTorch names and lays it out, so that
//! `model.load_state_dict(safetensors.torch.load_file(path))` accepts it (strict).

use super::init::StateDict;
use crate::error::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

/// Writes every tensor as f32, plus the int64 `num_batches_tracked` scalar PyTorch keeps for
/// each BatchNorm (the weight reader ignores integer tensors, so it is restored here, as 0:
/// BatchNorm is frozen during training, so it tracked no batches).
pub fn save(path: &Path, state: &StateDict) -> Result<()> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = state
        .iter()
        .map(|(name, t)| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), Dtype::F32, t.shape.clone(), bytes)
        })
        .collect();
    for name in state.keys() {
        if let Some(module) = name.strip_suffix(".running_mean") {
            let bytes = 0i64.to_le_bytes().to_vec();
            owned.push((
                format!("{module}.num_batches_tracked"),
                Dtype::I64,
                vec![],
                bytes,
            ));
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            let view = TensorView::new(*d, s.clone(), b).expect("sizes match by construction");
            (n.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::Safetensors {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    crate::npy::write_atomic(path, &bytes)
}
