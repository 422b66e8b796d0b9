//! Where configuration files come from: the disk, or memory for the fuzz target and tests.
//! Every path the loader uses is relative to the configuration directory and normalised
//! lexically, so diagnostics show `modules/web-fleet/main.hcl` however the source was
//! spelled, and the in-memory set can hold modules too.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Configuration files are written by hand; anything bigger is a mistake (a log or an
/// image saved as `.hcl`), and parsing it would only waste time and memory.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

pub trait Files: Sync {
    /// The `*.hcl` files directly in `dir`, sorted; an error when `dir` is not a directory.
    fn hcl_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String>;
    /// The file's bytes, refused when larger than `limit`.
    fn read(&self, path: &Path, limit: usize) -> Result<Vec<u8>, String>;
}

/// Files under a directory on disk.
pub struct Disk {
    pub root: PathBuf,
}

impl Files for Disk {
    fn hcl_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let entries = std::fs::read_dir(self.root.join(dir)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => e.to_string(),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "hcl") && e.path().is_file())
            .map(|e| normalize(&dir.join(e.file_name())))
            .collect();
        paths.sort();
        Ok(paths)
    }

    fn read(&self, path: &Path, limit: usize) -> Result<Vec<u8>, String> {
        let full = self.root.join(path);
        let size = std::fs::metadata(&full).map_err(|e| e.to_string())?.len();
        if size > limit as u64 {
            return Err(too_big(size, limit));
        }
        std::fs::read(&full).map_err(|e| e.to_string())
    }
}

/// Files held in memory, keyed by their normalised relative path.
pub struct Memory(pub BTreeMap<PathBuf, Vec<u8>>);

impl Memory {
    pub fn new<'f>(files: impl IntoIterator<Item = (&'f Path, &'f [u8])>) -> Self {
        Memory(
            files
                .into_iter()
                .map(|(p, b)| (normalize(p), b.to_vec()))
                .collect(),
        )
    }
}

impl Files for Memory {
    fn hcl_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let dir = normalize(dir);
        let mut found = false;
        let mut paths = Vec::new();
        for path in self.0.keys() {
            if path.starts_with(&dir) && path != &dir {
                found = true;
            }
            if path.parent() == Some(dir.as_path()) && path.extension().is_some_and(|x| x == "hcl")
            {
                paths.push(path.clone());
            }
        }
        if !found && dir != Path::new("") {
            return Err("not found".into());
        }
        Ok(paths)
    }

    fn read(&self, path: &Path, limit: usize) -> Result<Vec<u8>, String> {
        let bytes = self
            .0
            .get(&normalize(path))
            .ok_or("No such file or directory")?;
        if bytes.len() > limit {
            return Err(too_big(bytes.len() as u64, limit));
        }
        Ok(bytes.clone())
    }
}

fn too_big(size: u64, limit: usize) -> String {
    format!(
        "the file is {:.1} MB; configuration files are limited to {} MB",
        size as f64 / 1_048_576.0,
        limit / 1_048_576
    )
}

/// Removes `.` and resolves `..` against earlier components, keeping leading `..`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(normalize(Path::new("./a/b/../c")), Path::new("a/c"));
        assert_eq!(
            normalize(Path::new("x/../../modules/m")),
            Path::new("../modules/m")
        );
        assert_eq!(normalize(Path::new("")), Path::new(""));
    }

    #[test]
    fn memory_lists_a_directory_and_refuses_a_missing_one() {
        let files = Memory::new([
            (Path::new("main.hcl"), &b"a"[..]),
            (Path::new("modules/m/main.hcl"), &b"b"[..]),
        ]);
        assert_eq!(
            files.hcl_files(Path::new("")).unwrap(),
            vec![PathBuf::from("main.hcl")]
        );
        assert_eq!(
            files.hcl_files(Path::new("./modules/m")).unwrap(),
            vec![PathBuf::from("modules/m/main.hcl")]
        );
        assert!(files.hcl_files(Path::new("modules/nope")).is_err());
    }
}
