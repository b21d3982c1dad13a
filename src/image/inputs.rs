//! Which files a run reads, and the output name each one gets.
//!
//! Each PATH argument is a file (taken as is) or a directory (walked recursively, entries
//! sorted by name, only files with an image extension kept). Output names mirror the input's
//! path relative to its argument — `photos/a/cat.jpg` under `photos` becomes `a/cat` — so two
//! `cat.jpg` in different folders land in different output folders. Where two inputs still map
//! to one name (`cat.jpg` and `cat.png`, or the same file name given twice), the later one
//! keeps its extension (`cat.png`), then gets a counter (`cat-2`).

use super::load::has_image_extension;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Output name without suffix, relative to the output directory, '/'-separated.
    pub name: String,
}

/// A problem found while walking: reported on stderr; `skipped` ones make the run fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub path: PathBuf,
    pub message: String,
    /// An input that could not be used (counted as skipped), rather than a note.
    pub skipped: bool,
}

/// Expands PATH arguments into inputs with unique output names, and notices.
pub fn collect(args: &[PathBuf]) -> (Vec<Input>, Vec<Notice>) {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let mut notices = Vec::new();
    for arg in args {
        match std::fs::metadata(arg) {
            Err(e) => notices.push(Notice {
                path: arg.clone(),
                message: format!("cannot read: {e}"),
                skipped: true,
            }),
            Ok(m) if m.is_dir() => {
                let before = found.len();
                walk(arg, arg, &mut found, &mut notices);
                if found.len() == before {
                    notices.push(Notice {
                        path: arg.clone(),
                        message: "directory holds no images".into(),
                        skipped: true,
                    });
                }
            }
            Ok(_) => {
                let name = arg
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into());
                found.push((arg.clone(), name));
            }
        }
    }
    let mut used = HashSet::new();
    let inputs = found
        .into_iter()
        .map(|(path, rel)| {
            let name = unique_name(&rel, &mut used);
            Input { path, name }
        })
        .collect();
    (inputs, notices)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(PathBuf, String)>, notices: &mut Vec<Notice>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            notices.push(Notice {
                path: dir.to_owned(),
                message: format!("cannot read directory: {e}"),
                skipped: true,
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        // Follows symlinks; a dangling one is an unreadable input.
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => walk(root, &p, found, notices),
            Ok(_) if has_image_extension(&p) => {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                found.push((p, rel));
            }
            Ok(_) => notices.push(Notice {
                path: p,
                message: "not an image file (by extension), ignored".into(),
                skipped: false,
            }),
            Err(e) => notices.push(Notice {
                path: p,
                message: format!("cannot read: {e}"),
                skipped: true,
            }),
        }
    }
}

/// `rel` without its extension, unless taken; then with it; then with a counter.
fn unique_name(rel: &str, used: &mut HashSet<String>) -> String {
    let (dir, file) = match rel.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), rel),
    };
    let stem = match file.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => format!("{dir}{s}"),
        _ => rel.to_owned(),
    };
    let mut candidates = vec![stem.clone(), rel.to_owned()];
    candidates.dedup();
    for c in candidates {
        if used.insert(c.clone()) {
            return c;
        }
    }
    (2..)
        .map(|k| format!("{stem}-{k}"))
        .find(|c| used.insert(c.clone()))
        .expect("some counter is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_do_not_collide() {
        let mut used = HashSet::new();
        assert_eq!(unique_name("a/cat.jpg", &mut used), "a/cat");
        assert_eq!(unique_name("b/cat.jpg", &mut used), "b/cat");
        assert_eq!(unique_name("a/cat.png", &mut used), "a/cat.png");
        assert_eq!(unique_name("a/cat.png", &mut used), "a/cat-2");
        assert_eq!(unique_name(".hidden", &mut used), ".hidden");
        assert_eq!(unique_name("v1.2/dog", &mut used), "v1.2/dog");
    }
}
