//! `fit.json`: every fitted value as `{"value", "ci": [lo, hi]}` (a 95%
//! bootstrap percentile interval, `null` without replicates), the residuals
//! of each fit, the bootstrap replicates themselves (what `cram scale plan`
//! turns into intervals), and notes on fits that were skipped.

use super::chinchilla::{IsoFlop, IsoFlopLevel, Parametric};
use super::envelope::{EnvelopePoint, Frontier};
use super::kaplan::{Joint, PowerLawFit};
use super::stats::quantile;
use super::{FitError, Fits};
use crate::scaling::points::{distinct, PointSet};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

pub const FIT_FILE: &str = "fit.json";

/// A fitted value and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// `null` in JSON when the value overflowed (read back as NaN).
    #[serde(with = "nullable")]
    pub value: f64,
    pub ci: Option<[f64; 2]>,
}

/// f64 as a JSON number, or `null` where it is not finite (JSON has no
/// infinity); `null` reads back as NaN.
mod nullable {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl Estimate {
    /// `value` with the interval of `f` over the replicates (at least 10 needed).
    fn from(value: f64, replicates: &[Vec<f64>], f: impl Fn(&[f64]) -> f64) -> Estimate {
        let mut v: Vec<f64> = replicates
            .iter()
            .map(|r| f(r))
            .filter(|x| x.is_finite())
            .collect();
        v.sort_by(f64::total_cmp);
        let ci = (v.len() >= 10).then(|| [quantile(&v, 0.025), quantile(&v, 0.975)]);
        Estimate { value, ci }
    }

    pub fn interval_text(&self) -> String {
        match self.ci {
            Some([lo, hi]) => format!("[{}, {}]", fmt_value(lo), fmt_value(hi)),
            None => "-".into(),
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    pub run: String,
    pub n: f64,
    pub tokens: f64,
    pub loss: f64,
    pub predicted: f64,
    /// ln(loss) − ln(predicted).
    pub residual: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residuals {
    /// Root mean square of the log residuals.
    pub rms: f64,
    pub max_abs: f64,
    pub points: Vec<Residual>,
}

impl Residuals {
    fn of(rows: Vec<Residual>) -> Residuals {
        let n = rows.len().max(1) as f64;
        Residuals {
            rms: (rows.iter().map(|r| r.residual * r.residual).sum::<f64>() / n).sqrt(),
            max_abs: rows.iter().map(|r| r.residual.abs()).fold(0.0, f64::max),
            points: rows,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerLawReport {
    pub exponent: Estimate,
    pub scale: Estimate,
    /// (x, loss) the line went through.
    pub points: Vec<(f64, f64)>,
    pub residual_rms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierReport {
    pub optimal_n_exponent: Estimate,
    pub optimal_d_exponent: Estimate,
    /// ln k in N_opt = k·C^a and D_opt = k·C^b.
    pub n_log_coefficient: f64,
    pub d_log_coefficient: f64,
    /// L(C_min) = (C_c / C)^α_C.
    pub alpha_c: Estimate,
    pub c_c: Estimate,
    pub envelope: Vec<EnvelopePoint>,
}

/// [a, ln k, b, ln k_D] of the lines N_opt = k·C^a and D_opt = k_D·C^b.
fn optimum_lines(n: &Estimate, n_log: f64, d: &Estimate, d_log: f64) -> [f64; 4] {
    [n.value, n_log, d.value, d_log]
}

impl FrontierReport {
    /// [a, ln k, b, ln k_D] of its N_opt and D_opt lines in C.
    pub fn optimum_lines(&self) -> [f64; 4] {
        let (n, d) = (&self.optimal_n_exponent, &self.optimal_d_exponent);
        optimum_lines(n, self.n_log_coefficient, d, self.d_log_coefficient)
    }
}

impl IsoFlopReport {
    /// [a, ln k, b, ln k_D] of its N_opt and D_opt lines in C.
    pub fn optimum_lines(&self) -> [f64; 4] {
        let (n, d) = (&self.optimal_n_exponent, &self.optimal_d_exponent);
        optimum_lines(n, self.n_log_coefficient, d, self.d_log_coefficient)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsoFlopReport {
    pub optimal_n_exponent: Estimate,
    pub optimal_d_exponent: Estimate,
    pub n_log_coefficient: f64,
    pub d_log_coefficient: f64,
    pub levels: Vec<IsoFlopLevel>,
    pub skipped_levels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KaplanReport {
    /// The joint L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D.
    pub alpha_n: Estimate,
    pub alpha_d: Estimate,
    pub n_c: Estimate,
    pub d_c: Estimate,
    /// α_D/(α_N + α_D): N_opt's exponent implied by the joint law at C = 6ND.
    pub joint_optimal_n_exponent: Estimate,
    /// N_opt's and D_opt's exponents measured on the compute frontier.
    pub optimal_n_exponent: Option<Estimate>,
    pub optimal_d_exponent: Option<Estimate>,
    pub frontier: Option<FrontierReport>,
    pub l_of_n: Option<PowerLawReport>,
    pub l_of_d: Option<PowerLawReport>,
    pub residuals: Residuals,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChinchillaReport {
    /// Approach 3: L = E + A/N^α + B/D^β (each null when it was skipped; the
    /// notes say why).
    pub e: Option<Estimate>,
    pub a: Option<Estimate>,
    pub b: Option<Estimate>,
    pub alpha: Option<Estimate>,
    pub beta: Option<Estimate>,
    pub optimal_n_exponent: Option<Estimate>,
    pub optimal_d_exponent: Option<Estimate>,
    pub residuals: Option<Residuals>,
    pub approach1: Option<FrontierReport>,
    pub approach2: Option<IsoFlopReport>,
}

impl KaplanReport {
    /// The joint law L(N, D) as fitted.
    pub fn joint(&self) -> Joint {
        Joint {
            alpha_n: self.alpha_n.value,
            alpha_d: self.alpha_d.value,
            n_c: self.n_c.value,
            d_c: self.d_c.value,
        }
    }
}

impl ChinchillaReport {
    /// Approach 3's law, when it was fitted.
    pub fn parametric(&self) -> Option<Parametric> {
        Some(Parametric {
            e: self.e.as_ref()?.value,
            a: self.a.as_ref()?.value,
            b: self.b.as_ref()?.value,
            alpha: self.alpha.as_ref()?.value,
            beta: self.beta.as_ref()?.value,
        })
    }
}

/// Parameter vectors of the bootstrap replicates that succeeded, per fit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replicates {
    pub requested: usize,
    /// [ln N_c, ln D_c, α_N, α_D]
    pub kaplan_joint: Vec<Vec<f64>>,
    /// [α, ln scale]
    pub l_of_n: Vec<Vec<f64>>,
    pub l_of_d: Vec<Vec<f64>>,
    /// [a, ln k_N, b, ln k_D, −α_C, α_C·ln C_c]
    pub kaplan_frontier: Vec<Vec<f64>>,
    pub approach1: Vec<Vec<f64>>,
    /// [a, ln k_N, b, ln k_D]
    pub approach2: Vec<Vec<f64>>,
    /// [ln A, ln B, ln E, α, β]
    pub approach3: Vec<Vec<f64>>,
}

/// The plateau cut a fit made, and the runs it left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauReport {
    pub max_loss: f64,
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub run: String,
    pub n_params: f64,
    pub tokens: f64,
    pub compute: f64,
    pub loss: f64,
}

impl LeftOut {
    pub fn of(p: &crate::scaling::Point) -> LeftOut {
        LeftOut {
            run: p.run.clone(),
            n_params: p.n_params,
            tokens: p.tokens,
            compute: p.compute,
            loss: p.loss,
        }
    }
}

impl PlateauReport {
    fn line(&self) -> String {
        let names: Vec<String> = self
            .left_out
            .iter()
            .map(|l| {
                let name = if l.run.is_empty() {
                    format!("N = {:.3e}, D = {:.3e}", l.n_params, l.tokens)
                } else {
                    l.run.clone()
                };
                format!("{name} ({:.3})", l.loss)
            })
            .collect();
        match names.len() {
            0 => format!(
                "every run ended below {:.3} (off the unigram plateau); none left out",
                self.max_loss
            ),
            n => format!(
                "{n} {} left out as still on the masked-LM plateau (final loss ≥ {:.3}): {}",
                if n == 1 { "run" } else { "runs" },
                self.max_loss,
                names.join(", ")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub points: usize,
    pub model_sizes: usize,
    /// Smallest and largest C among the runs: how far a plan extrapolates.
    pub compute_range: [f64; 2],
    pub compute_formula: String,
    pub kaplan: KaplanReport,
    pub chinchilla: ChinchillaReport,
    /// Fits that were skipped and why.
    pub notes: Vec<String>,
    /// Runs left out as still on the masked-LM plateau (absent when no cut was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plateau: Option<PlateauReport>,
    /// The best run of the largest compute level, predicted by the laws fitted to the levels below it (absent when
    /// the other runs cannot be fitted; `notes` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<super::HoldoutReport>,
    pub replicates: Replicates,
}

fn power_law_report(fit: &PowerLawFit, reps: &[Vec<f64>]) -> Option<PowerLawReport> {
    let (law, pts) = fit.as_ref().ok()?;
    let n = pts.len() as f64;
    let rms = (pts
        .iter()
        .map(|(x, l)| (l / law.at(*x)).ln().powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    Some(PowerLawReport {
        exponent: Estimate::from(law.exponent, reps, |r| r[0]),
        scale: Estimate::from(law.scale, reps, |r| r[1].exp()),
        points: pts.clone(),
        residual_rms: rms,
    })
}

fn frontier_report(fit: &Result<Frontier, FitError>, reps: &[Vec<f64>]) -> Option<FrontierReport> {
    let f = fit.as_ref().ok()?;
    Some(FrontierReport {
        optimal_n_exponent: Estimate::from(f.n_exponent(), reps, |r| r[0]),
        optimal_d_exponent: Estimate::from(f.d_exponent(), reps, |r| r[2]),
        n_log_coefficient: f.n_line.intercept,
        d_log_coefficient: f.d_line.intercept,
        alpha_c: Estimate::from(f.alpha_c(), reps, |r| -r[4]),
        c_c: Estimate::from(f.c_c(), reps, |r| (r[5] / -r[4]).exp()),
        envelope: f.points.clone(),
    })
}

fn isoflop_report(fit: &Result<IsoFlop, FitError>, reps: &[Vec<f64>]) -> Option<IsoFlopReport> {
    let f = fit.as_ref().ok()?;
    Some(IsoFlopReport {
        optimal_n_exponent: Estimate::from(f.n_line.slope, reps, |r| r[0]),
        optimal_d_exponent: Estimate::from(f.d_line.slope, reps, |r| r[2]),
        n_log_coefficient: f.n_line.intercept,
        d_log_coefficient: f.d_line.intercept,
        levels: f.levels.clone(),
        skipped_levels: f.skipped.clone(),
    })
}

fn kaplan_report(set: &PointSet, fits: &Fits, reps: &Replicates) -> KaplanReport {
    let j: &Joint = &fits.joint;
    let r = &reps.kaplan_joint;
    let frontier = frontier_report(&fits.kaplan_frontier, &reps.kaplan_frontier);
    let residuals = set
        .points
        .iter()
        .map(|p| {
            let predicted = j.loss(p.n_params, p.tokens);
            Residual {
                run: p.run.clone(),
                n: p.n_params,
                tokens: p.tokens,
                loss: p.loss,
                predicted,
                residual: (p.loss / predicted).ln(),
            }
        })
        .collect();
    KaplanReport {
        alpha_n: Estimate::from(j.alpha_n, r, |x| x[2]),
        alpha_d: Estimate::from(j.alpha_d, r, |x| x[3]),
        n_c: Estimate::from(j.n_c, r, |x| x[0].exp()),
        d_c: Estimate::from(j.d_c, r, |x| x[1].exp()),
        joint_optimal_n_exponent: Estimate::from(j.optimal_n_exponent(), r, |x| {
            x[3] / (x[2] + x[3])
        }),
        optimal_n_exponent: frontier.as_ref().map(|f| f.optimal_n_exponent),
        optimal_d_exponent: frontier.as_ref().map(|f| f.optimal_d_exponent),
        frontier,
        l_of_n: power_law_report(&fits.l_of_n, &reps.l_of_n),
        l_of_d: power_law_report(&fits.l_of_d, &reps.l_of_d),
        residuals: Residuals::of(residuals),
    }
}

fn chinchilla_report(set: &PointSet, fits: &Fits, reps: &Replicates) -> ChinchillaReport {
    let r = &reps.approach3;
    let p = fits.parametric.as_ref().ok();
    let est = |value: fn(&Parametric) -> f64, rep: fn(&[f64]) -> f64| {
        p.map(|p| Estimate::from(value(p), r, rep))
    };
    ChinchillaReport {
        e: est(|p| p.e, |x| x[2].exp()),
        a: est(|p| p.a, |x| x[0].exp()),
        b: est(|p| p.b, |x| x[1].exp()),
        alpha: est(|p| p.alpha, |x| x[3]),
        beta: est(|p| p.beta, |x| x[4]),
        optimal_n_exponent: est(Parametric::optimal_n_exponent, |x| x[4] / (x[3] + x[4])),
        optimal_d_exponent: est(Parametric::optimal_d_exponent, |x| x[3] / (x[3] + x[4])),
        residuals: p.map(|p| parametric_residuals(set, p)),
        approach1: frontier_report(&fits.approach1, &reps.approach1),
        approach2: isoflop_report(&fits.approach2, &reps.approach2),
    }
}

/// Approach 3's residuals, with N counted with embeddings.
fn parametric_residuals(set: &PointSet, p: &Parametric) -> Residuals {
    let residuals = set
        .points
        .iter()
        .map(|pt| {
            let predicted = p.loss(pt.n_total, pt.tokens);
            Residual {
                run: pt.run.clone(),
                n: pt.n_total,
                tokens: pt.tokens,
                loss: pt.loss,
                predicted,
                residual: (pt.loss / predicted).ln(),
            }
        })
        .collect();
    Residuals::of(residuals)
}

pub(super) fn assemble(set: &PointSet, fits: &Fits, replicates: Replicates) -> FitReport {
    let mut notes = Vec::new();
    let mut note = |name: &str, e: Option<&FitError>| {
        if let Some(e) = e {
            notes.push(format!("{name} skipped: {e}"));
        }
    };
    note("Kaplan L(N)", fits.l_of_n.as_ref().err());
    note("Kaplan L(D)", fits.l_of_d.as_ref().err());
    note(
        "Kaplan compute frontier",
        fits.kaplan_frontier.as_ref().err(),
    );
    note("Chinchilla approach 1", fits.approach1.as_ref().err());
    note("Chinchilla approach 3", fits.parametric.as_ref().err());
    note("Chinchilla approach 2", fits.approach2.as_ref().err());
    FitReport {
        points: set.points.len(),
        model_sizes: distinct(set.points.iter().map(|p| p.n_params)).len(),
        compute_range: [
            set.points
                .iter()
                .map(|p| p.compute)
                .fold(f64::INFINITY, f64::min),
            set.points.iter().map(|p| p.compute).fold(0.0, f64::max),
        ],
        compute_formula: "C = 6·N·D + 6·n_layer·n_ctx·d_model·D (N without embeddings)".into(),
        kaplan: kaplan_report(set, fits, &replicates),
        chinchilla: chinchilla_report(set, fits, &replicates),
        notes,
        plateau: None,
        holdout: None,
        replicates,
    }
}

impl FitReport {
    /// The table `cram scale fit` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} runs, {} model sizes; 95% bootstrap intervals from {} replicates\n",
            self.points, self.model_sizes, self.replicates.requested
        );
        let _ = writeln!(out, "{:<44} {:>12}  interval", "quantity", "value");
        let mut row = |name: &str, e: Option<&Estimate>| {
            let _ = match e {
                Some(e) => writeln!(
                    out,
                    "{name:<44} {:>12}  {}",
                    fmt_value(e.value),
                    e.interval_text()
                ),
                None => writeln!(out, "{name:<44} {:>12}", "skipped"),
            };
        };
        let k = &self.kaplan;
        row("kaplan.alpha_n    (joint L(N,D))", Some(&k.alpha_n));
        row("kaplan.alpha_d    (joint L(N,D))", Some(&k.alpha_d));
        row("kaplan.n_c", Some(&k.n_c));
        row("kaplan.d_c", Some(&k.d_c));
        row(
            "kaplan L(N) alone: alpha_n",
            k.l_of_n.as_ref().map(|l| &l.exponent),
        );
        row(
            "kaplan L(D) alone: alpha_d",
            k.l_of_d.as_ref().map(|l| &l.exponent),
        );
        row(
            "kaplan frontier: alpha_c",
            k.frontier.as_ref().map(|f| &f.alpha_c),
        );
        row(
            "kaplan.optimal_n_exponent (frontier)",
            k.optimal_n_exponent.as_ref(),
        );
        row(
            "kaplan joint-law N_opt exponent",
            Some(&k.joint_optimal_n_exponent),
        );
        let c = &self.chinchilla;
        row("chinchilla.e", c.e.as_ref());
        row("chinchilla.a", c.a.as_ref());
        row("chinchilla.b", c.b.as_ref());
        row("chinchilla.alpha", c.alpha.as_ref());
        row("chinchilla.beta", c.beta.as_ref());
        row(
            "chinchilla.optimal_n_exponent (approach 3)",
            c.optimal_n_exponent.as_ref(),
        );
        row(
            "chinchilla.optimal_d_exponent (approach 3)",
            c.optimal_d_exponent.as_ref(),
        );
        row(
            "chinchilla approach 1: N_opt exponent",
            c.approach1.as_ref().map(|a| &a.optimal_n_exponent),
        );
        row(
            "chinchilla approach 2: N_opt exponent",
            c.approach2.as_ref().map(|a| &a.optimal_n_exponent),
        );
        let _ = writeln!(
            out,
            "\nresiduals (rms of ln L): Kaplan joint {:.4}, Chinchilla approach 3 {}",
            k.residuals.rms,
            c.residuals
                .as_ref()
                .map_or("skipped".into(), |r| format!("{:.4}", r.rms))
        );
        if let Some(p) = &self.plateau {
            let _ = writeln!(out, "\n{}", p.line());
        }
        if let Some(h) = &self.holdout {
            out.push_str(&h.table());
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}
