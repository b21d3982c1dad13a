//! The CIFAR-10 binary format: `data_batch_1.bin` … `data_batch_5.bin` (training) and
//! `test_batch.bin`, each a sequence of 3073-byte records (1 label byte, then 1024 red, 1024
//! green and 1024 blue pixel bytes, row-major).

use super::{normalize, Dataset, Splits, IMAGE_LEN};
use crate::error::{Error, Result};
use std::path::Path;

pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Reads the five training files and the test file from `dir`.
pub fn load(dir: &Path) -> Result<Splits> {
    let mut train = empty();
    for i in 1..=5 {
        read_file(&dir.join(format!("data_batch_{i}.bin")), &mut train)?;
    }
    let mut test = empty();
    read_file(&dir.join("test_batch.bin"), &mut test)?;
    Ok(Splits { train, test })
}

fn empty() -> Dataset {
    Dataset {
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Appends the records of one file to `set`, rejecting a size that is not a whole number of
/// records and labels outside 0..=9.
pub fn read_file(path: &Path, set: &mut Dataset) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &bytes, set)
}

pub fn parse(path: &Path, bytes: &[u8], set: &mut Dataset) -> Result<()> {
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(bad(format!(
            "{} bytes is not a whole number of CIFAR-10 records ({RECORD_LEN} bytes each: 1 label byte + 3072 pixel bytes)",
            bytes.len()
        )));
    }
    for (i, rec) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let label = rec[0] as usize;
        if label >= CLASS_NAMES.len() {
            return Err(bad(format!(
                "record {i} has label {label}; CIFAR-10 labels are 0..=9"
            )));
        }
        set.labels.push(label);
        set.images
            .extend(rec[1..].iter().map(|&b| normalize(b as f32 / 255.0)));
    }
    Ok(())
}
