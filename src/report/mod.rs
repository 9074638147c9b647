//! Reports: `cram report RUN_DIR` plots one pretraining run from its
//! `metrics.jsonl`; `cram report SWEEP_DIR` plots a sweep's curves and fits.
//! Each plot is written as `plots/<name>.svg`, and all of them inline into one
//! self-contained `report.html` (no scripts, nothing fetched).

mod batch_charts;
mod html;
mod plot;
mod run;
mod sweep;

pub use html::{escape, Figure, Page};
pub use plot::{scale_color, Chart, Mark, Series, PALETTE};

use crate::scaling::points::POINTS_FILE;
use crate::scaling::ScalingError;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
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
    #[error("{0} is neither a run folder (metrics.jsonl) nor a sweep folder (points.csv)")]
    Unknown(PathBuf),
    #[error("{path} holds no training records; is it a run folder of `cram pretrain`?")]
    Empty { path: PathBuf },
    #[error("cannot draw a plot: {0}")]
    Plot(String),
    #[error(transparent)]
    Scaling(#[from] ScalingError),
}

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Peak FLOP/s of the device the run used, for MFU when the log has none.
    pub peak_flops: Option<f64>,
}

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub plots: Vec<PathBuf>,
    /// Parts of the report that could not be drawn, and why.
    pub notes: Vec<String>,
}

/// Reports on a run folder or a sweep folder, whichever `dir` is.
pub fn report(dir: &Path, opts: &ReportOptions) -> Result<Written, ReportError> {
    if dir.join(POINTS_FILE).is_file() {
        sweep::report(dir)
    } else if crate::train::metrics_file(dir).is_file() {
        run::report(dir, opts)
    } else {
        Err(ReportError::Unknown(dir.to_path_buf()))
    }
}

/// Writes the figures under `dir/plots/` and the page as `dir/report.html`.
fn write_report(
    dir: &Path,
    page: Page,
    figures: &[Figure],
    notes: Vec<String>,
) -> Result<Written, ReportError> {
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(|source| ReportError::Write {
        path: plots_dir.clone(),
        source,
    })?;
    let mut plots = Vec::new();
    for f in figures {
        let path = plots_dir.join(&f.file);
        write_file(&path, &f.svg)?;
        plots.push(path);
    }
    let html = dir.join("report.html");
    write_file(&html, &page.finish())?;
    Ok(Written { html, plots, notes })
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    crate::scaling::points::write_atomically(path, text).map_err(|e| match e {
        ScalingError::Write { path, source } => ReportError::Write { path, source },
        other => ReportError::Scaling(other),
    })
}
