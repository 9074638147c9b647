//! `cram scale sweep`: every run of a spec, one after another, each a normal
//! run folder `OUT/runs/<name>/` made by the trainer (generic over the
//! backend). Resumable: a run with `result.json` is finished and never redone,
//! a run with a checkpoint resumes from it, and a run stopped before its first
//! checkpoint starts again. After each run the points table (`points.csv`,
//! `curves.csv`) is rewritten from the finished runs' folders.

use super::counts::Counts;
use super::points::{Curve, Point, PointSet};
use super::spec::{PlannedRun, SweepSpec};
use super::ScalingError;
use crate::backend::Backend;
use crate::config::Config;
use crate::data::TokenStore;
use crate::train::{checkpoint, pretrain, read_records, Progress, Record, RunOptions, TrainRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Written into a run folder when its budget is spent.
pub const RESULT_FILE: &str = "result.json";
/// The spec the sweep folder was made from (with `data` made absolute).
pub const SPEC_COPY: &str = "sweep.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run: String,
    pub budget: String,
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub val_loss: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub out: PathBuf,
    pub progress: bool,
    /// Stop after training this many runs (new or resumed); the rest wait for the next call.
    pub max_runs: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct SweepSummary {
    pub planned: usize,
    pub ran: usize,
    pub resumed: usize,
    pub skipped: usize,
    pub points: PointSet,
}

/// What to do with a planned run's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Finished,
    Resume,
    Fresh,
}

fn run_state(dir: &Path, planned: &Config, name: &str) -> Result<State, ScalingError> {
    if dir.join(RESULT_FILE).is_file() {
        let saved = Config::load(&dir.join("config.toml")).map_err(|e| ScalingError::Run {
            run: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Settings that do not change what a run is (budget, cadences, how
        // many checkpoints to keep: see RESUMABLE) may differ: a run finished
        // before such a key existed is still this run.
        if let Err(reason) = crate::config::resume_changes(&saved, planned) {
            return Err(ScalingError::Run {
                run: dir.to_path_buf(),
                reason: format!(
                    "run {name} was made with another config than the spec now gives ({reason}); \
                     sweep into another --out or delete that run folder"
                ),
            });
        }
        return Ok(State::Finished);
    }
    if checkpoint::latest(dir).is_some() {
        return Ok(State::Resume);
    }
    if dir.exists() {
        // Stopped before its first checkpoint: nothing to resume from.
        std::fs::remove_dir_all(dir).map_err(|source| ScalingError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(State::Fresh)
}

/// The planned runs of `spec`, with the data they train on.
pub fn plan(spec: &SweepSpec) -> Result<(TokenStore, Vec<PlannedRun>), ScalingError> {
    let store = TokenStore::open(&spec.data).map_err(|source| ScalingError::Data {
        path: spec.data.clone(),
        source,
    })?;
    let runs = spec.expand(&store)?;
    Ok((store, runs))
}

pub fn run_dir(out: &Path, name: &str) -> PathBuf {
    out.join("runs").join(name)
}

/// Runs (or resumes, or skips) every run of the spec; `log` hears one line per run.
pub fn sweep<B: Backend>(
    be: &B,
    spec: &SweepSpec,
    spec_text: &str,
    opts: &SweepOptions,
    mut log: impl FnMut(&str),
) -> Result<SweepSummary, ScalingError> {
    let (store, runs) = plan(spec)?;
    std::fs::create_dir_all(opts.out.join("runs")).map_err(|source| ScalingError::Write {
        path: opts.out.clone(),
        source,
    })?;
    super::points::write_atomically(&opts.out.join(SPEC_COPY), &spec_copy(spec_text, spec))?;
    // The fits need the data's plateau level to tell runs that never left it.
    super::plateau::SweepData {
        unigram_loss: crate::eval::unigram_cross_entropy(&store),
        unigram_accuracy: Some(crate::eval::unigram_accuracy(&store)),
    }
    .write(&opts.out)?;
    let mut summary = SweepSummary {
        planned: runs.len(),
        ..SweepSummary::default()
    };
    for (i, run) in runs.iter().enumerate() {
        let dir = run_dir(&opts.out, &run.name);
        let state = run_state(&dir, &run.config, &run.name)?;
        let head = format!("[{}/{}] {}", i + 1, runs.len(), run.name);
        if state == State::Finished {
            summary.skipped += 1;
            log(&format!("{head}: finished earlier, skipped"));
            continue;
        }
        if opts
            .max_runs
            .is_some_and(|m| summary.ran + summary.resumed >= m)
        {
            log(&format!("{head}: left for the next call (--max-runs)"));
            continue;
        }
        log(&format!(
            "{head}: {} N = {:.3e} (total {:.3e}), budget {} ({})",
            if state == State::Resume {
                "resuming"
            } else {
                "training"
            },
            run.counts.n_params,
            run.counts.n_total,
            run.budget_label,
            run.config.train.budget
        ));
        let started = std::time::Instant::now();
        let result = train_one(be, &store, run, &dir, state == State::Resume, spec, opts)?;
        // Set-up, evaluation and checkpoints beside the training clock: what a
        // sweep pays per run on top of its budget.
        let wall = started.elapsed().as_secs_f64();
        match state {
            State::Resume => summary.resumed += 1,
            _ => summary.ran += 1,
        }
        log(&format!(
            "{head}: {} steps, {} tokens, {:.1}s ({wall:.1}s in all), held-out loss {}",
            result.steps,
            result.tokens,
            result.seconds,
            result
                .val_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or("-".into())
        ));
        summary.points = collect_points(&opts.out, &runs)?;
        summary.points.write_dir(&opts.out)?;
    }
    summary.points = collect_points(&opts.out, &runs)?;
    summary.points.write_dir(&opts.out)?;
    Ok(summary)
}

fn train_one<B: Backend>(
    be: &B,
    store: &TokenStore,
    run: &PlannedRun,
    dir: &Path,
    resume: bool,
    spec: &SweepSpec,
    opts: &SweepOptions,
) -> Result<RunResult, ScalingError> {
    let run_opts = RunOptions {
        resume,
        progress: if opts.progress {
            Progress::Bar
        } else {
            Progress::Off
        },
        measure_noise_scale: spec.measure_noise_scale,
        ..RunOptions::new(dir)
    };
    let s = pretrain(be, &run.config, store, &run_opts).map_err(|source| ScalingError::Train {
        run: run.name.clone(),
        source,
    })?;
    let result = RunResult {
        run: run.name.clone(),
        budget: run.budget_label.clone(),
        steps: s.steps,
        tokens: s.tokens,
        seconds: s.seconds,
        val_loss: s.eval.map(|e| e.loss),
    };
    let json = serde_json::to_string_pretty(&result).expect("result serializes");
    super::points::write_atomically(&dir.join(RESULT_FILE), &json)?;
    Ok(result)
}

/// The spec as given, with `data` replaced by the absolute path it resolved to.
fn spec_copy(text: &str, spec: &SweepSpec) -> String {
    let mut table: toml::Table = text.parse().unwrap_or_default();
    table.insert(
        "data".into(),
        toml::Value::String(spec.data.display().to_string()),
    );
    toml::to_string_pretty(&table).unwrap_or_else(|_| text.to_string())
}

/// Points and curves of the finished runs among `runs`.
pub fn collect_points(out: &Path, runs: &[PlannedRun]) -> Result<PointSet, ScalingError> {
    let mut set = PointSet::default();
    for run in runs {
        let dir = run_dir(out, &run.name);
        if dir.join(RESULT_FILE).is_file() {
            let (point, curve) = read_run(&dir, &run.name)?;
            set.points.push(point);
            set.curves.push(curve);
        }
    }
    Ok(set)
}

/// A finished run folder's point and held-out loss curve.
pub fn read_run(dir: &Path, name: &str) -> Result<(Point, Curve), ScalingError> {
    let bad = |reason: String| ScalingError::Run {
        run: dir.to_path_buf(),
        reason,
    };
    let config = Config::load(&dir.join("config.toml")).map_err(|e| bad(e.to_string()))?;
    let counts = Counts::of(&config);
    let records = read_metrics(dir)?;
    let evals: Vec<(f64, f64)> = records
        .iter()
        .filter_map(Record::as_eval)
        .map(|e| (e.tokens as f64, e.val_loss))
        .filter(|(_, loss)| loss.is_finite())
        .collect();
    let trains: Vec<&TrainRecord> = records.iter().filter_map(Record::as_train).collect();
    let (Some(&(_, loss)), Some(last)) = (evals.last(), trains.last()) else {
        return Err(bad(
            "metrics.jsonl holds no training step or no evaluation".into()
        ));
    };
    let tokens = last.tokens as f64;
    // B_simple over the second half of the run, from the averaged estimates.
    let late: Vec<(f64, f64)> = trains
        .iter()
        .filter(|t| t.tokens as f64 >= tokens / 2.0)
        .filter_map(|t| t.noise.as_ref())
        .map(|n| (n.noise_grad_sq, n.noise_trace))
        .filter(|(g2, trace)| g2.is_finite() && trace.is_finite())
        .collect();
    let g2: f64 = late.iter().map(|p| p.0).sum();
    let trace: f64 = late.iter().map(|p| p.1).sum();
    let noise_scale = (!late.is_empty() && g2 > 0.0).then(|| trace / g2);
    let point = Point {
        run: name.to_string(),
        n_params: counts.n_params,
        n_total: counts.n_total,
        tokens,
        compute: counts.compute(tokens),
        loss,
        noise_scale,
    };
    let curve = Curve {
        run: name.to_string(),
        n_params: counts.n_params,
        n_total: counts.n_total,
        flops_per_token: counts.flops_per_token,
        samples: evals,
    };
    Ok((point, curve))
}

/// The records of a run folder's `metrics.jsonl`.
pub fn read_metrics(run: &Path) -> Result<Vec<Record>, ScalingError> {
    let path = crate::train::metrics_file(run);
    read_records(&path).map_err(|source| ScalingError::Read { path, source })
}
