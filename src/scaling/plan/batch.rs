//! The plan's batch size: from the critical batch a batch sweep measured
//! (`cram scale batch`), else from the gradient noise scale the sweep
//! logged, else from Kaplan et al.'s B_crit(L), each at a predicted loss.

use crate::scaling::batch::{kaplan_critical_tokens, CriticalBatchReport, KAPLAN_BATCH_SLOPE};
use crate::scaling::fit::stats::{extent, fit_line};
use crate::scaling::points::PointSet;
use serde::Serialize;

/// The batch size at `loss`: from `critical` when one of them counts (a
/// measured critical batch outranks the noise scale, its estimate), else
/// from the sweep's noise scale, else from Kaplan et al.'s B_crit(L).
pub(super) fn advice(
    critical: &[MeasuredCritical],
    points: Option<&PointSet>,
    loss: f64,
    seq_len: usize,
) -> BatchAdvice {
    critical_batch_advice(critical, loss, seq_len)
        .unwrap_or_else(|| batch_advice(points, loss, seq_len))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchAdvice {
    /// Sequences per optimizer step.
    pub sequences: f64,
    pub tokens: f64,
    pub source: String,
}

/// A critical batch measured by `cram scale batch`: `tokens` per step at
/// `loss`, and whether it lies within a factor 2 of the batch sizes run
/// (beyond that the line S = S_min + E_min/B extrapolates it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredCritical {
    pub loss: f64,
    pub tokens: f64,
    pub bracketed: bool,
}

impl MeasuredCritical {
    /// The critical batches of a `cram scale batch` report: each model's at
    /// its target loss, then those of its ladder below it (B_crit(L) from
    /// the runs that reach each lower loss).
    pub fn of(report: &CriticalBatchReport) -> Vec<MeasuredCritical> {
        let mut measured = Vec::new();
        for m in &report.models {
            if let Some(tokens) = m.b_crit_tokens {
                measured.push(MeasuredCritical {
                    loss: m.target_loss,
                    tokens,
                    bracketed: m.bracketed(),
                });
            }
            for r in m.ladder.iter().filter(|r| r.target_loss < m.target_loss) {
                if let Some(tokens) = r.b_crit_tokens {
                    measured.push(MeasuredCritical {
                        loss: r.target_loss,
                        tokens,
                        bracketed: r.bracketed,
                    });
                }
            }
        }
        measured
    }
}

/// B_crit against loss through the bracketed measured critical batches, at
/// `loss`: a power law through them when they span losses a fifth apart and
/// its slope is plausible (between −10 and −1; Kaplan et al. measured
/// −4.8), else Kaplan's slope through their mean; `None` without any.
fn critical_batch_advice(
    measured: &[MeasuredCritical],
    loss: f64,
    seq_len: usize,
) -> Option<BatchAdvice> {
    let logs: Vec<(f64, f64)> = (measured.iter())
        .filter(|m| m.bracketed && m.loss > 0.0 && m.tokens > 0.0)
        .map(|m| (m.loss.ln(), m.tokens.ln()))
        .collect();
    if logs.is_empty() {
        return None;
    }
    let left_out = measured.len() - logs.len();
    let (lo, hi) = extent(logs.iter().map(|p| p.0));
    let line =
        fit_line(&logs).filter(|l| hi - lo >= 1.2f64.ln() && (-10.0..=-1.0).contains(&l.slope));
    let (ln_b, how) = match line {
        Some(line) => (
            line.at(loss.ln()),
            format!("a power law through them (B ∝ L^{:.2})", line.slope),
        ),
        None => {
            let n = logs.len() as f64;
            let (mx, my) = logs
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
            (
                my + KAPLAN_BATCH_SLOPE * (loss.ln() - mx),
                "Kaplan et al.'s slope B ∝ L^(−1/0.21) through them".into(),
            )
        }
    };
    let skipped = if left_out > 0 {
        format!(
            " ({left_out} more left out: outside the batch sizes their sweep ran, so extrapolated)"
        )
    } else {
        String::new()
    };
    let tokens = ln_b.exp();
    Some(BatchAdvice {
        sequences: tokens / seq_len as f64,
        tokens,
        source: format!(
            "the critical batch measured at {} loss(es) ({:.3}–{:.3}, `cram scale batch`){skipped}, \
             with {how}, at the predicted loss {loss:.3}",
            logs.len(),
            lo.exp(),
            hi.exp()
        ),
    })
}

/// B_noise against loss as a power law through the sweep's measurements,
/// evaluated at `loss`; Kaplan et al.'s B_crit(L) = 2·10⁸ tokens / L^(1/0.21)
/// when the sweep measured none.
fn batch_advice(points: Option<&PointSet>, loss: f64, seq_len: usize) -> BatchAdvice {
    let measured: Vec<(f64, f64)> = points
        .map(|s| {
            s.points
                .iter()
                .filter_map(|p| Some((p.loss.ln(), p.noise_scale.filter(|b| *b > 0.0)?.ln())))
                .collect()
        })
        .unwrap_or_default();
    if let Some(line) = fit_line(&measured) {
        let sequences = line.at(loss.ln()).exp();
        return BatchAdvice {
            sequences,
            tokens: sequences * seq_len as f64,
            source: format!(
                "gradient noise scale B_simple measured in {} runs of the sweep, as a power law in the loss \
                 (B ∝ L^{:.2}), at the predicted loss {loss:.3}",
                measured.len(),
                line.slope
            ),
        };
    }
    if let [(_, b)] = measured.as_slice() {
        let sequences = b.exp();
        return BatchAdvice {
            sequences,
            tokens: sequences * seq_len as f64,
            source: "the gradient noise scale B_simple of the sweep's one measured run".into(),
        };
    }
    let tokens = kaplan_critical_tokens(loss);
    BatchAdvice {
        sequences: tokens / seq_len as f64,
        tokens,
        source: format!(
            "Kaplan et al.'s B_crit(L) = 2e8 tokens / L^(1/0.21), fitted on GPT-2 text, at the \
             predicted loss {loss:.3}; nothing was measured on this data (pass --batch with a batch \
             sweep's folder, or sweep with measure_noise_scale = true)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_critical_batch_follows_the_loss() {
        let at = |loss, tokens| MeasuredCritical {
            loss,
            tokens,
            bracketed: true,
        };
        // Two measurements on B = 1e6 · L^−4: the law comes back at any loss.
        let two = [at(4.0, 1e6 / 256.0), at(2.0, 1e6 / 16.0)];
        let b = critical_batch_advice(&two, 3.0, 1000).unwrap();
        assert!((b.tokens / (1e6 / 81.0) - 1.0).abs() < 1e-9, "{b:?}");
        assert!((b.sequences - b.tokens / 1000.0).abs() < 1e-9);
        assert!(b.source.contains("L^-4.00"), "{}", b.source);
        // One measurement: Kaplan's slope through it.
        let kaplan = |l: f64, b: f64, at_l: f64| b * (at_l / l).powf(-1.0 / 0.21);
        let one = critical_batch_advice(&[at(4.0, 1e5)], 3.0, 1000).unwrap();
        assert!(
            (one.tokens / kaplan(4.0, 1e5, 3.0) - 1.0).abs() < 1e-9,
            "{one:?}"
        );
        assert!(one.source.contains("Kaplan"), "{}", one.source);
        // Losses 9% apart with a slope of −42 (what an extrapolated B_crit gave
        // on the CPU probe) say nothing about the slope: Kaplan's through them.
        let steep = [at(5.067, 3.4e3), at(4.662, 1.1e5)];
        let b = critical_batch_advice(&steep, 2.3, 32).unwrap();
        assert!(b.source.contains("Kaplan"), "{}", b.source);
        // A batch beyond the sweep's range is left out, and said to be.
        let mut beyond = at(4.662, 1.1e5);
        beyond.bracketed = false;
        let b = critical_batch_advice(&[at(5.067, 3.4e3), beyond], 3.0, 32).unwrap();
        assert!(
            (b.tokens / kaplan(5.067, 3.4e3, 3.0) - 1.0).abs() < 1e-9,
            "{b:?}"
        );
        assert!(b.source.contains("1 more left out"), "{}", b.source);
        assert!(critical_batch_advice(&[beyond], 3.0, 32).is_none());
        assert!(critical_batch_advice(&[], 3.0, 1000).is_none());
    }
}
