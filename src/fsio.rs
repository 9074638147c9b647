//! Durable file writes, one place for the rule every output follows: write
//! under a temporary name beside the target, sync it, rename it over the
//! target, sync the folder. A crash leaves the old file or the new one, never
//! half of one. Each module maps the `io::Error` into its own error type with
//! the path it was writing.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `data` to `path` and syncs it to disk (no rename: for files inside
/// a folder that is itself renamed into place, such as a checkpoint's).
pub fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Replaces `path` with `data` atomically and durably.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    write_synced(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Syncs the folder holding `path`, which makes a rename into it durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Makes a folder's entries (new files, renames) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `name.ext` → `name.ext.tmp`, beside it (same file system, so the rename
/// is atomic).
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.csv");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["table.csv"]);
    }
}
