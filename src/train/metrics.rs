//! `metrics.jsonl`: one JSON object per logged training step or evaluation.
//! Timing fields (elapsed, tokens/s, MFU) vary from run to run; everything
//! else is a deterministic function of the config, data and seed.

use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Fields that depend on the machine's speed rather than on the computation.
pub const TIMING_FIELDS: &[&str] = &["elapsed", "tokens_per_s", "mfu", "eval_seconds"];

pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens `metrics.jsonl` for appending. With `keep_through_step`, lines of
    /// later steps (written after the checkpoint a resume starts from) are
    /// dropped first, so a resumed run's log reads like an uninterrupted one.
    pub fn open(run: &Path, keep_through_step: Option<u64>) -> std::io::Result<MetricsWriter> {
        let path = run.join("metrics.jsonl");
        if let Some(step) = keep_through_step {
            truncate_after(&path, step)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsWriter { path, file })
    }

    pub fn write(&mut self, record: &Map<String, Value>) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).expect("metrics serialize");
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn truncate_after(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let line_step = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("step").and_then(Value::as_u64));
        if line_step.is_some_and(|s| s <= step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    crate::fsio::write_atomically(path, kept.as_bytes())
}

/// Reads a metrics file, dropping the timing fields: what must be identical
/// between two runs with the same seed.
pub fn read_without_timing(path: &Path) -> std::io::Result<Vec<Map<String, Value>>> {
    let text = fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Map<String, Value>>(l).ok())
        .map(|mut m| {
            for f in TIMING_FIELDS {
                m.remove(*f);
            }
            m
        })
        .collect())
}
