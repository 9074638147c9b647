//! The output folder appears whole or not at all: everything is written into
//! a staging folder next to it (`<out>.tmp-<pid>`), fsynced, and renamed into
//! place at the very end. A staging folder that is dropped before `commit`
//! (an error, a panic) is removed.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::DataError;

/// Fails unless `out` is free to write: absent, an empty folder, or `force`.
pub fn check_out_dir(out: &Path, force: bool) -> Result<(), DataError> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(cause) => Err(DataError::Write {
            path: out.to_path_buf(),
            cause,
        }),
        Ok(meta) if !meta.is_dir() => Err(DataError::OutputNotADir {
            path: out.to_path_buf(),
        }),
        Ok(_) if force => Ok(()),
        Ok(_) => {
            let mut entries = std::fs::read_dir(out).map_err(DataError::write(out))?;
            if entries.next().is_none() {
                Ok(())
            } else {
                Err(DataError::OutputExists {
                    path: out.to_path_buf(),
                })
            }
        }
    }
}

pub struct StagingDir {
    path: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates `<out>.tmp-<pid>` (and `out`'s parent folders).
    pub fn create(out: &Path) -> Result<StagingDir, DataError> {
        let name = out
            .file_name()
            .ok_or_else(|| DataError::OutputNotADir {
                path: out.to_path_buf(),
            })?
            .to_string_lossy();
        let path = out.with_file_name(format!("{name}.tmp-{}", std::process::id()));
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(DataError::write(parent))?;
        }
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(DataError::write(&path))?;
        }
        std::fs::create_dir(&path).map_err(DataError::write(&path))?;
        Ok(StagingDir {
            path,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the staged folder to `out`, replacing what was there.
    pub fn commit(mut self) -> Result<(), DataError> {
        sync_dir(&self.path)?;
        if self.out.exists() {
            let mut old = self.path.clone().into_os_string();
            old.push(".old");
            let old = PathBuf::from(old);
            std::fs::rename(&self.out, &old).map_err(DataError::write(&self.out))?;
            std::fs::rename(&self.path, &self.out).map_err(DataError::write(&self.out))?;
            std::fs::remove_dir_all(&old).map_err(DataError::write(&old))?;
        } else {
            std::fs::rename(&self.path, &self.out).map_err(DataError::write(&self.out))?;
        }
        self.committed = true;
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that got us here matters more.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes a folder's entries (new files, renames) durable.
fn sync_dir(dir: &Path) -> Result<(), DataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DataError::write(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_staging_folder_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prepared");
        let staging = StagingDir::create(&out).unwrap();
        std::fs::write(staging.path().join("x.bin"), b"x").unwrap();
        drop(staging);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_an_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prepared");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.bin"), b"old").unwrap();
        assert!(matches!(
            check_out_dir(&out, false),
            Err(DataError::OutputExists { .. })
        ));
        check_out_dir(&out, true).unwrap();
        let staging = StagingDir::create(&out).unwrap();
        std::fs::write(staging.path().join("new.bin"), b"new").unwrap();
        staging.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["new.bin"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
