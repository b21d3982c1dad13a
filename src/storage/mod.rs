//! Weights that are shared, not copied: a weights file's f32 tensors are used where they lie in
//! the file's memory map, and the store, the model's graph and the CPU backend hold the same
//! data. Loading vgg16 then costs its file size in memory, not two or three times it.

mod recycle;

pub use recycle::RECYCLER;

use crate::tensor::Tensor;
use memmap2::Mmap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// Layouts the CPU backend derives from a weight and keeps with it, so that they are computed
/// once per model rather than once per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derived {
    /// Winograd F(2×2, 3×3)'s transformed filters, for the forward conv.
    Winograd = 0,
    /// The same for the input gradient (filters transposed and rotated first).
    WinogradTransposed = 1,
}

const DERIVED: usize = 2;

/// f32 data, cheap to clone. Writing through [`Storage::make_mut`] copies it first when it is
/// shared or mapped, and forgets everything derived from it.
#[derive(Clone)]
pub struct Storage(Arc<Inner>);

struct Inner {
    data: Data,
    derived: [OnceLock<Vec<f32>>; DERIVED],
}

enum Data {
    Owned(Vec<f32>),
    /// `len` f32 values at byte `offset` of `map`, which is 4-byte aligned there.
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl Inner {
    fn new(data: Data) -> Self {
        Self {
            data,
            derived: Default::default(),
        }
    }
}

/// An owned buffer goes back to [`RECYCLER`] for the next output of its size.
impl Drop for Inner {
    fn drop(&mut self) {
        if let Data::Owned(v) = &mut self.data {
            RECYCLER.put(std::mem::take(v));
        }
    }
}

impl Storage {
    /// The `len` little-endian f32 values at byte `offset` of `map`, in place; None where they
    /// cannot be used in place (misaligned, or a big-endian machine), for the caller to copy.
    pub fn mapped(map: &Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = map.get(offset..offset.checked_add(len.checked_mul(4)?)?)?;
        let usable =
            cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, f32>(bytes).is_ok();
        usable.then(|| {
            Self(Arc::new(Inner::new(Data::Mapped {
                map: Arc::clone(map),
                offset,
                len,
            })))
        })
    }

    /// Whether the data lies in a file's memory map.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0.data, Data::Mapped { .. })
    }

    /// The data, writable: copied first unless this is its only, owned, holder.
    pub fn make_mut(&mut self) -> &mut Vec<f32> {
        let unique_owned =
            matches!(self.0.data, Data::Owned(_)) && Arc::get_mut(&mut self.0).is_some();
        if !unique_owned {
            *self = Self::from(self.to_vec());
        }
        let inner = Arc::get_mut(&mut self.0).expect("unique after the copy");
        inner.derived = Default::default();
        match &mut inner.data {
            Data::Owned(v) => v,
            Data::Mapped { .. } => unreachable!("copied to owned above"),
        }
    }

    /// The data as a vector, without a copy when this is its only, owned, holder.
    pub fn into_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => match &mut inner.data {
                Data::Owned(v) => std::mem::take(v),
                Data::Mapped { .. } => Self(Arc::new(inner)).to_vec(),
            },
            Err(shared) => Self(shared).to_vec(),
        }
    }

    /// `which`, computed by `make` from the data on first use and kept until the data is
    /// written or dropped.
    pub fn derived(&self, which: Derived, make: impl FnOnce(&[f32]) -> Vec<f32>) -> &[f32] {
        self.0.derived[which as usize].get_or_init(|| make(self))
    }
}

impl Deref for Storage {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.0.data {
            Data::Owned(v) => v,
            Data::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + *len * 4])
            }
        }
    }
}

impl<'a> IntoIterator for &'a Storage {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<Vec<f32>> for Storage {
    fn from(v: Vec<f32>) -> Self {
        Self(Arc::new(Inner::new(Data::Owned(v))))
    }
}

impl PartialEq for Storage {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Storage({kind}, {} values)", self.len())
    }
}

/// A weight: a shape and shared [`Storage`] (a tensor of a weights file, or a param the model
/// builder computed, such as a folded BatchNorm).
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub data: Storage,
}

impl Weight {
    pub fn new(shape: Vec<usize>, data: impl Into<Storage>) -> Self {
        let data = data.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "weight data does not match its shape {shape:?}"
        );
        Self { shape, data }
    }

    /// An owned copy.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::new(self.shape.clone(), self.data.to_vec())
    }
}

impl From<Tensor> for Weight {
    fn from(t: Tensor) -> Self {
        Self::new(t.shape, t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn map_of(values: &[f32], pad: usize) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![0u8; pad]).unwrap();
        for v in values {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
        Arc::new(unsafe { Mmap::map(&f) }.unwrap())
    }

    #[test]
    fn mapped_data_reads_in_place_and_copies_on_write() {
        let map = map_of(&[1.0, 2.0, 3.0], 8);
        let mut s = Storage::mapped(&map, 8, 3).expect("aligned");
        assert!(s.is_mapped());
        assert_eq!(&*s, &[1.0, 2.0, 3.0]);
        let alias = s.clone();
        s.make_mut()[0] = 9.0;
        assert!(!s.is_mapped());
        assert_eq!(&*s, &[9.0, 2.0, 3.0]);
        assert_eq!(
            &*alias,
            &[1.0, 2.0, 3.0],
            "the other holder keeps the file's values"
        );
    }

    #[test]
    fn misaligned_or_out_of_range_data_is_not_mapped() {
        let map = map_of(&[1.0, 2.0], 2);
        assert!(
            Storage::mapped(&map, 2, 2).is_none(),
            "offset 2 is not 4-byte aligned"
        );
        assert!(
            Storage::mapped(&map, 4, 2).is_none(),
            "past the end of the map"
        );
        assert!(Storage::mapped(&map, usize::MAX, 2).is_none());
    }

    #[test]
    fn derived_data_is_computed_once_and_forgotten_on_write() {
        let mut s = Storage::from(vec![1.0, 2.0]);
        let calls = std::cell::Cell::new(0);
        let double = |v: &[f32]| {
            calls.set(calls.get() + 1);
            v.iter().map(|x| 2.0 * x).collect()
        };
        assert_eq!(s.derived(Derived::Winograd, double), &[2.0, 4.0]);
        assert_eq!(s.derived(Derived::Winograd, double), &[2.0, 4.0]);
        assert_eq!(calls.get(), 1);
        s.make_mut()[0] = 5.0;
        assert_eq!(s.derived(Derived::Winograd, double), &[10.0, 4.0]);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn into_vec_moves_unique_owned_data() {
        let v = vec![1.0f32; 4];
        let ptr = v.as_ptr();
        let back = Storage::from(v).into_vec();
        assert_eq!(back.as_ptr(), ptr);
        let shared = Storage::from(vec![2.0f32; 3]);
        let other = shared.clone();
        assert_eq!(shared.into_vec(), vec![2.0; 3]);
        assert_eq!(&*other, &[2.0; 3]);
    }
}
