//! Scaling-law fits over a [`PointSet`], each with bootstrap confidence
//! intervals (runs resampled with replacement, every fit redone, 2.5th and
//! 97.5th percentiles) and residuals:
//!
//! - Kaplan et al. 2020 (N without embeddings): L(N), L(D), the joint
//!   L(N, D), and the compute frontier L(C_min) with N_opt ∝ C^a.
//! - Hoffmann et al. 2022 (N with embeddings): approach 1 (the lower
//!   envelope), approach 2 (IsoFLOP parabolas), approach 3 (E + A/N^α + B/D^β).
//!
//! Every fit is checked by holding out the largest compute level ([`holdout`]):
//! the laws fitted to the runs below it predict the loss of its best run.
//!
//! The Kaplan joint law is required: points that cannot support it (NaN, one
//! model size, one token count) are an error. The others are reported as
//! skipped, with the reason, when the points cannot support them (approach 2
//! needs IsoFLOP levels of three sizes or more; approach 3 a loss that falls
//! with N, which runs that are all data-limited do not show).

mod chinchilla;
mod envelope;
mod holdout;
mod kaplan;
pub mod lbfgs;
mod report;
pub mod stats;

pub use chinchilla::{isoflop, isoflop_levels, parametric, IsoFlop, IsoFlopLevel, Parametric};
pub use envelope::{frontier, EnvelopePoint, Frontier};
pub use holdout::{
    hold_out_largest, largest_run, HoldoutPrediction, HoldoutReport, APPROACH1_LAW, APPROACH3_LAW,
    FRONTIER_LAW, JOINT_LAW,
};
pub use kaplan::{joint, l_of_d, l_of_n, power_law, Joint, PowerLaw, PowerLawFit};
pub use report::{
    ChinchillaReport, Estimate, FitReport, FrontierReport, IsoFlopReport, KaplanReport, LeftOut,
    PlateauReport, PowerLawReport, Replicates, Residual, Residuals, FIT_FILE,
};

use super::points::{ParamCount, PointSet};
use super::ScalingError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Why one fit could not be made.
#[derive(Debug, Clone, PartialEq)]
pub struct FitError(pub String);

impl FitError {
    pub fn new(reason: String) -> FitError {
        FitError(reason)
    }
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    pub seed: u64,
    /// Runs whose final loss is at or above this are left out as still on
    /// the masked-LM plateau (see [`crate::scaling::plateau`]).
    pub max_loss: Option<f64>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            bootstrap: 200,
            seed: 0,
            max_loss: None,
        }
    }
}

/// Every fit of one point set (no intervals).
#[derive(Debug, Clone)]
pub struct Fits {
    pub joint: Joint,
    pub parametric: Result<Parametric, FitError>,
    pub l_of_n: PowerLawFit,
    pub l_of_d: PowerLawFit,
    pub kaplan_frontier: Result<Frontier, FitError>,
    pub approach1: Result<Frontier, FitError>,
    pub approach2: Result<IsoFlop, FitError>,
}

fn degenerate(what: &str) -> impl Fn(FitError) -> ScalingError + '_ {
    move |e| ScalingError::Degenerate(format!("{what}: {e}"))
}

/// Fits every law to `set`, from the grids of starting points.
pub fn fit_points(set: &PointSet) -> Result<Fits, ScalingError> {
    set.validate()?;
    let pts = &set.points;
    Ok(Fits {
        joint: joint(pts).map_err(degenerate("Kaplan L(N, D)"))?,
        parametric: parametric(pts, ParamCount::Total),
        l_of_n: l_of_n(pts),
        l_of_d: l_of_d(pts),
        kaplan_frontier: frontier(set, ParamCount::NonEmbedding),
        approach1: frontier(set, ParamCount::Total),
        approach2: isoflop(pts, ParamCount::Total),
    })
}

/// A bootstrap replicate: the same fits, started from the full fit's optimum.
fn refit(set: &PointSet, full: &Fits) -> Replicate {
    let pts = &set.points;
    Replicate {
        joint: kaplan::joint_from(pts, &full.joint)
            .ok()
            .map(|j| j.params()),
        parametric: full
            .parametric
            .as_ref()
            .ok()
            .and_then(|start| chinchilla::parametric_from(pts, ParamCount::Total, start).ok())
            .map(|p| p.params()),
        l_of_n: l_of_n(pts).ok().map(|(p, _)| vec![p.exponent, p.ln_scale]),
        l_of_d: l_of_d(pts).ok().map(|(p, _)| vec![p.exponent, p.ln_scale]),
        kaplan_frontier: frontier(set, ParamCount::NonEmbedding)
            .ok()
            .map(|f| frontier_params(&f)),
        approach1: frontier(set, ParamCount::Total)
            .ok()
            .map(|f| frontier_params(&f)),
        approach2: isoflop(pts, ParamCount::Total).ok().map(|i| i.params()),
    }
}

/// a, ln k_N, b, ln k_D, −α_C, α_C·ln C_c.
fn frontier_params(f: &Frontier) -> Vec<f64> {
    let mut p = f.params();
    p.extend([f.loss_line.slope, f.loss_line.intercept]);
    p
}

#[derive(Debug, Default)]
struct Replicate {
    joint: Option<Vec<f64>>,
    parametric: Option<Vec<f64>>,
    l_of_n: Option<Vec<f64>>,
    l_of_d: Option<Vec<f64>>,
    kaplan_frontier: Option<Vec<f64>>,
    approach1: Option<Vec<f64>>,
    approach2: Option<Vec<f64>>,
}

/// Runs resampled with replacement; a run's curve goes with it.
fn resample(set: &PointSet, rng: &mut ChaCha8Rng) -> PointSet {
    let n = set.points.len();
    let mut out = PointSet::default();
    for _ in 0..n {
        let p = &set.points[rng.random_range(0..n)];
        out.points.push(p.clone());
        if let Some(c) = set
            .curves
            .iter()
            .find(|c| !p.run.is_empty() && c.run == p.run)
        {
            out.curves.push(c.clone());
        }
    }
    out
}

/// Fits, bootstraps and assembles `fit.json`'s report.
pub fn fit_all(set: &PointSet, opts: FitOptions) -> Result<FitReport, ScalingError> {
    let Some(cut) = opts.max_loss else {
        return fit_kept(set, opts);
    };
    let (kept, left) = crate::scaling::plateau::split_at(set, cut);
    if kept.points.is_empty() {
        return Err(ScalingError::Degenerate(format!(
            "every run ended at a loss of {cut:.3} or more, still on the masked-LM plateau; \
             train longer, or pass --keep-plateau to fit them anyway"
        )));
    }
    let mut report = fit_kept(&kept, opts).map_err(|e| match e {
        ScalingError::Degenerate(reason) if !left.is_empty() => ScalingError::Degenerate(format!(
            "{reason} ({} runs were left out as still on the plateau, loss ≥ {cut:.3}; \
             --keep-plateau fits them too)",
            left.len()
        )),
        e => e,
    })?;
    report.plateau = Some(PlateauReport {
        max_loss: cut,
        left_out: left.iter().map(LeftOut::of).collect(),
    });
    Ok(report)
}

/// [`fit_all`] of the runs kept.
fn fit_kept(set: &PointSet, opts: FitOptions) -> Result<FitReport, ScalingError> {
    use rayon::prelude::*;
    let full = fit_points(set)?;
    let replicates: Vec<Replicate> = (0..opts.bootstrap)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(
                opts.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            refit(&resample(set, &mut rng), &full)
        })
        .collect();
    let collect = |f: fn(&Replicate) -> &Option<Vec<f64>>| -> Vec<Vec<f64>> {
        // A replicate whose parameters overflowed tells nothing about the interval.
        replicates
            .iter()
            .filter_map(|r| f(r).clone())
            .filter(|p| p.iter().all(|v| v.is_finite()))
            .collect()
    };
    let reps = Replicates {
        requested: opts.bootstrap,
        kaplan_joint: collect(|r| &r.joint),
        l_of_n: collect(|r| &r.l_of_n),
        l_of_d: collect(|r| &r.l_of_d),
        kaplan_frontier: collect(|r| &r.kaplan_frontier),
        approach1: collect(|r| &r.approach1),
        approach2: collect(|r| &r.approach2),
        approach3: collect(|r| &r.parametric),
    };
    let mut report = report::assemble(set, &full, reps);
    match hold_out_largest(set) {
        Ok(h) => report.holdout = Some(h),
        Err(e) => report.notes.push(format!("hold-out check skipped: {e}")),
    }
    Ok(report)
}
