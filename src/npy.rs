//! NumPy `.npy` input and output for the tensor path of the CLI. Files are written to a
//! temporary name and renamed, so a reader never sees a half-written result.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use npyz::WriterBuilder;
use std::io::Write;
use std::path::Path;

/// The largest .npy header accepted (NumPy writes a few hundred bytes; format 2.0 allows 4 GiB).
const MAX_HEADER: u64 = 1 << 20;

/// Reads a float32 C-order .npy file. Reads are bounded by what the header declares, so a
/// file that never ends (`/dev/zero`, a pipe) cannot make it read forever, and sizes are
/// multiplied with checked arithmetic.
pub fn read_f32(path: &Path) -> Result<Tensor> {
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // Magic (6), version (2), header length (2 in version 1, 4 in versions 2 and 3).
    crate::limits::read_at_most(&mut file, &mut bytes, 12).map_err(io)?;
    let header_end = header_end(&bytes).map_err(bad)?;
    if header_end > MAX_HEADER + 12 {
        return Err(bad(format!("header of {header_end} bytes is too long")));
    }
    let want = header_end.saturating_sub(bytes.len() as u64);
    crate::limits::read_at_most(&mut file, &mut bytes, want).map_err(io)?;
    let (shape, data_bytes) = header(&bytes).map_err(bad)?;
    crate::limits::check_memory(&format!("the array of shape {shape:?}"), data_bytes)
        .map_err(bad)?;
    crate::limits::read_at_most(&mut file, &mut bytes, data_bytes).map_err(io)?;
    parse_f32(&bytes).map_err(bad)
}

/// Where the header of the .npy file starting with `prefix` ends (from its first 12 bytes).
fn header_end(prefix: &[u8]) -> std::result::Result<u64, String> {
    let invalid = || "not a valid .npy file (no NumPy magic string)".to_owned();
    if prefix.len() < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Err(invalid());
    }
    match prefix[6] {
        1 => Ok(10 + u16::from_le_bytes([prefix[8], prefix[9]]) as u64),
        2 | 3 if prefix.len() >= 12 => {
            Ok(12 + u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as u64)
        }
        v => Err(format!("not a valid .npy file (format version {v})")),
    }
}

/// The shape and data size in bytes of a float32 C-order array, from its header.
fn header(bytes: &[u8]) -> std::result::Result<(Vec<usize>, u64), String> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not a valid .npy file ({e})"))?;
    if npy.order() == npyz::Order::Fortran {
        return Err("Fortran-ordered array; save np.ascontiguousarray(x)".into());
    }
    let dtype = npy.dtype().descr();
    if dtype != "'<f4'" && dtype != "<f4" {
        return Err(format!(
            "dtype {dtype}, expected float32 (<f4); save x.astype(np.float32)"
        ));
    }
    let dims = npy.shape().to_vec();
    let too_large = || format!("shape {dims:?} is too large (its size overflows)");
    let n = crate::limits::checked_product(dims.iter().copied()).ok_or_else(too_large)?;
    let bytes = n.checked_mul(4).ok_or_else(too_large)?;
    usize::try_from(bytes).map_err(|_| too_large())?;
    let shape = dims.iter().map(|&d| d as usize).collect();
    Ok((shape, bytes))
}

/// Parses a whole float32 .npy file held in memory (what `read_f32` reads).
pub fn parse_f32(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    let end = header_end(bytes)?;
    if (bytes.len() as u64) < end {
        return Err("truncated header".into());
    }
    let (shape, data_bytes) = header(bytes)?;
    let data = &bytes[end as usize..];
    if (data.len() as u64) < data_bytes {
        return Err(format!(
            "truncated: shape {shape:?} needs {data_bytes} bytes of data, the file has {}",
            data.len()
        ));
    }
    let data = data[..data_bytes as usize]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
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

/// Writes `bytes` to a temporary file beside `path`, then renames it into place. On any
/// failure (disk full, a file size limit, a failed rename) the temporary file is removed; a
/// SIGINT or SIGTERM waits until the file is complete (see `crate::interrupt`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// `write_atomic` with the bytes produced by `fill`, which writes to the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let _writing = crate::interrupt::writing();
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        fill(&mut f)?;
        f.flush()
    });
    let done = written.and_then(|()| std::fs::rename(&tmp, path));
    done.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails half-way (disk full, EFBIG) leaves neither the file nor its
    /// temporary.
    #[test]
    fn failed_writes_remove_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let r = write_atomic_with(&path, |f| {
            f.write_all(b"half of it")?;
            Err(std::io::Error::from_raw_os_error(27)) // EFBIG
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("cannot write") && e.contains("x.png"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        write_atomic(&path, b"ok").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Headers whose sizes overflow, or that are cut, are errors, not panics.
    #[test]
    fn bad_headers_are_errors() {
        assert!(parse_f32(b"").is_err());
        assert!(parse_f32(b"\x93NUMPY\x01\x00").is_err());
        assert!(parse_f32(b"\x93NUMPY\x01\x00\x00\x00").is_err());
        assert!(parse_f32(b"\x93NUMPY\x02\x00\xff\xff\xff\xff").is_err());
        let mut h = b"\x93NUMPY\x01\x00".to_vec();
        let dict =
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 2), }\n";
        h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        h.extend_from_slice(dict);
        let e = parse_f32(&h).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
