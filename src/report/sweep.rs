//! The report of a sweep: training curves coloured by model size, IsoFLOP
//! profiles with their parabolas, the compute frontier with the fitted laws,
//! the parametric fit's iso-loss contours over (N, D), and the residuals.
//! It uses `fit.json` when `cram scale fit` wrote one, and otherwise fits the
//! points itself without intervals.

use super::batch_charts::{batch_chart, batch_loss_chart};
use super::html::{Figure, Page};
use super::plot::{scale_color, Chart, Mark, Series, PALETTE};
use super::{write_report, ReportError, Written};
use crate::scaling::batch::{measure as measure_batches, DEFAULT_WINDOW};
use crate::scaling::fit::{fit_all, isoflop_levels, FitOptions, FitReport, Parametric, FIT_FILE};
use crate::scaling::points::{distinct, PointSet};
use std::path::Path;

/// Position of `n` between the smallest and largest size, in log space.
fn size_position(sizes: &[f64], n: f64) -> f64 {
    let (lo, hi) = (sizes[0].ln(), sizes[sizes.len() - 1].ln());
    if hi > lo {
        (n.ln() - lo) / (hi - lo)
    } else {
        0.5
    }
}

pub(super) fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (lo.ln() + (hi.ln() - lo.ln()) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

fn load_fit(dir: &Path, set: &PointSet, notes: &mut Vec<String>) -> Option<FitReport> {
    let path = dir.join(FIT_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str(&text) {
            Ok(fit) => return Some(fit),
            Err(e) => notes.push(format!(
                "{} is unreadable ({e}); fitted again",
                path.display()
            )),
        }
    }
    match fit_all(
        set,
        FitOptions {
            bootstrap: 0,
            seed: 0,
            max_loss: crate::scaling::plateau::SweepData::read(dir)
                .ok()
                .flatten()
                .map(|d| d.plateau_cut()),
        },
    ) {
        Ok(fit) => {
            notes.push(
                "no fit.json: fitted here without intervals (run `cram scale fit` for them)".into(),
            );
            Some(fit)
        }
        Err(e) => {
            notes.push(format!("no fit drawn: {e}"));
            None
        }
    }
}

fn curves_chart(set: &PointSet, sizes: &[f64], by_compute: bool) -> Chart {
    let (title, x) = if by_compute {
        ("held-out loss vs compute", "compute C (FLOPs)")
    } else {
        ("held-out loss vs tokens", "tokens D")
    };
    let mut chart = Chart::new(title, x, "held-out loss (nats)").log_log();
    let mut labelled = Vec::new();
    for c in &set.curves {
        let color = scale_color(size_position(sizes, c.n_params));
        let pts = c
            .samples
            .iter()
            .map(|(t, l)| {
                (
                    if by_compute {
                        t * c.flops_per_token
                    } else {
                        *t
                    },
                    *l,
                )
            })
            .collect();
        // A run evaluated only at its end has a one-sample curve, which a line
        // would not draw.
        let mark = if c.samples.len() < 2 {
            Mark::Dots
        } else {
            Mark::Line
        };
        // One legend entry per size.
        if labelled.contains(&c.n_params.to_bits()) {
            chart = chart.with(Series::unnamed(color, mark, pts));
        } else {
            labelled.push(c.n_params.to_bits());
            chart = chart.with(Series::new(
                format!("N = {:.2e}", c.n_params),
                color,
                mark,
                pts,
            ));
        }
    }
    if set.curves.is_empty() {
        for p in &set.points {
            let color = scale_color(size_position(sizes, p.n_params));
            let x = if by_compute { p.compute } else { p.tokens };
            chart = chart.with(Series::unnamed(color, Mark::Dots, vec![(x, p.loss)]));
        }
    }
    chart
}

fn frontier_loss_chart(set: &PointSet, sizes: &[f64], fit: Option<&FitReport>) -> Chart {
    let mut chart = curves_chart(set, sizes, true);
    chart.title = "compute frontier: lower envelope and L(C) = (C_c/C)^α_C".into();
    if let Some(f) = fit.and_then(|f| f.kaplan.frontier.as_ref()) {
        let env: Vec<(f64, f64)> = f.envelope.iter().map(|p| (p.compute, p.loss)).collect();
        let (lo, hi) = (
            set.points
                .iter()
                .map(|p| p.compute)
                .fold(f64::INFINITY, f64::min),
            env.iter().map(|p| p.0).fold(0.0, f64::max),
        );
        let law: Vec<(f64, f64)> = log_grid(
            lo.min(env.first().map_or(lo, |p| p.0)),
            hi.max(lo * 10.0),
            50,
        )
        .into_iter()
        .map(|c| (c, (f.c_c.value / c).powf(f.alpha_c.value)))
        .collect();
        chart = chart
            .with(Series::new("envelope", PALETTE[1], Mark::Dots, env))
            .with(Series::new(
                format!("fit: α_C = {:.3}", f.alpha_c.value),
                PALETTE[1],
                Mark::Dashed,
                law,
            ));
    } else {
        // No law (the fit says why), but the runs' own frontier still shows.
        chart.title = "compute frontier: lower envelope of the runs (no law fitted)".into();
        chart = chart.with(Series::new(
            "lower envelope of the runs",
            PALETTE[1],
            Mark::Line,
            final_envelope(set),
        ));
    }
    chart
}

/// The final points no cheaper run beats: (compute, loss) by rising compute.
fn final_envelope(set: &PointSet) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = set.points.iter().map(|p| (p.compute, p.loss)).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = f64::INFINITY;
    pts.into_iter()
        .filter(|&(_, loss)| {
            let better = loss < best;
            best = best.min(loss);
            better
        })
        .collect()
}

fn isoflop_chart(set: &PointSet, fit: Option<&FitReport>) -> Chart {
    let mut chart = Chart::new(
        "IsoFLOP profiles (N with embeddings)",
        "parameters N",
        "held-out loss (nats)",
    )
    .log_x();
    match fit.and_then(|f| f.chinchilla.approach2.as_ref()) {
        Some(a2) => {
            let k = a2.levels.len().max(2) as f64 - 1.0;
            for (i, level) in a2.levels.iter().enumerate() {
                let color = scale_color(i as f64 / k);
                // The parabola only where it was fitted: near the level's best run.
                let (lo, hi) = level.window.map_or_else(
                    || {
                        level
                            .runs
                            .iter()
                            .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                                (lo.min(r.0), hi.max(r.0))
                            })
                    },
                    |[lo, hi]| (lo, hi),
                );
                let [c0, c1, c2] = level.parabola;
                let curve = log_grid(lo, hi, 40)
                    .into_iter()
                    .map(|n| (n, c0 + c1 * n.ln() + c2 * n.ln() * n.ln()))
                    .collect();
                chart = chart
                    .with(Series::new(
                        format!("C = {:.2e}", level.compute),
                        color,
                        Mark::Dots,
                        level.runs.clone(),
                    ))
                    .with(Series::unnamed(color, Mark::Dashed, curve))
                    .with(Series::unnamed(
                        PALETTE[1],
                        Mark::Dots,
                        vec![(level.n_opt, level.loss_opt)],
                    ));
            }
        }
        None => {
            let levels: Vec<_> = isoflop_levels(&set.points)
                .into_iter()
                .filter(|l| l.len() > 1)
                .collect();
            let k = levels.len().max(2) as f64 - 1.0;
            for (i, level) in levels.iter().enumerate() {
                let pts = level.iter().map(|p| (p.n_total, p.loss)).collect();
                chart = chart.with(Series::new(
                    format!("C ≈ {:.2e}", level[0].compute),
                    scale_color(i as f64 / k),
                    Mark::Dots,
                    pts,
                ));
            }
        }
    }
    chart
}

fn optimum_chart(set: &PointSet, fit: &FitReport) -> Chart {
    let lo = set
        .points
        .iter()
        .map(|p| p.compute)
        .fold(f64::INFINITY, f64::min);
    let hi = set.points.iter().map(|p| p.compute).fold(0.0, f64::max);
    let grid = log_grid(lo, hi.max(lo * 10.0), 40);
    let mut chart =
        Chart::new("compute-optimal model size", "compute C (FLOPs)", "N_opt").log_log();
    if let Some(f) = &fit.kaplan.frontier {
        let env = f.envelope.iter().map(|p| (p.compute, p.n)).collect();
        let line = grid
            .iter()
            .map(|c| {
                (
                    *c,
                    (f.n_log_coefficient + f.optimal_n_exponent.value * c.ln()).exp(),
                )
            })
            .collect();
        chart = chart
            .with(Series::new(
                "envelope (non-embedding N)",
                PALETTE[0],
                Mark::Dots,
                env,
            ))
            .with(Series::new(
                format!("Kaplan frontier: a = {:.3}", f.optimal_n_exponent.value),
                PALETTE[0],
                Mark::Dashed,
                line,
            ));
    }
    if let Some(a2) = &fit.chinchilla.approach2 {
        let vertices = a2.levels.iter().map(|l| (l.compute, l.n_opt)).collect();
        let line = grid
            .iter()
            .map(|c| {
                (
                    *c,
                    (a2.n_log_coefficient + a2.optimal_n_exponent.value * c.ln()).exp(),
                )
            })
            .collect();
        chart = chart
            .with(Series::new(
                "IsoFLOP minima (total N)",
                PALETTE[2],
                Mark::Dots,
                vertices,
            ))
            .with(Series::new(
                format!("approach 2: a = {:.3}", a2.optimal_n_exponent.value),
                PALETTE[2],
                Mark::Dashed,
                line,
            ));
    }
    let Some(law) = fit.chinchilla.parametric() else {
        return chart;
    };
    let line = grid.iter().map(|c| (*c, law.optimum(*c).0)).collect();
    chart.with(Series::new(
        format!("approach 3: a = {:.3}", law.optimal_n_exponent()),
        PALETTE[1],
        Mark::Dashed,
        line,
    ))
}

/// Iso-loss lines of L = E + A/N^α + B/D^β: D(N) = (B / (L − E − A/N^α))^(1/β).
fn contour_chart(set: &PointSet, fit: &FitReport, law: Parametric) -> Chart {
    let (n_lo, n_hi) = set
        .points
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.n_total), hi.max(p.n_total))
        });
    let (d_lo, d_hi) = set
        .points
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.tokens), hi.max(p.tokens))
        });
    let mut losses: Vec<f64> = set.points.iter().map(|p| p.loss).collect();
    losses.sort_by(f64::total_cmp);
    let mut chart = Chart::new(
        "approach 3: iso-loss contours over (N, D)",
        "parameters N (with embeddings)",
        "tokens D",
    )
    .log_log();
    let levels = 7;
    for i in 0..levels {
        let target = losses[(i * (losses.len() - 1)) / (levels - 1)];
        let line: Vec<(f64, f64)> = log_grid(n_lo / 2.0, n_hi * 2.0, 80)
            .into_iter()
            .filter_map(|n| {
                let rest = target - law.e - law.a / n.powf(law.alpha);
                (rest > 0.0).then(|| (n, (law.b / rest).powf(1.0 / law.beta)))
            })
            .filter(|(_, d)| *d >= d_lo / 4.0 && *d <= d_hi * 4.0)
            .collect();
        chart = chart.with(Series::new(
            format!("L = {target:.3}"),
            scale_color(i as f64 / (levels - 1) as f64),
            Mark::Line,
            line,
        ));
    }
    let optimal: Vec<(f64, f64)> =
        log_grid(fit.compute_range[0] / 4.0, fit.compute_range[1] * 4.0, 40)
            .into_iter()
            .map(|c| law.optimum(c))
            .filter(|(n, _)| *n >= n_lo / 2.0 && *n <= n_hi * 2.0)
            .collect();
    let runs = set.points.iter().map(|p| (p.n_total, p.tokens)).collect();
    chart
        .with(Series::new("runs", PALETTE[0], Mark::Dots, runs))
        .with(Series::new(
            "compute-optimal N, D",
            PALETTE[1],
            Mark::Dashed,
            optimal,
        ))
}

fn residual_chart(fit: &FitReport) -> Chart {
    let k = fit
        .kaplan
        .residuals
        .points
        .iter()
        .map(|r| (r.n, r.residual))
        .collect();
    let chart = Chart::new("residuals ln(L / fit)", "parameters N", "ln(L) − ln(fit)")
        .log_x()
        .with(Series::new(
            "Kaplan joint L(N,D) (non-embedding N)",
            PALETTE[0],
            Mark::Dots,
            k,
        ));
    match &fit.chinchilla.residuals {
        Some(r) => chart.with(Series::new(
            "Chinchilla approach 3 (total N)",
            PALETTE[1],
            Mark::Dots,
            r.points.iter().map(|r| (r.n, r.residual)).collect(),
        )),
        None => chart,
    }
}

pub fn report(dir: &Path) -> Result<Written, ReportError> {
    let set = PointSet::read_dir(dir)?;
    let mut notes = Vec::new();
    let fit = load_fit(dir, &set, &mut notes);
    let sizes = distinct(
        set.points
            .iter()
            .map(|p| p.n_params)
            .chain(set.curves.iter().map(|c| c.n_params)),
    );
    let mut charts: Vec<(&str, &str, Chart)> = vec![
        ("curves.svg", "Held-out loss during training, one line per run, coloured by non-embedding size (purple small, yellow large).", curves_chart(&set, &sizes, false)),
        ("frontier_loss.svg", "Loss against compute C = 6ND + 6·n_layer·n_ctx·d_model·D: the lower envelope of all runs and the power law through it.", frontier_loss_chart(&set, &sizes, fit.as_ref())),
        ("isoflop.svg", "IsoFLOP profiles: final loss against size at each compute level, with the fitted parabolas and their minima (approach 2).", isoflop_chart(&set, fit.as_ref())),
    ];
    if let Some(f) = &fit {
        charts.push((
            "optimal_n.svg",
            "Compute-optimal size against compute, measured and as each fit predicts.",
            optimum_chart(&set, f),
        ));
        match f.chinchilla.parametric() {
            Some(law) => charts.push(("contours.svg", "Contours of the parametric fit L = E + A/N^α + B/D^β (approach 3), the runs, and its compute-optimal path.", contour_chart(&set, f, law))),
            None => notes.push("no contour plot: approach 3 was not fitted (fit.json's notes say why)".into()),
        }
        charts.push((
            "residuals.svg",
            "Residuals of the two laws in N and D, one dot per run.",
            residual_chart(f),
        ));
    }
    // Sweeps with batch_sizes also get the critical batch (`cram scale batch`).
    match measure_batches(dir, None, DEFAULT_WINDOW) {
        Ok(Some(batches)) => {
            charts.push((
                "critical_batch.svg",
                "Steps against sequences to a target loss, one dot per batch size, and S = S_min + E_min/B through them (McCandlish et al. 2018; B_crit = E_min/S_min is where the curve bends).",
                batch_chart(&batches),
            ));
            if let Some(chart) = batch_loss_chart(&batches) {
                charts.push((
                    "critical_batch_loss.svg",
                    "The critical batch B_crit (dots, from the runs that reach each loss; those beyond a factor 2 of their batch sizes left out) and the gradient noise scale B_simple (lines) against the loss, in tokens, beside Kaplan et al.'s B_crit(L).",
                    chart,
                ));
            }
        }
        Ok(None) => {}
        Err(e) => notes.push(format!("no critical-batch plot: {e}")),
    }
    let figures: Vec<Figure> = charts
        .into_iter()
        .map(|(file, caption, chart)| {
            Ok(Figure {
                file: file.into(),
                caption: caption.into(),
                svg: chart.svg()?,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let mut page = Page::new(&format!("cram sweep {}", dir.display()));
    if let Some(f) = &fit {
        page.heading("Fits");
        page.preformatted(&f.table());
    }
    for n in &notes {
        page.paragraph(&format!("note: {n}"));
    }
    page.heading("Plots");
    for f in &figures {
        page.figure(f);
    }
    page.heading("Runs");
    let rows: Vec<Vec<String>> = set
        .points
        .iter()
        .map(|p| {
            vec![
                p.run.clone(),
                format!("{:.4e}", p.n_params),
                format!("{:.4e}", p.n_total),
                format!("{:.4e}", p.tokens),
                format!("{:.4e}", p.compute),
                format!("{:.4}", p.loss),
                p.noise_scale
                    .map(|b| format!("{b:.1}"))
                    .unwrap_or("-".into()),
            ]
        })
        .collect();
    page.table(
        &["run", "N", "N total", "D", "C", "held-out loss", "B_simple"],
        &rows,
    );
    write_report(dir, page, &figures, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::points::{Curve, Point};

    fn set_of(points: Vec<Point>) -> PointSet {
        let curves = points
            .iter()
            .map(|p| Curve {
                run: p.run.clone(),
                n_params: p.n_params,
                n_total: p.n_total,
                flops_per_token: 6.0 * p.n_params,
                samples: vec![(p.tokens, p.loss)],
            })
            .collect();
        PointSet { points, curves }
    }

    #[test]
    fn envelope_keeps_the_runs_no_cheaper_run_beats() {
        let set = set_of(vec![
            Point::simple("b", 1e6, 2e9, 3.0),
            Point::simple("a", 1e6, 1e9, 4.0),
            Point::simple("c", 1e7, 1e9, 3.5),
            Point::simple("d", 1e7, 1e10, 2.5),
        ]);
        let c = |p: &Point| p.compute;
        let env = final_envelope(&set);
        let expected: Vec<(f64, f64)> = [&set.points[1], &set.points[0], &set.points[3]]
            .iter()
            .map(|p| (c(p), p.loss))
            .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn runs_evaluated_once_are_drawn_as_dots() {
        let set = set_of(vec![
            Point::simple("a", 1e6, 1e9, 4.0),
            Point::simple("b", 1e7, 1e9, 3.5),
        ]);
        let chart = frontier_loss_chart(&set, &[1e6, 1e7], None);
        let marks: Vec<Mark> = chart.series.iter().map(|s| s.mark).collect();
        assert_eq!(marks, vec![Mark::Dots, Mark::Dots, Mark::Line]);
        assert!(chart.svg().unwrap().contains("<circle"));
    }
}
