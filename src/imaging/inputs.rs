//! Which files a run reads, and the output name each one gets.
//!
//! Each PATH argument is a file (taken as is) or a directory (walked recursively, entries
//! sorted by name, only files with an image extension kept). Output names mirror the input's
//! path relative to its argument — `photos/a/cat.jpg` under `photos` becomes `a/cat` — so two
//! `cat.jpg` in different folders land in different output folders. Where two inputs still map
//! to one name (`cat.jpg` and `cat.png`, or the same file name given twice), the later one
//! keeps its extension (`cat.png`), then gets a counter (`cat-2`).
//!
//! Each directory is walked once, however many symlinks lead to it (directories are known by
//! device and inode, so a symlink cycle ends), the output directory is never walked, and a
//! file met twice (given twice, or also inside a given directory, or through a link) is
//! explained once; each of these is a note on stderr.

use super::load::has_image_extension;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file or directory's identity: (device, inode).
type FileId = (u64, u64);

fn id(m: &std::fs::Metadata) -> FileId {
    (m.dev(), m.ino())
}

/// What the walk has seen.
struct Walk<'a> {
    found: &'a mut Vec<(PathBuf, String)>,
    notices: &'a mut Vec<Notice>,
    dirs: HashSet<FileId>,
    files: HashSet<FileId>,
    /// The output directory.
    skip: Option<FileId>,
}

impl Walk<'_> {
    fn note(&mut self, path: &Path, message: &str) {
        self.notices.push(Notice {
            path: path.to_owned(),
            message: message.into(),
            skipped: false,
        });
    }

    /// Adds a file unless it is an input already.
    fn file(&mut self, path: PathBuf, m: &std::fs::Metadata, rel: String) {
        if self.files.insert(id(m)) {
            self.found.push((path, rel));
        } else {
            self.note(&path, "already an input (the same file), explained once");
        }
    }

    /// Whether to walk the directory `path`: once each, and never the output directory.
    fn enter(&mut self, path: &Path, m: &std::fs::Metadata) -> bool {
        if Some(id(m)) == self.skip {
            self.note(path, "the output directory (--out), not walked");
            false
        } else if !self.dirs.insert(id(m)) {
            self.note(
                path,
                "a directory already walked (a symlink loop?), not walked again",
            );
            false
        } else {
            true
        }
    }
}

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

/// Expands PATH arguments into inputs with unique output names, and notices. `out`, the
/// output directory, is not walked.
pub fn collect(args: &[PathBuf], out: Option<&Path>) -> (Vec<Input>, Vec<Notice>) {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    let mut notices = Vec::new();
    let mut w = Walk {
        found: &mut found,
        notices: &mut notices,
        dirs: HashSet::new(),
        files: HashSet::new(),
        skip: out.and_then(|o| std::fs::metadata(o).ok()).map(|m| id(&m)),
    };
    for arg in args {
        match std::fs::metadata(arg) {
            Err(e) => w.notices.push(Notice {
                path: arg.clone(),
                message: format!("cannot read: {e}"),
                skipped: true,
            }),
            Ok(m) if m.is_dir() => {
                if !w.enter(arg, &m) {
                    continue;
                }
                let before = w.found.len();
                walk(arg, arg, &mut w);
                if w.found.len() == before {
                    w.notices.push(Notice {
                        path: arg.clone(),
                        message: "directory holds no images".into(),
                        skipped: true,
                    });
                }
            }
            Ok(m) => {
                let name = arg
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into());
                w.file(arg.clone(), &m, name);
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

fn walk(root: &Path, dir: &Path, w: &mut Walk) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            w.notices.push(Notice {
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
            Ok(m) if m.is_dir() => {
                if w.enter(&p, &m) {
                    walk(root, &p, w);
                }
            }
            Ok(m) if has_image_extension(&p) => {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                w.file(p, &m, rel);
            }
            Ok(_) => w.note(&p, "not an image file (by extension), ignored"),
            Err(e) => w.notices.push(Notice {
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
