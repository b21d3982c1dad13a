//! NumPy `.npy` input and output for the tensor path of the CLI. Files are written to a
//! temporary name and renamed, so a reader never sees a half-written result.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use npyz::WriterBuilder;
use std::path::Path;

pub fn read_f32(path: &Path) -> Result<Tensor> {
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(format!("not a valid .npy file ({e})")))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(bad(
            "Fortran-ordered array; save np.ascontiguousarray(x)".into()
        ));
    }
    let dtype = npy.dtype().descr();
    if dtype != "'<f4'" && dtype != "<f4" {
        return Err(bad(format!(
            "dtype {dtype}, expected float32 (<f4); save x.astype(np.float32)"
        )));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = npy
        .into_vec()
        .map_err(|e| bad(format!("truncated or unreadable data ({e})")))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad(format!("data does not fill shape {shape:?}")));
    }
    Ok(Tensor::new(shape, data))
}

pub fn write_f32(path: &Path, t: &Tensor) -> Result<()> {
    let mut bytes = Vec::with_capacity(t.data.len() * 4 + 128);
    {
        let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut bytes)
            .begin_nd()
            .and_then(|mut w| {
                w.extend(t.data.iter().copied())?;
                w.finish()
            })
            .map_err(|source| Error::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}
