//! Reading a PyTorch `state_dict` saved with `safetensors.torch.save_file`: f32 tensors are
//! used in place in the file's memory map, f16 and bf16 ones converted to f32, integer tensors
//! (BatchNorm's `num_batches_tracked`) ignored; every tensor an architecture takes is marked,
//! so that leftovers can be reported as unexpected.

use crate::error::{Error, Result};
use crate::storage::{Storage, Weight};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn bad(path: &Path, reason: String) -> Error {
    Error::Safetensors {
        path: path.to_owned(),
        reason,
    }
}

/// The header size that the first 8 bytes declare, refused above safetensors' limit.
fn header_len(path: &Path, prefix: &[u8]) -> Result<u64> {
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(bad(
            path,
            format!("header size {n} bytes, more than safetensors' limit of {MAX_HEADER}"),
        ));
    }
    Ok(n)
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
    tensors: BTreeMap<String, Weight>,
    /// Integer tensors (not loaded): name → dtype.
    integers: BTreeMap<String, String>,
    /// The file's `__metadata__` (an exported graph lives there).
    metadata: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl WeightStore {
    /// Maps `path` and parses it: its f32 tensors are used in place (see `storage`), others
    /// are converted. A file that is not a regular file (a pipe, `/dev/zero`) is read instead,
    /// bounded by what its header declares (8 bytes of header size, at most 100 MB of header,
    /// then the data its tensor table spans), so one that never ends is refused without
    /// reading it to the end.
    ///
    /// Like every tool that maps weights, this expects the file to stay as it is while the
    /// process runs: truncating it then ends the process with SIGBUS.
    pub fn load(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_file() {
            // SAFETY: a private read-only map; see the note above on files changed meanwhile.
            let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
            if let Some(prefix) = map.get(..8) {
                let n = header_len(path, prefix)?;
                let header = map.get(8..).and_then(|h| h.get(..n as usize));
                if let Some(data) = header.and_then(data_len) {
                    crate::limits::check_memory("the weights", data)
                        .map_err(|reason| bad(path, reason))?;
                }
            }
            // Every page is read below (the finiteness check); ask for them all at once.
            let _ = map.advise(memmap2::Advice::WillNeed);
            return Self::parse_with(path, &map, Some(&map));
        }
        let mut bytes = Vec::new();
        crate::limits::read_at_most(&mut file, &mut bytes, 8).map_err(io)?;
        if bytes.len() == 8 {
            let n = header_len(path, &bytes)?;
            crate::limits::read_at_most(&mut file, &mut bytes, n).map_err(io)?;
            // An unreadable header is reported by the full parse below.
            if let Some(data) = data_len(&bytes[8..]) {
                crate::limits::check_memory("the weights", data)
                    .map_err(|reason| bad(path, reason))?;
                // One byte more than declared, so that trailing data is reported.
                crate::limits::read_at_most(&mut file, &mut bytes, data + 1).map_err(io)?;
            }
        }
        Self::parse(path, &bytes)
    }

    /// Parses a whole file held in memory (every tensor is copied out of `bytes`).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        Self::parse_with(path, bytes, None)
    }

    /// Parses `bytes`, which are all of `map` when there is one: then f32 tensors that are
    /// aligned in it are used in place.
    fn parse_with(path: &Path, bytes: &[u8], map: Option<&Arc<memmap2::Mmap>>) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(path, e.to_string()))?;
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
            let in_place = || {
                let map = map?;
                let offset = (raw.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
                Storage::mapped(map, offset, raw.len() / 4)
            };
            let data: Storage = match view.dtype() {
                Dtype::F32 => in_place().unwrap_or_else(|| {
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect::<Vec<_>>()
                        .into()
                }),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect::<Vec<_>>()
                    .into(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect::<Vec<_>>()
                    .into(),
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
            tensors.insert(name, Weight::new(shape, data));
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
    pub fn from_tensors<T: Into<Weight>>(label: &str, tensors: BTreeMap<String, T>) -> Self {
        Self {
            path: PathBuf::from(label),
            tensors: tensors.into_iter().map(|(n, t)| (n, t.into())).collect(),
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

    /// Every float tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, Weight> {
        &self.tensors
    }

    /// An owned copy of every float tensor (a training run's starting state dict).
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.tensors
            .iter()
            .map(|(n, w)| (n.clone(), w.to_tensor()))
            .collect()
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
    pub fn take(&self, arch: &str, name: &str, expected: &[Option<usize>]) -> Result<&Weight> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A safetensors file whose header is padded with `pad` spaces, so that its data starts at
    /// byte 8 + header length.
    fn file_with_header_pad(pad: usize, data: &[f32]) -> tempfile::NamedTempFile {
        let json = format!(
            r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{}]}}}}{}"#,
            data.len(),
            4 * data.len(),
            " ".repeat(pad)
        );
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json.as_bytes());
        bytes.extend(f32_bytes(data));
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    #[test]
    fn aligned_f32_tensors_are_used_in_place_and_others_converted() {
        let w = f32_bytes(&[1.5, -2.0, 3.25, 4.0, 5.0, 6.0]);
        let h: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let views = [
            ("w", TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap()),
            ("h", TensorView::new(Dtype::F16, vec![2], &h).unwrap()),
        ];
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), safetensors::serialize(views, None).unwrap()).unwrap();
        let store = WeightStore::load(f.path()).unwrap();
        let (mapped, converted) = (&store.tensors()["w"], &store.tensors()["h"]);
        assert!(mapped.data.is_mapped());
        assert_eq!(mapped.shape, vec![2, 3]);
        assert_eq!(&*mapped.data, &[1.5, -2.0, 3.25, 4.0, 5.0, 6.0]);
        assert!(!converted.data.is_mapped());
        assert_eq!(&*converted.data, &[0.5, -1.0]);
        // The bytes read into memory give the same store.
        let parsed = WeightStore::parse(f.path(), &std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(parsed.tensors(), store.tensors());
    }

    #[test]
    fn misaligned_f32_data_is_copied_with_the_same_values() {
        for pad in 0..4 {
            let data = [1.0f32, f32::MIN_POSITIVE, -7.5];
            let f = file_with_header_pad(pad, &data);
            let store = WeightStore::load(f.path()).unwrap();
            let w = &store.tensors()["w"];
            let start = std::fs::metadata(f.path()).unwrap().len() as usize - 12;
            assert_eq!(
                w.data.is_mapped(),
                start.is_multiple_of(4),
                "data at byte {start}"
            );
            assert_eq!(&*w.data, &data);
        }
    }

    #[test]
    fn mapped_non_finite_values_are_refused_with_their_index() {
        let f = file_with_header_pad(0, &[1.0, f32::NAN, 3.0]);
        match WeightStore::load(f.path()) {
            Err(Error::NonFinite { name, index, .. }) => {
                assert_eq!((name.as_str(), index), ("w", vec![1]));
            }
            other => panic!("expected a non-finite error, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_truncated_mapped_file_is_refused() {
        let f = file_with_header_pad(0, &[1.0, 2.0, 3.0]);
        let len = std::fs::metadata(f.path()).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let e = WeightStore::load(f.path()).err().expect("refused");
        assert!(matches!(e, Error::Safetensors { .. }), "{e}");
    }
}
