//! Kaplan et al. (2020) forms, with N the non-embedding parameters:
//! L(N) = (N_c/N)^α_N from each size's longest run, L(D) = (D_c/D)^α_D from
//! each token count's largest model (straight lines in log-log space), and
//! the joint L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D fitted by least
//! squares on log L with L-BFGS from a grid of starting points.
//!
//! Minimising the joint law at fixed C = 6ND gives N_opt ∝ C^(α_D/(α_N+α_D)):
//! the exponent this form implies, reported beside the frontier's measured one.

use super::lbfgs::{minimize, Tolerances};
use super::stats::{fit_line, log_sum_exp};
use super::FitError;
use crate::scaling::points::{distinct, Point};

/// L = (scale/x)^exponent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    pub exponent: f64,
    pub scale: f64,
    /// ln(scale), finite even where `scale` overflows (a nearly flat law).
    pub ln_scale: f64,
}

impl PowerLaw {
    pub fn at(&self, x: f64) -> f64 {
        (self.scale / x).powf(self.exponent)
    }
}

/// The power law through `(x, loss)` pairs, by least squares on the logs.
pub fn power_law(pairs: &[(f64, f64)]) -> Result<PowerLaw, FitError> {
    let logs: Vec<(f64, f64)> = pairs.iter().map(|(x, l)| (x.ln(), l.ln())).collect();
    let line = fit_line(&logs)
        .ok_or_else(|| FitError::new("a power law needs at least two distinct x".into()))?;
    let exponent = -line.slope;
    if exponent <= 0.0 {
        return Err(FitError::new(format!(
            "the loss does not fall with x (fitted exponent {exponent:.4})"
        )));
    }
    let ln_scale = line.intercept / exponent;
    Ok(PowerLaw {
        exponent,
        scale: ln_scale.exp(),
        ln_scale,
    })
}

/// The lowest loss at each distinct value of `key` (relative tolerance `tol`).
fn best_per(points: &[Point], key: impl Fn(&Point) -> f64, tol: f64) -> Vec<(f64, f64)> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some((k, l)) if (key(p) - *k).abs() <= tol * k.abs() => *l = l.min(p.loss),
            _ => out.push((key(p), p.loss)),
        }
    }
    out
}

/// A single-variable law and the (x, loss) pairs it went through.
pub type PowerLawFit = Result<(PowerLaw, Vec<(f64, f64)>), FitError>;

/// L(N) through each size's lowest (longest-trained) loss.
pub fn l_of_n(points: &[Point]) -> PowerLawFit {
    let pairs = best_per(points, |p| p.n_params, 1e-9);
    Ok((power_law(&pairs)?, pairs))
}

/// L(D) through each token count's lowest (largest-model) loss; token counts
/// within 1% are one budget.
pub fn l_of_d(points: &[Point]) -> PowerLawFit {
    let pairs = best_per(points, |p| p.tokens, 0.01);
    Ok((power_law(&pairs)?, pairs))
}

/// The joint law's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joint {
    pub alpha_n: f64,
    pub alpha_d: f64,
    pub n_c: f64,
    pub d_c: f64,
}

impl Joint {
    fn from_x(x: &[f64]) -> Joint {
        Joint {
            n_c: x[0].exp(),
            d_c: x[1].exp(),
            alpha_n: x[2],
            alpha_d: x[3],
        }
    }

    pub fn params(&self) -> Vec<f64> {
        vec![self.n_c.ln(), self.d_c.ln(), self.alpha_n, self.alpha_d]
    }

    pub fn from_params(p: &[f64]) -> Joint {
        Joint::from_x(p)
    }

    pub fn loss(&self, n: f64, d: f64) -> f64 {
        ((self.n_c / n).powf(self.alpha_n / self.alpha_d) + self.d_c / d).powf(self.alpha_d)
    }

    /// a in N_opt ∝ C^a at fixed C = 6ND.
    pub fn optimal_n_exponent(&self) -> f64 {
        self.alpha_d / (self.alpha_n + self.alpha_d)
    }
}

/// Mean squared error of ln L and its gradient, x = [ln N_c, ln D_c, α_N, α_D].
fn joint_objective(points: &[(f64, f64, f64)], x: &[f64], g: &mut [f64]) -> f64 {
    let (ln_nc, ln_dc, an, ad) = (x[0], x[1], x[2], x[3]);
    if !(an > 0.0 && ad > 1e-6) {
        return f64::INFINITY;
    }
    g.iter_mut().for_each(|v| *v = 0.0);
    let mut sum = 0.0;
    for &(ln_n, ln_d, ln_l) in points {
        let u = an / ad * (ln_nc - ln_n);
        let v = ln_dc - ln_d;
        let (s, [wu, wv]) = log_sum_exp([u, v]);
        let r = ad * s - ln_l;
        sum += r * r;
        let dr = 2.0 * r;
        g[0] += dr * an * wu;
        g[1] += dr * ad * wv;
        g[2] += dr * wu * (ln_nc - ln_n);
        g[3] += dr * (s - wu * u);
    }
    let m = points.len() as f64;
    g.iter_mut().for_each(|v| *v /= m);
    sum / m
}

/// The joint L(N, D), best of a grid of starts.
pub fn joint(points: &[Point]) -> Result<Joint, FitError> {
    check_identifiable(points)?;
    let data: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|p| (p.n_params.ln(), p.tokens.ln(), p.loss.ln()))
        .collect();
    let mut starts = Vec::new();
    for ln_nc in [10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0] {
        for ln_dc in [10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0] {
            for an in [0.05, 0.1, 0.2, 0.4, 0.8] {
                for ad in [0.05, 0.1, 0.2, 0.4, 0.8] {
                    starts.push([ln_nc, ln_dc, an, ad]);
                }
            }
        }
    }
    let best = best_start(&data, &starts);
    let m = minimize(
        |x, g| joint_objective(&data, x, g),
        &best,
        Tolerances::default(),
    );
    finite_joint(Joint::from_x(&m.x))
}

/// Refits the joint law from a known good start (for bootstrap replicates).
pub fn joint_from(points: &[Point], start: &Joint) -> Result<Joint, FitError> {
    check_identifiable(points)?;
    let data: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|p| (p.n_params.ln(), p.tokens.ln(), p.loss.ln()))
        .collect();
    let m = minimize(
        |x, g| joint_objective(&data, x, g),
        &start.params(),
        Tolerances::default(),
    );
    finite_joint(Joint::from_x(&m.x))
}

/// Runs a short minimisation from every start and returns the best end point.
fn best_start(data: &[(f64, f64, f64)], starts: &[[f64; 4]]) -> Vec<f64> {
    use rayon::prelude::*;
    let short = Tolerances {
        max_iterations: 200,
        ..Tolerances::default()
    };
    starts
        .par_iter()
        .map(|s| minimize(|x, g| joint_objective(data, x, g), s, short))
        .filter(|m| m.f.is_finite())
        .min_by(|a, b| a.f.total_cmp(&b.f))
        .map(|m| m.x)
        .unwrap_or_else(|| starts[0].to_vec())
}

fn finite_joint(j: Joint) -> Result<Joint, FitError> {
    if [j.alpha_n, j.alpha_d, j.n_c, j.d_c]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
    {
        Ok(j)
    } else {
        Err(FitError::new(format!(
            "the joint L(N, D) fit did not converge ({j:?})"
        )))
    }
}

/// A law in N and D needs both to vary.
pub fn check_identifiable(points: &[Point]) -> Result<(), FitError> {
    let sizes = distinct(points.iter().map(|p| p.n_params)).len();
    let tokens = distinct(points.iter().map(|p| p.tokens)).len();
    if sizes < 2 || tokens < 2 || points.len() < 5 {
        return Err(FitError::new(format!(
            "a law in N and D needs at least two model sizes, two token counts and five runs \
             (the points have {sizes} size(s), {tokens} token count(s), {} run(s))",
            points.len()
        )));
    }
    Ok(())
}
