//! Validation by a held-out run: every law is fitted again to the runs below
//! the sweep's largest compute level, and each law that can predict a single
//! run's loss says what it expects for that level's best run (the
//! compute-optimal point a plan extrapolates towards). The relative error of
//! those predictions is how far the fits can be trusted one step beyond the
//! data (Hoffmann et al. 2022 check their laws the same way). Before, the
//! largest model was held out with its level still fitted: in gpt-gpu-1 that
//! was a run far past its level's optimum, on the steep start of its curve,
//! and the other runs of its level told the fits most of the answer.

use super::chinchilla::same_level;
use super::{fit_points, Fits};
use crate::scaling::points::{ParamCount, Point, PointSet};
use crate::scaling::ScalingError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The held-out run and what each law fitted without it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutReport {
    pub run: String,
    pub n_params: f64,
    pub n_total: f64,
    pub tokens: f64,
    pub compute: f64,
    /// The run's measured final held-out loss.
    pub loss: f64,
    /// Runs the laws were fitted to (every run but the held-out one).
    pub fitted_points: usize,
    pub predictions: Vec<HoldoutPrediction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutPrediction {
    pub law: String,
    pub predicted: f64,
    /// (predicted − measured) / measured.
    pub relative_error: f64,
    /// What the prediction means, where it is not the run's own loss.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

fn top_compute(points: &[Point]) -> f64 {
    points.iter().map(|p| p.compute).fold(f64::MIN, f64::max)
}

/// The run held out: of the runs at the largest compute level, the one with
/// the lowest loss.
pub fn largest_run(points: &[Point]) -> Option<&Point> {
    let top = top_compute(points);
    points
        .iter()
        .filter(|p| same_level(p.compute, top))
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
}

/// Fits every law to the runs below the largest compute level (so that the
/// held-out run's level says nothing about it) and predicts the held run.
pub fn hold_out_largest(set: &PointSet) -> Result<HoldoutReport, ScalingError> {
    set.validate()?;
    let held = largest_run(&set.points)
        .expect("a validated set has points")
        .clone();
    let rest = below_top_level(set);
    let fits = fit_points(&rest).map_err(|e| {
        ScalingError::Degenerate(format!(
            "without the largest compute level ({}) the rest cannot be fitted: {e}",
            describe(&held)
        ))
    })?;
    Ok(HoldoutReport {
        run: held.run.clone(),
        n_params: held.n_params,
        n_total: held.n_total,
        tokens: held.tokens,
        compute: held.compute,
        loss: held.loss,
        fitted_points: rest.points.len(),
        predictions: predictions(&fits, &held),
    })
}

fn describe(p: &Point) -> String {
    if p.run.is_empty() {
        format!("N = {:.3e}, C = {:.3e}", p.n_params, p.compute)
    } else {
        p.run.clone()
    }
}

/// The set without its largest compute level, points and curves.
fn below_top_level(set: &PointSet) -> PointSet {
    let top = top_compute(&set.points);
    let (held, points): (Vec<Point>, Vec<Point>) = set
        .points
        .iter()
        .cloned()
        .partition(|p| same_level(p.compute, top));
    let curves = set
        .curves
        .iter()
        .filter(|c| !held.iter().any(|p| !p.run.is_empty() && p.run == c.run))
        .cloned()
        .collect();
    PointSet { points, curves }
}

/// The laws' names in the held-out predictions (and in the plan, which
/// widens each row's interval by its own law's miss).
pub const JOINT_LAW: &str = "Kaplan L(N, D)";
pub const APPROACH3_LAW: &str = "Chinchilla approach 3";
pub const FRONTIER_LAW: &str = "Kaplan frontier L(C)";
pub const APPROACH1_LAW: &str = "Chinchilla approach 1 L(C)";

fn predictions(fits: &Fits, held: &Point) -> Vec<HoldoutPrediction> {
    let frontier_note =
        "the best loss at this compute; the run's own only if it is compute-optimal";
    let mut out = vec![(JOINT_LAW, fits.joint.loss(held.n_params, held.tokens), None)];
    if let Ok(p) = &fits.parametric {
        out.push((
            APPROACH3_LAW,
            p.loss(held.n(ParamCount::Total), held.tokens),
            None,
        ));
    }
    for (law, frontier) in [
        (FRONTIER_LAW, &fits.kaplan_frontier),
        (APPROACH1_LAW, &fits.approach1),
    ] {
        if let Ok(f) = frontier {
            let predicted = f.loss_line.at(held.compute.ln()).exp();
            out.push((law, predicted, Some(frontier_note)));
        }
    }
    out.into_iter()
        .map(|(law, predicted, note)| HoldoutPrediction {
            law: law.to_string(),
            predicted,
            relative_error: (predicted - held.loss) / held.loss,
            note: note.map(str::to_string),
        })
        .collect()
}

impl HoldoutReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nheld out: {} (N = {:.3e}, D = {:.3e}, C = {:.3e}), measured loss {:.4}; \
             laws fitted to the {} runs below its compute level",
            if self.run.is_empty() {
                "the largest run"
            } else {
                &self.run
            },
            self.n_params,
            self.tokens,
            self.compute,
            self.loss,
            self.fitted_points
        );
        let _ = writeln!(out, "{:<30} {:>10} {:>8}", "law", "predicted", "error");
        for p in &self.predictions {
            let _ = writeln!(
                out,
                "{:<30} {:>10.4} {:>+7.2}%{}",
                p.law,
                p.predicted,
                100.0 * p.relative_error,
                if p.note.is_some() {
                    "  (frontier: best loss at C)"
                } else {
                    ""
                }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a known Chinchilla law, with one size well beyond the rest.
    fn law_points() -> PointSet {
        let (e, a, b, alpha, beta) = (1.7, 400.0, 800.0, 0.34, 0.28);
        let mut set = PointSet::default();
        for &n in &[1e6, 3e6, 1e7, 3e7, 1e8] {
            for &d in &[1e8, 3e8, 1e9, 3e9] {
                let loss: f64 = e + a / f64::powf(n, alpha) + b / f64::powf(d, beta);
                set.points
                    .push(Point::simple(format!("n{n:e}-d{d:e}"), n, d, loss));
            }
        }
        set
    }

    #[test]
    fn the_held_run_is_the_best_at_the_largest_compute() {
        let set = law_points();
        let held = largest_run(&set.points).unwrap();
        assert_eq!((held.n_params, held.tokens), (1e8, 3e9));
    }

    #[test]
    fn of_the_top_compute_level_the_lowest_loss_is_held_out() {
        let mut set = law_points();
        let best = largest_run(&set.points).unwrap().loss;
        set.points
            .push(Point::simple("worse", 3e8, 1e9, best + 0.1));
        assert_eq!(largest_run(&set.points).unwrap().run, "n1e8-d3e9");
        // 5% more compute than the grid's top run: the same level.
        set.points
            .push(Point::simple("better", 3e8, 1.05e9, best - 0.1));
        assert_eq!(largest_run(&set.points).unwrap().run, "better");
    }

    #[test]
    fn a_run_on_the_law_is_predicted_by_the_parametric_fit() {
        let r = hold_out_largest(&law_points()).unwrap();
        assert_eq!(r.fitted_points, 19);
        assert_eq!(r.run, "n1e8-d3e9");
        let p = r
            .predictions
            .iter()
            .find(|p| p.law == "Chinchilla approach 3")
            .unwrap();
        assert!(p.relative_error.abs() < 0.005, "{r:#?}");
        assert!(r.table().contains("Chinchilla approach 3"));
    }

    #[test]
    fn a_run_off_the_law_shows_as_an_error() {
        let mut set = law_points();
        let last = set.points.len() - 1;
        set.points[last].loss *= 1.10;
        let r = hold_out_largest(&set).unwrap();
        let p = r
            .predictions
            .iter()
            .find(|p| p.law == "Chinchilla approach 3")
            .unwrap();
        assert!((p.relative_error + 0.0909).abs() < 0.005, "{r:#?}");
    }

    #[test]
    fn too_few_runs_left_is_an_error_that_names_the_held_run() {
        let mut set = law_points();
        set.points
            .retain(|p| p.n_params >= 1e8 || p.n_params == 1e6 && p.tokens == 1e8);
        let e = hold_out_largest(&set).unwrap_err().to_string();
        assert!(e.contains("without the largest compute level"), "{e}");
    }
}
