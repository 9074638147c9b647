//! The critical batch measured down a ladder of losses: each rung from the
//! runs that reach it, so that the largest batches, which run out of steps
//! first, do not decide the loss it is measured at.

use super::{near_the_batches, AtTarget, RunCurve};
use serde::{Deserialize, Serialize};

/// The critical batch and the noise scale at one rung of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    pub target_loss: f64,
    /// Runs that reached it.
    pub reached: usize,
    /// Sequences, and tokens.
    pub b_crit: Option<f64>,
    pub b_crit_tokens: Option<f64>,
    /// Whether B_crit lies within a factor 2 of the batches that reached the target.
    pub bracketed: bool,
    pub b_simple: Option<f64>,
    /// B_simple in tokens (at the runs' tokens per sequence).
    #[serde(default)]
    pub b_simple_tokens: Option<f64>,
}

/// Rungs of the ladder below the common target.
pub(super) const RUNGS: usize = 6;

/// B_crit and B_simple at [`RUNGS`] losses from `top` (the loss every run
/// reaches) down to the lowest that three runs reach before the last tenth
/// of their steps: the critical batch grows as the loss falls (Kaplan et
/// al. 2020, B_crit(L)), and where the largest batches run out of steps
/// before a low target, the smaller ones still measure it. Empty for fewer
/// than three runs.
pub(super) fn ladder(runs: &[RunCurve], top: f64) -> Vec<Rung> {
    let mut lows: Vec<f64> = runs.iter().map(RunCurve::lowest_before_the_end).collect();
    lows.sort_by(f64::total_cmp);
    let Some(&bottom) = lows.get(2) else {
        return Vec::new();
    };
    // Losses a thousandth apart are one loss, not a ladder.
    if bottom >= top * (1.0 - 1e-3) {
        return Vec::new();
    }
    (0..RUNGS)
        .map(|i| {
            let target = top - (top - bottom) * i as f64 / (RUNGS - 1) as f64;
            let at = AtTarget::measure(runs, target);
            let reached = || {
                (at.runs.iter())
                    .filter(|r| r.steps.is_some())
                    .map(|r| r.batch)
            };
            Rung {
                target_loss: target,
                reached: reached().count(),
                b_crit: at.b_crit(),
                b_crit_tokens: at.b_crit_tokens(),
                bracketed: at.b_crit().is_some_and(|b| near_the_batches(b, reached())),
                b_simple: at.b_simple,
                b_simple_tokens: at.b_simple.zip(at.tokens_per_sequence).map(|(b, t)| b * t),
            }
        })
        .collect()
}
