//! What a run folder keeps about its data, so that later commands (`cram
//! export`, `cram infer --text-file`) need only the run: a copy of the
//! tokenizer it was trained with and the manifest of its prepared data.

use super::checkpoint::CheckpointError;
use crate::data::{TokenStore, MANIFEST_FILE};
use std::path::Path;

/// The run's copy of its data's `tokenizer.json`.
pub const RUN_TOKENIZER: &str = "tokenizer.json";
/// The run's copy of its data's `manifest.json`.
pub const RUN_DATA_MANIFEST: &str = "data-manifest.json";

/// Copies the prepared folder's tokenizer and manifest into the run folder,
/// each unless it is already there (a resumed run keeps the files of its start).
pub fn record_data(store: &TokenStore, run: &Path) -> Result<(), CheckpointError> {
    let tokenizer = store.dir().join(&store.manifest().tokenizer.file);
    copy_if_absent(&tokenizer, &run.join(RUN_TOKENIZER))?;
    copy_if_absent(
        &store.dir().join(MANIFEST_FILE),
        &run.join(RUN_DATA_MANIFEST),
    )
}

fn copy_if_absent(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    if to.exists() {
        return Ok(());
    }
    let bytes = std::fs::read(from).map_err(|source| CheckpointError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    crate::fsio::write_atomically(to, &bytes).map_err(|source| CheckpointError::Write {
        path: to.to_path_buf(),
        source,
    })
}
