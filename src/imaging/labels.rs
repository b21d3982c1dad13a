//! Class names for the JSON lines: a labels file (one name per line), or CIFAR-10's names for
//! 10-class seed-cnn models (the article's CIFAR-10 CNN), in torchvision's CIFAR10 order.

use crate::error::{Error, Result};
use std::path::Path;

pub const CIFAR10: [&str; 10] = [
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

/// The largest labels file read (ImageNet's 1000 names take 30 KB).
pub const MAX_BYTES: u64 = 16 << 20;

/// Names from `file` (must list exactly `classes` names), else the built-in ones, else none.
pub fn load(file: Option<&Path>, arch: &str, classes: usize) -> Result<Option<Vec<String>>> {
    let Some(path) = file else {
        return Ok((arch == "seed-cnn" && classes == 10)
            .then(|| CIFAR10.iter().map(|s| s.to_string()).collect()));
    };
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(io)?;
    crate::limits::read_at_most(&mut &file, &mut bytes, MAX_BYTES + 1).map_err(io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(bad(format!(
            "larger than {MAX_BYTES} bytes; one class name per line"
        )));
    }
    parse(&bytes, classes).map(Some).map_err(bad)
}

/// One name per line, surrounding whitespace trimmed (so CRLF line ends and a UTF-8 byte order
/// mark do no harm); blank lines at the end are ignored, a blank line between names is an error
/// (dropping it would shift every later name onto the wrong class).
pub fn parse(bytes: &[u8], classes: usize) -> std::result::Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(format!(
            "line {} is blank; give one class name per line, in class order, without blank lines",
            i + 1
        ));
    }
    if names.len() != classes {
        return Err(format!(
            "{} class names, but the model has {classes} classes (one name per line)",
            names.len()
        ));
    }
    Ok(names)
}
