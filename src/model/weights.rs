//! Reading a PyTorch `state_dict` saved with `safetensors.torch.save_file`: float tensors are
//! converted to f32, integer tensors (BatchNorm's `num_batches_tracked`) are ignored, and every
//! tensor an architecture takes is marked, so that leftovers can be reported as unexpected.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub struct WeightStore {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl WeightStore {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BOOL
                | Dtype::U8
                | Dtype::I8
                | Dtype::I16
                | Dtype::U16
                | Dtype::I32
                | Dtype::U32
                | Dtype::I64
                | Dtype::U64 => continue,
                other => {
                    return Err(Error::Dtype {
                        path: path.to_owned(),
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            tensors.insert(name, Tensor::new(shape, data));
        }
        Ok(Self {
            path: path.to_owned(),
            tensors,
            used: RefCell::default(),
        })
    }

    /// A store built in memory (random weights for benchmarks and tests).
    pub fn from_tensors(label: &str, tensors: BTreeMap<String, Tensor>) -> Self {
        Self {
            path: PathBuf::from(label),
            tensors,
            used: RefCell::default(),
        }
    }

    /// Every float tensor, by name (a training run's starting state dict).
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// The tensor `name`, checked against `expected` (None: any size) and marked as used.
    pub fn take(&self, arch: &str, name: &str, expected: &[Option<usize>]) -> Result<&Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
            arch: arch.to_owned(),
        })?;
        let fits = t.shape.len() == expected.len()
            && t.shape
                .iter()
                .zip(expected)
                .all(|(&d, e)| e.is_none_or(|e| e == d));
        if !fits {
            let dims: Vec<String> = expected
                .iter()
                .map(|e| e.map_or("?".to_owned(), |d| d.to_string()))
                .collect();
            return Err(Error::Shape {
                path: self.path.clone(),
                name: name.to_owned(),
                found: t.shape.clone(),
                expected: format!("[{}]", dims.join(", ")),
            });
        }
        self.used.borrow_mut().insert(name.to_owned());
        Ok(t)
    }

    /// Marks every tensor under `prefix` as taken: tensors of modules that never run at
    /// inference (aux heads), present or not.
    pub fn ignore_prefix(&self, prefix: &str) {
        let mut used = self.used.borrow_mut();
        for name in self.tensors.keys().filter(|n| n.starts_with(prefix)) {
            used.insert(name.clone());
        }
    }

    /// Fails on the first float tensor that the architecture did not take.
    pub fn check_all_used(&self, arch: &str) -> Result<()> {
        let used = self.used.borrow();
        match self.tensors.iter().find(|(n, _)| !used.contains(*n)) {
            Some((name, t)) => Err(Error::UnexpectedTensor {
                path: self.path.clone(),
                name: name.clone(),
                shape: t.shape.clone(),
                arch: arch.to_owned(),
            }),
            None => Ok(()),
        }
    }
}
