//! The critical-batch sweep's charts (`cram scale batch`'s measurement):
//! McCandlish et al.'s steps against sequences, and B_crit against the loss.

use super::plot::{scale_color, Chart, Mark, Series, PALETTE};
use super::sweep::log_grid;
use crate::scaling::batch::{kaplan_critical_tokens, CriticalBatchReport};
use crate::scaling::fit::stats::extent;
use plotters::style::RGBColor;

/// Model `i`'s colour on the scale, the same in both charts.
fn model_color(report: &CriticalBatchReport, i: usize) -> RGBColor {
    scale_color(i as f64 / (report.models.len().max(2) as f64 - 1.0))
}

/// McCandlish et al.'s figure: steps against sequences to the target loss,
/// one dot per run, and each model's fitted S = S_min + E_min/B traced over
/// B (E = B·S), which bends between the two floors at B_crit.
pub(super) fn batch_chart(report: &CriticalBatchReport) -> Chart {
    let mut chart = Chart::new(
        "Steps and sequences to the target loss, by batch size",
        "sequences E to the target",
        "optimizer steps S to the target",
    )
    .log_log();
    for (i, m) in report.models.iter().enumerate() {
        let color = model_color(report, i);
        let runs: Vec<(f64, f64)> = m
            .runs
            .iter()
            .filter_map(|r| Some((r.steps? * r.batch, r.steps?)))
            .collect();
        let label = format!("N = {:.2e}, loss {:.3}", m.n_params, m.target_loss);
        chart = chart.with(Series::new(label, color, Mark::Dots, runs));
        if let (Some(s_min), Some(e_min)) = (m.s_min, m.e_min) {
            let (lo, hi) = extent(m.runs.iter().map(|r| r.batch));
            let curve = log_grid(lo / 4.0, hi * 4.0, 40)
                .into_iter()
                .map(|b| {
                    let s = s_min + e_min / b;
                    (b * s, s)
                })
                .collect();
            chart = chart.with(Series::unnamed(color, Mark::Dashed, curve));
        }
    }
    chart
}

/// B_crit (dots) and B_simple (lines) in tokens against the target loss,
/// from each model's ladder, beside Kaplan et al.'s B_crit(L) (dashed);
/// `None` when no model has a ladder.
pub(super) fn batch_loss_chart(report: &CriticalBatchReport) -> Option<Chart> {
    let losses: Vec<f64> = (report.models.iter())
        .flat_map(|m| m.ladder.iter().map(|r| r.target_loss))
        .collect();
    if losses.is_empty() {
        return None;
    }
    let mut chart = Chart::new(
        "Critical batch against the loss it is measured at",
        "target loss (nats)",
        "tokens per step",
    )
    .log_log();
    for (i, m) in report.models.iter().enumerate() {
        let color = model_color(report, i);
        let pick = |f: fn(&crate::scaling::batch::Rung) -> Option<f64>| -> Vec<(f64, f64)> {
            (m.ladder.iter())
                .filter_map(|r| Some((r.target_loss, f(r)?)))
                .collect()
        };
        let n = format!("N = {:.2e}", m.n_params);
        chart = chart
            .with(Series::new(
                format!("B_crit, {n}"),
                color,
                Mark::Dots,
                pick(|r| r.b_crit_tokens.filter(|_| r.bracketed)),
            ))
            .with(Series::new(
                format!("B_simple, {n}"),
                color,
                Mark::Line,
                pick(|r| r.b_simple_tokens),
            ));
    }
    let (lo, hi) = extent(losses.iter().copied());
    let kaplan = log_grid(lo, hi.max(lo * 1.01), 20)
        .into_iter()
        .map(|l| (l, kaplan_critical_tokens(l)))
        .collect();
    Some(chart.with(Series::new(
        "Kaplan et al. B_crit(L) = 2e8 / L^(1/0.21)",
        PALETTE[1],
        Mark::Dashed,
        kaplan,
    )))
}
