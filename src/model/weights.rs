//! Reading a PyTorch `state_dict` saved with `safetensors.torch.save_file`: float tensors are
//! converted to f32, integer tensors (BatchNorm's `num_batches_tracked`) are ignored, and every
//! tensor an architecture takes is marked, so that leftovers can be reported as unexpected.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// safetensors' own limit on the JSON header.
const MAX_HEADER: u64 = 100_000_000;

/// The end of the data the JSON header's tensor table spans (the largest end offset), when the
/// header is readable; the full parse checks everything else.
fn data_len(header: &[u8]) -> Option<u64> {
    let table: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    table
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .try_fold(0u64, |m, e| Some(m.max(e?)))
}

/// The row-major multi-index of flat index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            index[k] = i % d;
            i /= d;
        }
    }
    index
}

pub struct WeightStore {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    /// Integer tensors (not loaded): name → dtype.
    integers: BTreeMap<String, String>,
    /// The file's `__metadata__` (an exported graph lives there).
    metadata: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl WeightStore {
    /// Reads and parses `path`. The read is bounded by what the header declares (8 bytes of
    /// header size, at most 100 MB of header, then the data its tensor table spans), so a file
    /// that never ends (`/dev/zero`, a pipe) is refused without reading it to the end.
    pub fn load(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let bad = |reason: String| Error::Safetensors {
            path: path.to_owned(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        crate::limits::read_at_most(&mut file, &mut bytes, 8).map_err(io)?;
        if bytes.len() == 8 {
            let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            if n > MAX_HEADER {
                return Err(bad(format!(
                    "header size {n} bytes, more than safetensors' limit of {MAX_HEADER}"
                )));
            }
            crate::limits::read_at_most(&mut file, &mut bytes, n).map_err(io)?;
            let header = &bytes[8..];
            // An unreadable header is reported by the full parse below.
            if let Some(data) = data_len(header) {
                crate::limits::check_memory("the weights", data).map_err(bad)?;
                // One byte more than declared, so that trailing data is reported.
                crate::limits::read_at_most(&mut file, &mut bytes, data + 1).map_err(io)?;
            }
        }
        Self::parse(path, &bytes)
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let metadata = SafeTensors::read_metadata(bytes)
            .map(|(_, m)| m.metadata().clone().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors = BTreeMap::new();
        let mut integers = BTreeMap::new();
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
                | Dtype::U64 => {
                    integers.insert(name, format!("{:?}", view.dtype()));
                    continue;
                }
                other => {
                    return Err(Error::Dtype {
                        path: path.to_owned(),
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    path: path.to_owned(),
                    index: unravel(i, &shape),
                    value: data[i],
                    name,
                });
            }
            tensors.insert(name, Tensor::new(shape, data));
        }
        Ok(Self {
            path: path.to_owned(),
            tensors,
            integers,
            metadata,
            used: RefCell::default(),
        })
    }

    /// A store built in memory (random weights for benchmarks and tests).
    pub fn from_tensors(label: &str, tensors: BTreeMap<String, Tensor>) -> Self {
        Self {
            path: PathBuf::from(label),
            tensors,
            integers: BTreeMap::new(),
            metadata: BTreeMap::new(),
            used: RefCell::default(),
        }
    }

    /// The value of `key` in the file's metadata.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Sets a metadata entry (a graph exported on its own, joined to a state_dict in a test).
    pub fn set_metadata(&mut self, key: &str, value: String) {
        self.metadata.insert(key.to_owned(), value);
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
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| match self.integers.get(name) {
                Some(dtype) => Error::IntegerTensor {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    dtype: dtype.clone(),
                },
                None => Error::MissingTensor {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    arch: arch.to_owned(),
                },
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

    /// Fails on the first integer tensor other than BatchNorm's `num_batches_tracked`: a
    /// weight stored as an integer type (I32, U8, BOOL, …) is an error, not a missing tensor.
    pub fn check_integers(&self) -> Result<()> {
        match self
            .integers
            .iter()
            .find(|(n, _)| !n.ends_with("num_batches_tracked"))
        {
            Some((name, dtype)) => Err(Error::IntegerTensor {
                path: self.path.clone(),
                name: name.clone(),
                dtype: dtype.clone(),
            }),
            None => Ok(()),
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
