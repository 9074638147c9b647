//! What a pretraining run is asked to do beyond its config, and what it
//! reports when it returns.

use super::progress::Progress;
use crate::eval::EvalResult;
use std::path::PathBuf;

/// How to run, beyond the config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps, as if preempted.
    pub stop_after_steps: Option<u64>,
    pub progress: Progress,
    /// Log the gradient noise scale B_simple (see [`super::noise`]):
    /// one extra gradient-norm pass and one read-back per step.
    pub measure_noise_scale: bool,
    /// Fault injection for tests of the divergence guard: the n-th step the
    /// run takes (1-based, counting steps later lost to rollbacks) gets a NaN
    /// in its gradient. Empty in normal use.
    pub nan_gradient_at: Vec<u64>,
    /// Fault injection for tests of the spike check: after the n-th step the
    /// run takes (1-based, as above), every weight is multiplied by 25.
    pub perturb_weights_at: Vec<u64>,
}

impl RunOptions {
    /// A fresh run into `out`, quiet, with nothing injected: the start that
    /// callers change field by field (`RunOptions { resume: true, ..RunOptions::new(out) }`).
    pub fn new(out: impl Into<PathBuf>) -> Self {
        RunOptions {
            out: out.into(),
            resume: false,
            stop_after_steps: None,
            progress: Progress::Off,
            measure_noise_scale: false,
            nan_gradient_at: Vec::new(),
            perturb_weights_at: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub final_loss: f64,
    pub eval: Option<EvalResult>,
    pub checkpoint: PathBuf,
    /// False when the run stopped early (`stop_after_steps`).
    pub finished: bool,
}
