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

/// Names from `file` (must list exactly `classes` names), else the built-in ones, else none.
pub fn load(file: Option<&Path>, arch: &str, classes: usize) -> Result<Option<Vec<String>>> {
    let Some(path) = file else {
        return Ok((arch == "seed-cnn" && classes == 10)
            .then(|| CIFAR10.iter().map(|s| s.to_string()).collect()));
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    if names.len() != classes {
        return Err(Error::Input {
            path: path.to_owned(),
            reason: format!(
                "{} class names, but the model has {classes} classes (one name per line)",
                names.len()
            ),
        });
    }
    Ok(Some(names))
}
