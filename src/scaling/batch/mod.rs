//! The critical batch size measured directly (McCandlish et al. 2018, §2.2
//! and figure 3), beside the gradient noise scale that estimates it.
//!
//! Runs of one model at several batch sizes (a sweep spec's `batch_sizes`)
//! are each trained past a target loss. S(B), the optimizer steps a run
//! needs to reach it, and E(B) = B·S(B), the sequences it sees, trade off as
//! (S/S_min − 1)(E/E_min − 1) = 1, that is S = S_min + E_min/B: a line in
//! 1/B whose intercept is S_min (the fewest steps, at an infinite batch) and
//! whose slope is E_min (the fewest sequences, at a batch of one). The
//! critical batch B_crit = E_min/S_min is where both are within a factor of
//! two of their minimum. The paper predicts B_crit ≈ B_simple, the noise
//! scale `--measure-noise-scale` logs; both are reported per model.
//!
//! The loss is the logged training loss (the mean over each logging
//! interval), smoothed by a centred mean over `window` logs, and the step
//! of the first smoothed log at or below the target is interpolated between
//! it and the log before. Each run keeps its own schedule: with a schedule
//! tied to the budget, S(B) also measures how the schedule spends the steps,
//! so the runs of one model should share a budget in tokens.

use crate::scaling::points::{distinct, read_points};
use crate::scaling::ScalingError;
use crate::train::{read_records, TrainRecord};
use serde::{Deserialize, Serialize};
use std::path::Path;

mod ladder;
mod table;

use ladder::ladder;
pub use ladder::Rung;

/// A batch run and where it reached the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRun {
    pub run: String,
    /// Sequences per optimizer step.
    pub batch: f64,
    /// Steps to the target loss; `None` when the run never reached it.
    pub steps: Option<f64>,
    /// Tokens seen by then.
    pub tokens: Option<f64>,
}

/// One model's batch sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBatches {
    /// Non-embedding parameters.
    pub n_params: f64,
    pub target_loss: f64,
    pub runs: Vec<BatchRun>,
    /// S_min (steps), E_min (sequences) and B_crit = E_min/S_min (sequences),
    /// when at least three runs reached the target and the line is positive.
    pub s_min: Option<f64>,
    pub e_min: Option<f64>,
    pub b_crit: Option<f64>,
    /// B_crit in tokens (sequences × the runs' tokens per sequence).
    pub b_crit_tokens: Option<f64>,
    /// Mean B_simple (sequences) over the logs whose smoothed loss is within
    /// 3% of the target, and how many logs that is.
    pub b_simple: Option<f64>,
    pub b_simple_logs: usize,
    /// B_crit and B_simple from the target down to the lowest loss three
    /// runs reach (absent from files written before it).
    #[serde(default)]
    pub ladder: Vec<Rung>,
    /// Why a quantity is missing.
    pub notes: Vec<String>,
}

impl ModelBatches {
    /// Whether B_crit lies within a factor 2 of the batch sizes run: beyond
    /// that the line S = S_min + E_min/B extrapolates it.
    pub fn bracketed(&self) -> bool {
        self.b_crit
            .is_some_and(|b| near_the_batches(b, self.runs.iter().map(|r| r.batch)))
    }
}

/// Whether a critical batch lies within a factor 2 of the batch sizes it
/// was measured with (beyond that the line extrapolates it).
fn near_the_batches(b_crit: f64, batches: impl Iterator<Item = f64>) -> bool {
    let (lo, hi) = crate::scaling::fit::stats::extent(batches);
    (lo / 2.0..=2.0 * hi).contains(&b_crit)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalBatchReport {
    pub window: usize,
    pub models: Vec<ModelBatches>,
}

/// Kaplan et al. 2020's B_crit(L) = B* / L^(1/α_B): B* = 2·10⁸ tokens,
/// α_B = 0.21, fitted on GPT-2's WebText; the reference line beside cram's
/// measurements, and its slope where cram measured only one loss.
pub const KAPLAN_BATCH_TOKENS: f64 = 2e8;
pub const KAPLAN_BATCH_SLOPE: f64 = -1.0 / 0.21;

/// Kaplan et al.'s critical batch in tokens at a loss in nats.
pub fn kaplan_critical_tokens(loss: f64) -> f64 {
    KAPLAN_BATCH_TOKENS * loss.powf(KAPLAN_BATCH_SLOPE)
}

pub const BATCH_FILE: &str = "critical_batch.json";
/// Logged losses in the centred mean that finds the crossing, by default.
pub const DEFAULT_WINDOW: usize = 5;

/// Centred mean over `window` values (fewer at the ends).
pub fn smoothed(values: &[f64], window: usize) -> Vec<f64> {
    let half = window.max(1) / 2;
    (0..values.len())
        .map(|i| {
            let part = &values[i.saturating_sub(half)..(i + half + 1).min(values.len())];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect()
}

/// (steps, tokens) where the smoothed training loss first reaches `target`,
/// interpolated linearly between the two logs around the crossing.
pub fn steps_to_target(records: &[TrainRecord], target: f64, window: usize) -> Option<(f64, f64)> {
    crossing(records, &smoothed_losses(records, window), target)
}

fn smoothed_losses(records: &[TrainRecord], window: usize) -> Vec<f64> {
    let losses: Vec<f64> = records.iter().map(|r| r.loss).collect();
    smoothed(&losses, window)
}

/// [`steps_to_target`] given the records' smoothed losses.
fn crossing(records: &[TrainRecord], smooth: &[f64], target: f64) -> Option<(f64, f64)> {
    let i = smooth.iter().position(|&l| l <= target)?;
    let at = &records[i];
    if i == 0 {
        return Some((at.step as f64, at.tokens as f64));
    }
    let before = &records[i - 1];
    let f = (smooth[i - 1] - target) / (smooth[i - 1] - smooth[i]);
    let lerp = |a: u64, b: u64| a as f64 + f * (b as f64 - a as f64);
    Some((lerp(before.step, at.step), lerp(before.tokens, at.tokens)))
}

/// Least squares of S = S_min + E_min·(1/B) over (batch, steps) pairs:
/// (S_min, E_min), or why the line says nothing.
pub fn fit_steps(pairs: &[(f64, f64)]) -> Result<(f64, f64), String> {
    if pairs.len() < 3 {
        return Err(format!(
            "{} run(s) reached the target; the line S = S_min + E_min/B needs three",
            pairs.len()
        ));
    }
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(x, y), &(b, s)| (x + 1.0 / b / n, y + s / n));
    let (sxy, sxx) = pairs.iter().fold((0.0, 0.0), |(xy, xx), &(b, s)| {
        let dx = 1.0 / b - mx;
        (xy + dx * (s - my), xx + dx * dx)
    });
    if sxx <= 0.0 {
        return Err("every run has the same batch size".into());
    }
    let e_min = sxy / sxx;
    let s_min = my - e_min * mx;
    if e_min <= 0.0 || s_min <= 0.0 {
        return Err(format!(
            "the steps do not fall towards a floor as the batch grows (S_min {s_min:.1}, E_min {e_min:.1}): \
             try a target loss all runs pass well before their end, or batch sizes around the noise scale"
        ));
    }
    Ok((s_min, e_min))
}

/// The training records of a run folder, in order.
fn train_records(run: &Path) -> Result<Vec<TrainRecord>, ScalingError> {
    let path = crate::train::metrics_file(run);
    let records = read_records(&path).map_err(|source| ScalingError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(records
        .iter()
        .filter_map(|r| r.as_train().cloned())
        .filter(|r| r.loss.is_finite())
        .collect())
}

/// A run's training records with their smoothed losses, computed once.
struct RunCurve {
    run: String,
    /// The last logged batch size (sequences).
    batch: f64,
    records: Vec<TrainRecord>,
    smooth: Vec<f64>,
}

/// The share of a run's steps after which a crossing says more about the
/// learning-rate decay than about the batch: the schedules anneal to zero,
/// and the end of every run drops its loss whatever its batch.
const LATE: f64 = 0.9;

impl RunCurve {
    fn lowest(&self) -> f64 {
        self.smooth.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn last_step(&self) -> f64 {
        self.records.last().map_or(0.0, |r| r.step as f64)
    }

    /// The lowest smoothed loss of the run's first [`LATE`] of steps.
    fn lowest_before_the_end(&self) -> f64 {
        let end = LATE * self.last_step();
        (self.records.iter().zip(&self.smooth))
            .filter(|(r, _)| r.step as f64 <= end)
            .map(|(_, &l)| l)
            .fold(f64::INFINITY, f64::min)
    }
}

/// Measures the critical batch of every model of a sweep folder whose runs
/// (finished, in points.csv) come at two or more batch sizes; `None` when no
/// model does (a sweep without `batch_sizes`).
pub fn measure(
    dir: &Path,
    target: Option<f64>,
    window: usize,
) -> Result<Option<CriticalBatchReport>, ScalingError> {
    let points = read_points(&dir.join("points.csv"))?;
    let mut models = Vec::new();
    for n in distinct(points.iter().map(|p| p.n_params)) {
        let mut runs = Vec::new();
        for p in points.iter().filter(|p| p.n_params == n) {
            let records = train_records(&dir.join("runs").join(&p.run))?;
            if let Some(last) = records.last() {
                runs.push(RunCurve {
                    run: p.run.clone(),
                    batch: last.batch_size as f64,
                    smooth: smoothed_losses(&records, window),
                    records,
                });
            }
        }
        if distinct(runs.iter().map(|r| r.batch)).len() >= 2 {
            models.push(model_batches(n, runs, target));
        }
    }
    Ok((!models.is_empty()).then_some(CriticalBatchReport { window, models }))
}

fn model_batches(n_params: f64, mut runs: Vec<RunCurve>, target: Option<f64>) -> ModelBatches {
    runs.sort_by(|a, b| a.batch.total_cmp(&b.batch));
    // By default the loss every run reaches before the last tenth of its
    // steps: the highest of their lowest there.
    let target = target.unwrap_or_else(|| {
        (runs.iter())
            .map(RunCurve::lowest_before_the_end)
            .fold(f64::MIN, f64::max)
    });
    let mut notes = Vec::new();
    for curve in &runs {
        if curve
            .records
            .iter()
            .any(|r| r.batch_size as f64 != curve.batch)
        {
            notes.push(format!(
                "{}: the batch size changed during the run (a batch ramp); its last, {}, is used",
                curve.run, curve.batch
            ));
        }
    }
    let at = AtTarget::measure(&runs, target);
    notes.extend(at.notes.iter().cloned());
    if at.b_simple.is_none() {
        notes.push(
            "no noise scale near the target: run the sweep with measure_noise_scale = true".into(),
        );
    }
    let mut model = ModelBatches {
        n_params,
        target_loss: target,
        runs: at.runs.clone(),
        s_min: at.fit.map(|f| f.0),
        e_min: at.fit.map(|f| f.1),
        b_crit: at.b_crit(),
        b_crit_tokens: at.b_crit_tokens(),
        b_simple: at.b_simple,
        b_simple_logs: at.b_simple_logs,
        ladder: ladder(&runs, target),
        notes,
    };
    if let Some(b) = model.b_crit.filter(|_| !model.bracketed()) {
        model.notes.push(format!(
            "B_crit {b:.1} lies beyond a factor 2 of the batch sizes run: the line extrapolates it; \
             run batch sizes around it to measure it"
        ));
    }
    model
}

/// What the runs of one model say at one target loss.
struct AtTarget {
    runs: Vec<BatchRun>,
    /// (S_min, E_min) of the line through the runs that reached the target.
    fit: Option<(f64, f64)>,
    /// Tokens per sequence of the runs that reached it (the mean).
    tokens_per_sequence: Option<f64>,
    b_simple: Option<f64>,
    b_simple_logs: usize,
    notes: Vec<String>,
}

impl AtTarget {
    fn measure(runs: &[RunCurve], target: f64) -> AtTarget {
        let mut notes = Vec::new();
        let mut batch_runs = Vec::new();
        let mut pairs = Vec::new();
        let mut per_sequence = Vec::new();
        let (mut noise_sum, mut noise_logs) = (0.0, 0usize);
        for curve in runs {
            let RunCurve {
                run,
                batch,
                records,
                smooth,
            } = curve;
            let reached = crossing(records, smooth, target);
            if let Some((steps, tokens)) = reached {
                pairs.push((*batch, steps));
                per_sequence.push(tokens / (steps * batch));
                let last = curve.last_step();
                if steps > LATE * last {
                    notes.push(format!(
                        "{run} reaches {target:.4} only at step {steps:.0} of {last:.0}, in the last tenth of its \
                         schedule, where the decaying learning rate more than the batch sets its pace: \
                         a higher --target-loss or longer runs measure the batch"
                    ));
                }
            } else {
                notes.push(format!(
                    "{run} never reached {target:.4} (lowest smoothed loss {:.4})",
                    curve.lowest()
                ));
            }
            batch_runs.push(BatchRun {
                run: run.clone(),
                batch: *batch,
                steps: reached.map(|r| r.0),
                tokens: reached.map(|r| r.1),
            });
            for (r, &l) in records.iter().zip(smooth) {
                let b = r.noise.as_ref().and_then(|n| n.noise_scale);
                if let Some(b) = b.filter(|_| (l / target - 1.0).abs() <= 0.03) {
                    noise_sum += b;
                    noise_logs += 1;
                }
            }
        }
        let fit = fit_steps(&pairs);
        if let Err(why) = &fit {
            notes.push(format!("no critical batch: {why}"));
        }
        AtTarget {
            runs: batch_runs,
            fit: fit.ok(),
            tokens_per_sequence: (!per_sequence.is_empty())
                .then(|| per_sequence.iter().sum::<f64>() / per_sequence.len() as f64),
            b_simple: (noise_logs > 0).then(|| noise_sum / noise_logs as f64),
            b_simple_logs: noise_logs,
            notes,
        }
    }

    fn b_crit(&self) -> Option<f64> {
        self.fit.map(|(s, e)| e / s)
    }

    fn b_crit_tokens(&self) -> Option<f64> {
        self.b_crit()
            .zip(self.tokens_per_sequence)
            .map(|(b, t)| b * t)
    }
}

#[cfg(test)]
mod tests {
    use super::ladder::RUNGS;
    use super::*;

    fn record(step: u64, batch: u64, loss: f64) -> TrainRecord {
        TrainRecord {
            step,
            tokens: step * batch * 32,
            flops: 0.0,
            progress: 0.0,
            loss,
            lr: 1e-3,
            batch_size: batch,
            grad_norm: 1.0,
            tokens_per_s: 1.0,
            mfu: None,
            noise: None,
            elapsed: 0.0,
        }
    }

    #[test]
    fn the_crossing_is_interpolated_between_logs() {
        let records: Vec<TrainRecord> = [6.0, 5.0, 4.0, 3.0]
            .iter()
            .enumerate()
            .map(|(i, &l)| record(10 * (i as u64 + 1), 8, l))
            .collect();
        let (steps, tokens) = steps_to_target(&records, 4.5, 1).unwrap();
        assert!((steps - 25.0).abs() < 1e-9, "{steps}");
        assert!((tokens - 25.0 * 8.0 * 32.0).abs() < 1e-6, "{tokens}");
        assert_eq!(steps_to_target(&records, 2.0, 1), None);
        assert_eq!(smoothed(&[1.0, 2.0, 3.0, 10.0], 3), [1.5, 2.0, 5.0, 6.5]);
    }

    #[test]
    fn the_line_gives_s_min_and_e_min() {
        let pairs: Vec<(f64, f64)> = [8.0, 16.0, 32.0, 64.0]
            .iter()
            .map(|&b| (b, 100.0 + 1600.0 / b))
            .collect();
        let (s, e) = fit_steps(&pairs).unwrap();
        assert!(
            (s - 100.0).abs() < 1e-9 && (e - 1600.0).abs() < 1e-6,
            "{s} {e}"
        );
        assert!(fit_steps(&pairs[..2]).unwrap_err().contains("needs three"));
        // More steps at a larger batch: no floor.
        let rising = [(8.0, 100.0), (16.0, 120.0), (32.0, 140.0)];
        assert!(fit_steps(&rising).unwrap_err().contains("do not fall"));
    }

    /// Steps to every loss follow S = 100·k + 1600·k/B (B_crit 16 at every
    /// loss); the largest batch stops halfway, so the rungs below its lowest
    /// loss are measured by the three others, and each still finds 16.
    #[test]
    fn the_ladder_measures_below_the_loss_every_run_reaches() {
        let curve = |batch: u64, logs: u64| {
            let per_unit = 100.0 + 1600.0 / batch as f64;
            let records: Vec<TrainRecord> = (1..=logs)
                .map(|i| {
                    let step = (100.0 * per_unit * i as f64 / 20.0).round() as u64;
                    record(step, batch, 6.0 - 2.0 * i as f64 / 20.0)
                })
                .collect();
            RunCurve {
                run: format!("b{batch}"),
                batch: batch as f64,
                smooth: smoothed_losses(&records, 1),
                records,
            }
        };
        let runs = vec![curve(8, 40), curve(16, 40), curve(32, 40), curve(64, 20)];
        let model = model_batches(1e6, runs, None);
        assert_eq!(model.ladder.len(), RUNGS, "{model:?}");
        assert!((model.ladder[0].target_loss - model.target_loss).abs() < 1e-12);
        assert_eq!(model.ladder[0].reached, 4);
        assert_eq!(model.ladder[RUNGS - 1].reached, 3);
        for w in model.ladder.windows(2) {
            assert!(w[1].target_loss < w[0].target_loss, "{:?}", model.ladder);
        }
        for r in &model.ladder {
            let b = r.b_crit.expect("a line at every rung");
            assert!((b - 16.0).abs() < 0.2, "{r:?}");
            assert!(r.bracketed, "{r:?}");
        }
        let report = CriticalBatchReport {
            window: 1,
            models: vec![model],
        };
        assert!(report.table().contains("by target loss"));
        // Two runs cannot draw the line: no ladder.
        let two = model_batches(1e6, vec![curve(8, 40), curve(16, 40)], None);
        assert!(two.ladder.is_empty());
    }

    /// Runs whose steps halve with every doubling up to the largest batch put
    /// B_crit far above it: measured, but said to be an extrapolation.
    #[test]
    fn a_critical_batch_beyond_the_batches_run_is_flagged() {
        let curve = |batch: u64, steps_to: f64| {
            let records: Vec<TrainRecord> = (1..=40)
                .map(|i| {
                    let step = (steps_to * i as f64 / 20.0).round() as u64;
                    record(step, batch, 6.0 - 2.0 * i as f64 / 20.0)
                })
                .collect();
            RunCurve {
                run: format!("b{batch}"),
                batch: batch as f64,
                smooth: smoothed_losses(&records, 1),
                records,
            }
        };
        // Loss 4 at step S_min + 1600/B at batches 8-64: B_crit = 1600/S_min,
        // ≈ 533 (beyond 2 × 64) for S_min 3, 32 (inside) for S_min 50.
        let measure = |s_min: f64| {
            let runs = [8, 16, 32, 64].map(|b| curve(b, s_min + 1600.0 / b as f64));
            model_batches(1e6, runs.into(), Some(4.0))
        };
        let far = measure(3.0);
        assert!(far.b_crit.is_some_and(|b| b > 128.0), "{far:?}");
        assert!(!far.bracketed());
        assert!(
            far.notes.iter().any(|n| n.contains("beyond a factor 2")),
            "{:?}",
            far.notes
        );
        let near = measure(50.0);
        assert!(near.bracketed(), "{near:?}");
        assert!(
            !near.notes.iter().any(|n| n.contains("beyond")),
            "{:?}",
            near.notes
        );
    }
}
