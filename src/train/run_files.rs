//! A run and its data: the model fitted to the data's vocabulary and
//! sequence length, and what the run folder keeps about the data, so that
//! later commands (`cram export`, `cram infer --text-file`) need only the
//! run: a copy of the tokenizer it was trained with and the manifest of its
//! prepared data.

use super::checkpoint::CheckpointError;
use super::trainer::TrainError;
use crate::config::Config;
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

/// Makes the model fit the prepared data: the tokenizer decides the
/// vocabulary and the shards the sequence length. Returns a note for each
/// value that changed, for the user to see.
pub fn fit_to_data(cfg: &mut Config, store: &TokenStore) -> Result<Vec<String>, TrainError> {
    let mut notes = Vec::new();
    if cfg.model.vocab_size != store.vocab_size() {
        notes.push(format!(
            "model.vocab_size set to {} (the data's tokenizer) instead of {}",
            store.vocab_size(),
            cfg.model.vocab_size
        ));
        cfg.model.vocab_size = store.vocab_size();
        cfg.data.vocab_size = store.vocab_size();
    }
    if cfg.data.seq_len != store.seq_len() {
        notes.push(format!(
            "data.seq_len set to {} (the data's sequence length) instead of {}",
            store.seq_len(),
            cfg.data.seq_len
        ));
        cfg.data.seq_len = store.seq_len();
    }
    if cfg.model.arch == crate::config::Arch::Decoder
        && store.manifest().tokenizer.kind == "wordpiece"
    {
        // It trains, but WordPiece drops case and spacing that a decoder's
        // generated text needs, and the data was likely meant for an encoder.
        notes.push(
            "a causal decoder on WordPiece data: decoders are usually trained on byte-level BPE \
             (cram data prepare --tokenizer-kind bpe, the gpt-small preset's data.tokenizer)"
                .into(),
        );
    }
    cfg.validate()
        .map_err(|e| TrainError::Run(format!("{e} (for the data's shape)")))?;
    Ok(notes)
}
