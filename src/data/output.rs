//! The output folder appears whole or not at all, and an interrupted run
//! can pick up where it stopped.
//!
//! Everything is written into a work folder next to the output
//! (`<out>.work`): the spools and records of finished stages, and the
//! dataset being assembled in `<out>.work/dataset`, which is fsynced and
//! renamed into place at the very end. Each finished stage leaves a record
//! holding a fingerprint of everything that decided its output (inputs'
//! names, sizes and times; the options it used; the previous stage's
//! fingerprint), so a re-run with the same command skips the stages already
//! done and redoes the rest. A run that fails before finishing any stage
//! removes its work folder; one that fails later keeps it for the re-run.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DataError;

/// Fails unless `out` is free to write: absent, an empty folder, or
/// `overwrite`.
pub fn check_out_dir(out: &Path, overwrite: bool) -> Result<(), DataError> {
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(cause) => Err(DataError::Write {
            path: out.to_path_buf(),
            cause,
        }),
        Ok(meta) if !meta.is_dir() => Err(DataError::OutputNotADir {
            path: out.to_path_buf(),
        }),
        Ok(_) if overwrite => Ok(()),
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

/// A sha256 over the JSON form of what decides a stage's output.
pub fn fingerprint(parts: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(parts).unwrap_or_default();
    super::shard::sha256_hex(&bytes)
}

/// The sha256 of a file's bytes, for fingerprints naming a file's content.
pub fn file_sha256(path: &Path) -> Result<String, DataError> {
    let mut file = File::open(path).map_err(DataError::read_input(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(DataError::read_input(path))?;
    Ok(super::shard::hex(&hasher.finalize()))
}

/// A folder assembled under a temporary name next to `out` and renamed onto
/// it only when complete (exports and imports; `prepare` uses [`WorkDir`],
/// which also keeps finished stages for a restart).
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

#[derive(Serialize, Deserialize)]
struct StageFile<T> {
    fingerprint: String,
    record: T,
}

pub struct WorkDir {
    path: PathBuf,
    out: PathBuf,
    /// Finished stages are on disk: keep the folder if the run fails.
    keep: bool,
}

/// The folder inside the work folder where the dataset is assembled.
const DATASET: &str = "dataset";

impl WorkDir {
    /// Opens `<out>.work`, creating it (and `out`'s parent folders) unless a
    /// previous run left it.
    pub fn open(out: &Path) -> Result<WorkDir, DataError> {
        let name = out
            .file_name()
            .ok_or_else(|| DataError::OutputNotADir {
                path: out.to_path_buf(),
            })?
            .to_string_lossy();
        let path = out.with_file_name(format!("{name}.work"));
        let existed = path.is_dir();
        std::fs::create_dir_all(&path).map_err(DataError::write(&path))?;
        Ok(WorkDir {
            path,
            out: out.to_path_buf(),
            keep: existed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the folder stays when this run fails: it holds finished
    /// stages, of this run or an earlier one.
    pub fn kept_on_failure(&self) -> bool {
        self.keep
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The folder the dataset is assembled in, created if absent.
    pub fn dataset(&self) -> Result<PathBuf, DataError> {
        self.subfolder(DATASET)
    }

    /// A subfolder of the work folder, created if absent.
    pub fn subfolder(&self, name: &str) -> Result<PathBuf, DataError> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(DataError::write(&dir))?;
        Ok(dir)
    }

    /// Empties a subfolder before a stage writes it again.
    pub fn clear_subfolder(&self, name: &str) -> Result<PathBuf, DataError> {
        let dir = self.path.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DataError::write(&dir))?;
        }
        self.subfolder(name)
    }

    /// The record a stage left, if it was made with this fingerprint.
    pub fn finished<T: DeserializeOwned>(&self, stage: &str, fingerprint: &str) -> Option<T> {
        let text = std::fs::read_to_string(self.record_path(stage)).ok()?;
        let file: StageFile<T> = serde_json::from_str(&text).ok()?;
        (file.fingerprint == fingerprint).then_some(file.record)
    }

    /// Records a finished stage: written to a temporary name, fsynced and
    /// renamed, so a record on disk always describes complete outputs.
    pub fn finish<T: Serialize>(
        &mut self,
        stage: &str,
        fingerprint: &str,
        record: &T,
    ) -> Result<(), DataError> {
        let path = self.record_path(stage);
        let file = StageFile {
            fingerprint: fingerprint.to_string(),
            record,
        };
        let text = serde_json::to_vec(&file).map_err(|e| DataError::Write {
            path: path.clone(),
            cause: e.into(),
        })?;
        crate::fsio::write_atomically(&path, &text).map_err(DataError::write(&path))?;
        self.keep = true;
        Ok(())
    }

    /// Forgets a stage's record before its outputs are rewritten.
    pub fn forget(&self, stage: &str) -> Result<(), DataError> {
        let path = self.record_path(stage);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DataError::Write { path, cause: e })
            }
            _ => Ok(()),
        }
    }

    fn record_path(&self, stage: &str) -> PathBuf {
        self.path.join(format!("{stage}.json"))
    }

    /// Moves the assembled dataset to `out`, replacing what was there, and
    /// removes the work folder.
    pub fn commit(mut self) -> Result<(), DataError> {
        let dataset = self.path.join(DATASET);
        sync_dir(&dataset)?;
        if self.out.exists() {
            let replaced = self.path.join("replaced");
            std::fs::rename(&self.out, &replaced).map_err(DataError::write(&self.out))?;
            std::fs::rename(&dataset, &self.out).map_err(DataError::write(&self.out))?;
        } else {
            std::fs::rename(&dataset, &self.out).map_err(DataError::write(&self.out))?;
        }
        if let Some(parent) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        self.keep = false;
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: an error that got us here matters more.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes a folder's entries (new files, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), DataError> {
    crate::fsio::sync_dir(dir).map_err(DataError::write(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_folder_without_finished_stages_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prepared");
        let work = WorkDir::open(&out).unwrap();
        std::fs::write(work.dataset().unwrap().join("x.bin"), b"x").unwrap();
        drop(work);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn finished_stages_survive_a_failure_and_match_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prepared");
        let mut work = WorkDir::open(&out).unwrap();
        work.finish("clean", "abc", &vec![1u64, 2]).unwrap();
        drop(work);
        let work = WorkDir::open(&out).unwrap();
        assert_eq!(work.finished::<Vec<u64>>("clean", "abc"), Some(vec![1, 2]));
        assert_eq!(work.finished::<Vec<u64>>("clean", "other"), None);
        assert_eq!(work.finished::<Vec<u64>>("encode", "abc"), None);
        work.forget("clean").unwrap();
        assert_eq!(work.finished::<Vec<u64>>("clean", "abc"), None);
    }

    #[test]
    fn commit_replaces_an_existing_folder_and_removes_the_work() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prepared");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.bin"), b"old").unwrap();
        assert!(matches!(
            check_out_dir(&out, false),
            Err(DataError::OutputExists { .. })
        ));
        check_out_dir(&out, true).unwrap();
        let mut work = WorkDir::open(&out).unwrap();
        work.finish("clean", "f", &1).unwrap();
        std::fs::write(work.dataset().unwrap().join("new.bin"), b"new").unwrap();
        work.commit().unwrap();
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["new.bin"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
