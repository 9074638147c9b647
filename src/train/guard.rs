//! The divergence guard (`[guard]`, [`GuardConfig`]). The device skips every
//! step whose gradient norm is not finite and counts it in the statistics
//! buffer (see [`crate::backend::AdamW::skipped_slot`]); the trainer reads the
//! count with the statistics it logs, so the guard costs no read-back of its
//! own. This file holds the policy the trainer applies to that count and the
//! rollback it may decide on.

use super::checkpoint::{self, TrainState};
use super::metrics::{MetricsWriter, Record};
use super::progress::Reporter;
use super::trainer::{log_record, TrainError};
use crate::backend::Backend;
use crate::config::GuardConfig;
use crate::model::Model;
use crate::parallel::DataParallel;
use std::collections::VecDeque;
use std::path::Path;

/// What the run does after a read-back that found skipped steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer than `skip_limit` since the newest checkpoint: train on.
    Continue,
    /// Back to the newest checkpoint with a lower learning rate.
    RollBack,
    /// `max_rollbacks` used up: stop with an error.
    Stop,
}

/// What the guard acts on: the backend, the run (folder, model, seed), its
/// state, its data-parallel group, and where events go (rank 0's metrics
/// writer, `None` on the other ranks; the progress output).
pub(super) struct Scene<'a, 'g, B: Backend> {
    pub be: &'a B,
    pub run: (&'a Path, &'a Model, u64),
    pub state: &'a mut TrainState<B>,
    pub dist: Option<&'a DataParallel<'g>>,
    pub metrics: Option<&'a mut MetricsWriter>,
    pub reporter: &'a mut Reporter,
}

/// Logged losses a spike is judged against at the least: the first few
/// logs of a run fall fast and say little about its level.
const SPIKE_MIN_HISTORY: usize = 5;

/// Skipped steps since the newest checkpoint, against the limits, and the
/// recent logged losses a spike is measured against.
#[derive(Debug, Clone)]
pub struct Guard {
    cfg: GuardConfig,
    since_checkpoint: u64,
    recent: VecDeque<f64>,
}

impl Guard {
    pub fn new(cfg: &GuardConfig) -> Self {
        Guard {
            cfg: cfg.clone(),
            since_checkpoint: 0,
            recent: VecDeque::new(),
        }
    }

    /// Takes the `skipped` steps of the last logging interval; `rollbacks`
    /// is how many the run has made so far.
    pub fn after_read(&mut self, skipped: u64, rollbacks: u32) -> Verdict {
        self.since_checkpoint += skipped;
        if self.since_checkpoint < self.cfg.skip_limit as u64 {
            Verdict::Continue
        } else {
            self.rollback_or_stop(rollbacks)
        }
    }

    fn rollback_or_stop(&self, rollbacks: u32) -> Verdict {
        if rollbacks >= self.cfg.max_rollbacks {
            Verdict::Stop
        } else {
            Verdict::RollBack
        }
    }

    /// Takes a finite logged loss: `Some(mean)` when it is a spike, above
    /// `spike_factor` times the mean of the last `spike_window` logged
    /// losses (a spike does not join them); `None` otherwise.
    pub fn spike(&mut self, loss: f64) -> Option<f64> {
        let window = self.cfg.spike_window as usize;
        if self.cfg.spike_factor > 0.0 && self.recent.len() >= SPIKE_MIN_HISTORY.min(window) {
            let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
            if loss > self.cfg.spike_factor * mean {
                return Some(mean);
            }
        }
        self.recent.push_back(loss);
        while self.recent.len() > window {
            self.recent.pop_front();
        }
        None
    }

    /// A checkpoint was written or restored: the count starts again.
    pub fn reset(&mut self) {
        self.since_checkpoint = 0;
    }

    pub fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Takes the `skipped` steps a read-back at logging step `step` found:
    /// records them (metrics.jsonl and the progress output), then rolls
    /// `state` back or stops the run as [`Guard::after_read`] decides.
    /// `Ok(true)` when it rolled back (the step's evaluation and checkpoint
    /// are then left out).
    pub(super) fn handle<B: Backend>(
        &mut self,
        (skipped, step): (u64, u64),
        mut scene: Scene<'_, '_, B>,
    ) -> Result<bool, TrainError> {
        let verdict = self.after_read(skipped, scene.state.progress.rollbacks);
        let record = Record::Skip {
            step,
            skipped,
            since_checkpoint: self.since_checkpoint,
        };
        log_record(scene.metrics.as_deref_mut(), &record)?;
        scene.reporter.event(&format!(
            "step {step}: {skipped} step(s) with a non-finite gradient norm skipped (no update), {} since the newest checkpoint",
            self.since_checkpoint
        ));
        let cause = format!(
            "the gradient norm had not been finite in {} steps since the newest checkpoint",
            self.since_checkpoint
        );
        self.act(verdict, (step, &cause), scene)
    }

    /// Takes a spike found at logging step `step` (the interval's mean loss
    /// `loss` against the recent `mean`): records it, then rolls `state`
    /// back, or stops the run when the rollbacks are used up. `Ok(true)`
    /// when it rolled back.
    pub(super) fn handle_spike<B: Backend>(
        &mut self,
        (loss, mean, step): (f64, f64, u64),
        mut scene: Scene<'_, '_, B>,
    ) -> Result<bool, TrainError> {
        let record = Record::Spike {
            step,
            loss,
            running_mean: mean,
        };
        log_record(scene.metrics.as_deref_mut(), &record)?;
        let cause = format!(
            "the loss spiked to {loss:.4}, above {} times the mean of the last {} logged losses ({mean:.4})",
            self.cfg.spike_factor,
            self.recent.len()
        );
        scene.reporter.event(&format!("step {step}: {cause}"));
        let verdict = self.rollback_or_stop(scene.state.progress.rollbacks);
        self.act(verdict, (step, &cause), scene)
    }

    /// Carries out `verdict` for a failure at `step` described by `cause`.
    fn act<B: Backend>(
        &mut self,
        verdict: Verdict,
        (step, cause): (u64, &str),
        scene: Scene<'_, '_, B>,
    ) -> Result<bool, TrainError> {
        let Scene {
            be,
            run,
            state,
            dist,
            metrics,
            reporter,
        } = scene;
        match verdict {
            Verdict::Continue => Ok(false),
            Verdict::Stop => Err(TrainError::Run(self.stop_message(
                step,
                cause,
                state.progress.lr_scale,
            ))),
            Verdict::RollBack => {
                let back = roll_back(be, run, state, self.cfg.lr_factor, dist)?;
                for w in back.warnings.iter().filter(|_| metrics.is_some()) {
                    eprintln!("warning: {w}");
                }
                self.reset();
                // The restored weights are older: their losses start a new history.
                self.recent.clear();
                let p = &state.progress;
                let record = Record::Rollback {
                    step,
                    to_step: back.to_step,
                    lr_scale: p.lr_scale,
                    rollbacks: p.rollbacks,
                };
                log_record(metrics, &record)?;
                reporter.event(&format!(
                    "step {step}: rolled back to step {} with the learning rate at {} of its schedule \
                     (rollback {} of at most {}); the batches read since are not read again",
                    back.to_step, p.lr_scale, p.rollbacks, self.cfg.max_rollbacks
                ));
                Ok(true)
            }
        }
    }

    /// Why the run stops, in one sentence that names the settings to change.
    pub fn stop_message(&self, step: u64, cause: &str, lr_scale: f64) -> String {
        format!(
            "at step {step} {cause}, after {} rollback(s) that left the learning rate at {lr_scale} of \
             its schedule; the run stops here. Resume with a lower train.lr (cram pretrain --resume --out \
             RUN --set train.lr=...) or allow more with guard.max_rollbacks",
            self.cfg.max_rollbacks
        )
    }
}

/// Where a rollback went: the step it restarted from, and warnings about
/// damaged checkpoints it passed over.
#[derive(Debug)]
pub struct RolledBack {
    pub to_step: u64,
    pub warnings: Vec<String>,
}

/// Replaces `state` by the newest intact checkpoint of `run` (the seed's
/// initialisation when there is none yet), keeping the data position and
/// the budget spent (the lost steps were paid for; their batches are not
/// read again) and multiplying the learning-rate scale by `lr_factor`.
/// Every rank of a group calls it: each one loads and adopts the same state.
pub fn roll_back<B: Backend>(
    be: &B,
    (run, model, seed): (&Path, &Model, u64),
    state: &mut TrainState<B>,
    lr_factor: f64,
    dist: Option<&DataParallel>,
) -> Result<RolledBack, TrainError> {
    let (mut restored, warnings) = if checkpoint::latest(run).is_some() {
        checkpoint::load_newest_intact(be, run, model)?
    } else {
        (TrainState::fresh(be, model, seed), Vec::new())
    };
    if let Some(dp) = dist {
        dp.adopt_weights(be, &mut restored.weights);
    }
    let to_step = restored.progress.step;
    restored.progress.position = state.progress.position;
    restored.progress.spent = state.progress.spent;
    restored.progress.lr_scale = state.progress.lr_scale * lr_factor;
    restored.progress.rollbacks = state.progress.rollbacks + 1;
    *state = restored;
    Ok(RolledBack { to_step, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(skip_limit: u32, max_rollbacks: u32) -> Guard {
        Guard::new(&GuardConfig {
            skip_limit,
            max_rollbacks,
            lr_factor: 0.5,
            ..GuardConfig::default()
        })
    }

    #[test]
    fn skips_below_the_limit_continue_then_roll_back_then_stop() {
        let mut g = guard(3, 1);
        assert_eq!(g.after_read(1, 0), Verdict::Continue);
        assert_eq!(g.after_read(1, 0), Verdict::Continue);
        assert_eq!(g.after_read(1, 0), Verdict::RollBack);
        g.reset();
        assert_eq!(g.after_read(2, 1), Verdict::Continue);
        assert_eq!(g.after_read(5, 1), Verdict::Stop);
    }

    #[test]
    fn a_checkpoint_clears_the_count() {
        let mut g = guard(2, 3);
        assert_eq!(g.after_read(1, 0), Verdict::Continue);
        g.reset();
        assert_eq!(g.after_read(1, 0), Verdict::Continue);
        assert_eq!(g.since_checkpoint(), 1);
    }

    #[test]
    fn no_rollbacks_allowed_stops_at_the_limit() {
        let mut g = guard(1, 0);
        assert_eq!(g.after_read(1, 0), Verdict::Stop);
        assert!(g
            .stop_message(7, "it failed", 1.0)
            .contains("guard.max_rollbacks"));
    }

    #[test]
    fn a_loss_above_twice_the_recent_mean_is_a_spike() {
        let mut g = guard(3, 3);
        // The first logs only fill the history, however they move.
        for loss in [10.0, 8.0, 30.0, 7.0, 6.0] {
            assert_eq!(g.spike(loss), None);
        }
        // The mean of 10, 8, 30, 7, 6 is 12.2: 20 is not twice it, 25 is.
        assert_eq!(g.spike(20.0), None);
        let mean = (10.0 + 8.0 + 30.0 + 7.0 + 6.0 + 20.0) / 6.0;
        assert_eq!(g.spike(2.0 * mean + 0.1), Some(mean));
        // A spike does not join the history.
        assert_eq!(g.spike(2.0 * mean + 0.1), Some(mean));
    }

    #[test]
    fn the_spike_window_keeps_the_last_losses_and_zero_turns_it_off() {
        let mut g = Guard::new(&GuardConfig {
            spike_window: 5,
            ..GuardConfig::default()
        });
        for _ in 0..10 {
            assert_eq!(g.spike(100.0), None);
        }
        for _ in 0..5 {
            assert_eq!(g.spike(4.0), None);
        }
        // Only the last five (all 4.0) count now.
        assert_eq!(g.spike(9.0), Some(4.0));
        let mut off = Guard::new(&GuardConfig {
            spike_factor: 0.0,
            ..GuardConfig::default()
        });
        for loss in [1.0, 1.0, 1.0, 1.0, 1.0, 1e6] {
            assert_eq!(off.spike(loss), None);
        }
    }
}
