//! Errors of sweeps, fits and plans: each names the file, field or input that
//! is wrong and what to do about it.

use crate::config::ConfigError;
use crate::data::DataError;
use crate::train::TrainError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScalingError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sweep spec {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Table {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("run {run}: {reason}")]
    Run { run: PathBuf, reason: String },
    /// The points cannot support the fit (too few sizes, a NaN, ...).
    #[error("cannot fit: {0}")]
    Degenerate(String),
    #[error("{0}")]
    Plan(String),
    #[error("sweep run {run}: {source}")]
    Train {
        run: String,
        #[source]
        source: TrainError,
    },
    #[error("sweep run {run}: {source}")]
    Config {
        run: String,
        #[source]
        source: ConfigError,
    },
    #[error("cannot open the sweep's prepared data {path}: {source}")]
    Data {
        path: PathBuf,
        #[source]
        source: DataError,
    },
}
