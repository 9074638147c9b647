//! The one error type of the Hugging Face export and import. Each variant
//! names the file or field involved and, where the user can fix it, how.
//! Underlying errors are part of the message (fields named `cause`, not
//! `source`), so that printing the error chain does not repeat them.

use crate::data::DataError;
use crate::train::CheckpointError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Run(#[from] CheckpointError),

    #[error(transparent)]
    Data(#[from] DataError),

    #[error("no Hugging Face mapping for the model of {config}. {details}")]
    NoMapping { config: PathBuf, details: String },

    #[error(
        "{run} holds no tokenizer.json (runs started before cram kept a copy of it); \
         pass --data DIR, the folder `cram data prepare` wrote for this run"
    )]
    NoTokenizer { run: PathBuf },

    #[error("cannot load tokenizer {path}: {cause}")]
    Tokenizer { path: PathBuf, cause: String },

    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{path} is not a valid safetensors file: {cause}")]
    Safetensors { path: PathBuf, cause: String },

    #[error(
        "{dir} holds neither model.safetensors nor model.safetensors.index.json; \
         cram imports safetensors weights only (save the model with \
         `model.save_pretrained(dir, safe_serialization=True)`)"
    )]
    NoWeights { dir: PathBuf },

    #[error("{path}: {reason}")]
    HfConfig { path: PathBuf, reason: String },

    #[error("{path} has no tensor '{name}', which {class} needs")]
    MissingTensor {
        path: PathBuf,
        name: String,
        class: &'static str,
    },

    #[error("tensor '{name}' in {path} has shape {actual:?}, but the model of config.json needs {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
}

impl ExportError {
    pub(crate) fn read(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |cause| ExportError::Read {
            path: path.to_path_buf(),
            cause,
        }
    }

    pub(crate) fn config(path: &std::path::Path, reason: impl Into<String>) -> ExportError {
        ExportError::HfConfig {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
