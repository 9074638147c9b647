//! `metrics.jsonl`: one [`Record`] per line, a JSON object tagged by its
//! `event`: a logged training step, an evaluation, a skip or rollback of the
//! divergence guard, a resume that changed settings. The trainer, the guard
//! and the run folder write it through [`MetricsWriter`]; reports, scaling
//! fits and model cards read it through [`read_records`].
//!
//! The format on disk is the one every version wrote: keys in alphabetical
//! order (a record goes through `serde_json::Value`, whose map is sorted), a
//! number that is not finite written as `null` and read back as NaN, fields
//! added later (`eval_seconds`, the noise estimates) optional. The timing
//! fields (elapsed, tokens/s, MFU, eval seconds) vary from run to run;
//! everything else is a deterministic function of the config, data and seed.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Record {
    Train(TrainRecord),
    Eval(EvalRecord),
    /// Steps the device skipped (non-finite gradient norm), found at the
    /// read-back of logging step `step`.
    Skip {
        step: u64,
        skipped: u64,
        since_checkpoint: u64,
    },
    /// The logged loss of step `step` was above `guard.spike_factor` times
    /// the mean of the recent logged losses (`running_mean`).
    Spike {
        step: u64,
        #[serde(deserialize_with = "nan_if_null")]
        loss: f64,
        #[serde(deserialize_with = "nan_if_null")]
        running_mean: f64,
    },
    /// The guard went back to the checkpoint of `to_step`.
    Rollback {
        step: u64,
        to_step: u64,
        #[serde(deserialize_with = "nan_if_null")]
        lr_scale: f64,
        rollbacks: u32,
    },
    /// A resume changed the settings named in `changes` (by config key).
    Resume {
        step: u64,
        #[serde(deserialize_with = "nan_if_null")]
        progress: f64,
        changes: BTreeMap<String, ResumeChange>,
    },
}

/// A logged training step: the means over the logging interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub step: u64,
    pub tokens: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub flops: f64,
    /// The budget's fraction spent.
    #[serde(deserialize_with = "nan_if_null")]
    pub progress: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    pub batch_size: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub tokens_per_s: f64,
    /// `null` when the device has no known peak.
    pub mfu: Option<f64>,
    /// Only with `--measure-noise-scale`.
    #[serde(flatten)]
    pub noise: Option<NoiseRecord>,
    #[serde(deserialize_with = "nan_if_null")]
    pub elapsed: f64,
}

/// The gradient noise estimates of a logging interval (see [`super::noise`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseRecord {
    #[serde(deserialize_with = "nan_if_null")]
    pub noise_grad_sq: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub noise_trace: f64,
    /// B_simple; `null` when the |G|² estimate is not positive.
    #[serde(default)]
    pub noise_scale: Option<f64>,
}

/// A held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub tokens: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_accuracy: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub elapsed: f64,
    /// The evaluation's own time, outside the budget's clock (absent before
    /// 2026-12-02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_seconds: Option<f64>,
}

/// One setting a resume changed, as written in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeChange {
    pub saved: String,
    pub asked: String,
}

/// JSON has no NaN or infinity: serde_json writes them as `null`, read back
/// here as NaN (readers skip such values, as they skip absent ones).
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Record {
    /// The step the record belongs to.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Eval(r) => r.step,
            Record::Skip { step, .. }
            | Record::Spike { step, .. }
            | Record::Rollback { step, .. }
            | Record::Resume { step, .. } => *step,
        }
    }

    pub fn as_train(&self) -> Option<&TrainRecord> {
        match self {
            Record::Train(r) => Some(r),
            _ => None,
        }
    }

    pub fn as_eval(&self) -> Option<&EvalRecord> {
        match self {
            Record::Eval(r) => Some(r),
            _ => None,
        }
    }

    /// The record with its timing fields (elapsed, tokens/s, MFU, eval
    /// seconds) zeroed: what must be identical between two runs with the
    /// same seed.
    pub fn without_timing(mut self) -> Record {
        match &mut self {
            Record::Train(r) => {
                r.elapsed = 0.0;
                r.tokens_per_s = 0.0;
                r.mfu = None;
            }
            Record::Eval(r) => {
                r.elapsed = 0.0;
                r.eval_seconds = None;
            }
            Record::Skip { .. }
            | Record::Spike { .. }
            | Record::Rollback { .. }
            | Record::Resume { .. } => {}
        }
        self
    }

    /// The line as written: keys in alphabetical order, no newline.
    pub fn to_line(&self) -> String {
        let value = serde_json::to_value(self).expect("a metrics record is a JSON object");
        value.to_string()
    }
}

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

    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = record.to_line();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Keeps the lines of steps up to `step`, as they are; a line that is not a
/// record (a torn last line) goes too.
fn truncate_after(path: &Path, step: u64) -> std::io::Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if parse(&line).is_some_and(|r| r.step() <= step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    crate::fsio::write_atomically(path, kept.as_bytes())
}

fn parse(line: &str) -> Option<Record> {
    serde_json::from_str(line).ok()
}

/// A run folder's metrics file: `metrics.jsonl`, or `metrics.jsonl.gz`
/// where only that exists (the runs a sweep keeps in a repository are
/// compressed by bench/sweep_keep.sh: a fifth of the size, and the folder
/// still reads as a run everywhere).
pub fn metrics_file(run: &Path) -> PathBuf {
    let plain = run.join("metrics.jsonl");
    let gz = run.join("metrics.jsonl.gz");
    if !plain.exists() && gz.is_file() {
        gz
    } else {
        plain
    }
}

/// Every record of a metrics file (gzip-compressed when its name ends in
/// `.gz`), in order. Lines that are not records (a line torn by a crash, an
/// event this version does not know) are skipped.
pub fn read_records(path: &Path) -> std::io::Result<Vec<Record>> {
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(text.lines().filter_map(parse).collect())
}

/// Reads a metrics file with the timing fields zeroed
/// ([`Record::without_timing`]).
pub fn read_without_timing(path: &Path) -> std::io::Result<Vec<Record>> {
    Ok(read_records(path)?
        .into_iter()
        .map(Record::without_timing)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    /// A line as the versions before the typed record built it: a map of
    /// string keys, serialized as it is.
    fn map_line(fields: &[(&str, Value)]) -> String {
        let map: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        serde_json::to_string(&map).unwrap()
    }

    fn train(noise: Option<NoiseRecord>, loss: f64, mfu: Option<f64>) -> TrainRecord {
        TrainRecord {
            step: 3,
            tokens: 1536,
            flops: 4378853376.0,
            progress: 0.25,
            loss,
            lr: 0.002777777777777778,
            batch_size: 16,
            grad_norm: 3.544363334097084,
            tokens_per_s: 17634.334710969808,
            mfu,
            noise,
            elapsed: 0.087102804,
        }
    }

    fn train_map(r: &TrainRecord) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("event", json!("train")),
            ("step", json!(r.step)),
            ("tokens", json!(r.tokens)),
            ("flops", json!(r.flops)),
            ("progress", json!(r.progress)),
            ("loss", json!(r.loss)),
            ("lr", json!(r.lr)),
            ("batch_size", json!(r.batch_size)),
            ("grad_norm", json!(r.grad_norm)),
            ("tokens_per_s", json!(r.tokens_per_s)),
            ("mfu", r.mfu.map_or(Value::Null, |m| json!(m))),
        ];
        if let Some(n) = &r.noise {
            fields.push(("noise_grad_sq", json!(n.noise_grad_sq)));
            fields.push(("noise_trace", json!(n.noise_trace)));
            fields.push(("noise_scale", json!(n.noise_scale)));
        }
        fields.push(("elapsed", json!(r.elapsed)));
        fields
    }

    #[test]
    fn every_record_writes_the_bytes_the_maps_wrote() {
        let noise = NoiseRecord {
            noise_grad_sq: 7.82871691385905,
            noise_trace: 57.038167317708336,
            noise_scale: Some(7.285761887332342),
        };
        let trains = [
            train(None, 8.144185384114584, None),
            train(Some(noise.clone()), 8.1, Some(0.41)),
            train(
                Some(NoiseRecord {
                    noise_scale: None,
                    ..noise
                }),
                f64::NAN,
                None,
            ),
        ];
        for r in &trains {
            assert_eq!(Record::Train(r.clone()).to_line(), map_line(&train_map(r)));
        }
        let eval = EvalRecord {
            step: 10,
            tokens: 5120,
            val_loss: 7.25,
            val_accuracy: 0.0625,
            elapsed: 1.5,
            eval_seconds: Some(0.03),
        };
        // As the map-built lines read: keys sorted.
        let events = [
            (
                Record::Eval(eval),
                r#"{"elapsed":1.5,"eval_seconds":0.03,"event":"eval","step":10,"tokens":5120,"val_accuracy":0.0625,"val_loss":7.25}"#,
            ),
            (
                Record::Skip {
                    step: 15,
                    skipped: 2,
                    since_checkpoint: 2,
                },
                r#"{"event":"skip","since_checkpoint":2,"skipped":2,"step":15}"#,
            ),
            (
                Record::Rollback {
                    step: 15,
                    to_step: 10,
                    lr_scale: 0.5,
                    rollbacks: 1,
                },
                r#"{"event":"rollback","lr_scale":0.5,"rollbacks":1,"step":15,"to_step":10}"#,
            ),
        ];
        for (record, line) in &events {
            assert_eq!(&record.to_line(), line);
        }
        let change = ResumeChange {
            saved: "\"30 steps\"".into(),
            asked: "\"36 steps\"".into(),
        };
        let resume = Record::Resume {
            step: 30,
            progress: 0.8333333333333334,
            changes: BTreeMap::from([("train.budget".to_string(), change)]),
        };
        assert_eq!(
            resume.to_line(),
            r#"{"changes":{"train.budget":{"asked":"\"36 steps\"","saved":"\"30 steps\""}},"event":"resume","progress":0.8333333333333334,"step":30}"#
        );
    }

    #[test]
    fn lines_read_back_as_the_records_written_and_null_as_nan() {
        let with_noise = train(
            Some(NoiseRecord {
                noise_grad_sq: 1.0,
                noise_trace: 2.0,
                noise_scale: Some(2.0),
            }),
            8.0,
            Some(0.5),
        );
        let back = parse(&Record::Train(with_noise.clone()).to_line()).unwrap();
        assert_eq!(back, Record::Train(with_noise));
        let Some(Record::Train(nan)) = parse(&Record::Train(train(None, f64::NAN, None)).to_line())
        else {
            panic!("a train record with a null loss reads back");
        };
        assert!(nan.loss.is_nan() && nan.noise.is_none() && nan.mfu.is_none());
    }

    #[test]
    fn older_lines_read_and_unknown_or_torn_lines_are_skipped() {
        // An evaluation before eval_seconds (2026-11-25 to 2026-12-02).
        let old = r#"{"elapsed":12.5,"event":"eval","step":200,"tokens":102400,"val_accuracy":0.05,"val_loss":7.1}"#;
        let Some(Record::Eval(e)) = parse(old) else {
            panic!("an old evaluation reads");
        };
        assert_eq!((e.step, e.eval_seconds), (200, None));
        assert!(parse(r#"{"event":"party","step":3}"#).is_none());
        assert!(parse(r#"{"event":"eval","step":3,"tok"#).is_none());
    }

    #[test]
    fn a_kept_run_reads_the_same_from_its_gzipped_metrics() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let lines = concat!(
            r#"{"elapsed":1.0,"event":"eval","step":10,"tokens":5,"val_accuracy":0.5,"val_loss":7.0}"#,
            "\n",
            r#"{"elapsed":2.0,"event":"eval","step":20,"tokens":9,"val_accuracy":0.6,"val_loss":6.0}"#,
            "\n"
        );
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        assert_eq!(metrics_file(dir.path()), dir.path().join("metrics.jsonl"));
        let plain = read_records(&metrics_file(dir.path())).unwrap();
        assert_eq!(plain.len(), 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(lines.as_bytes()).unwrap();
        std::fs::write(dir.path().join("metrics.jsonl.gz"), gz.finish().unwrap()).unwrap();
        // The plain file wins while it exists; without it, the gzipped one.
        assert_eq!(metrics_file(dir.path()), dir.path().join("metrics.jsonl"));
        std::fs::remove_file(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics_file(dir.path()),
            dir.path().join("metrics.jsonl.gz")
        );
        assert_eq!(read_records(&metrics_file(dir.path())).unwrap(), plain);
    }

    #[test]
    fn a_resume_truncates_later_steps_and_keeps_earlier_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"event":"skip","since_checkpoint":1,"skipped":1,"step":5}"#,
            r#"{"elapsed":1.0,"event":"eval","step":10,"tokens":5,"val_accuracy":0.5,"val_loss":7.0}"#,
            r#"{"event":"skip","since_checkpoint":1,"skipped":1,"step":15}"#,
            r#"{"event":"eval","step":1"#,
        ];
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
        drop(MetricsWriter::open(dir.path(), Some(10)).unwrap());
        let kept = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(kept, format!("{}\n{}\n", lines[0], lines[1]));
    }
}
