//! Hoffmann et al. (2022) approaches 2 and 3 (approach 1 is the envelope of
//! `envelope.rs`), with N counted as all parameters.
//!
//! Approach 2: final points are grouped into IsoFLOP levels (compute within
//! 10% of each other); at each level with at least three sizes a parabola in
//! log N is fitted to the loss near its measured minimum (the best size and
//! up to two sizes on each side of it: far from the optimum a profile is not
//! a parabola, and gpt-gpu-1's models 10× past it, trained for a few hundred
//! steps, pulled the vertex of a fit over all sizes out of the range) and
//! its vertex, when inside those sizes, is that level's N_opt (D_opt by
//! interpolating log D over log N among the same runs). Power laws through
//! the vertices give the exponents.
//!
//! Approach 3: L(N, D) = E + A/N^α + B/D^β, written as
//! log L = LSE(a − α log N, b − β log D, e) with A = e^a, B = e^b, E = e^e,
//! minimising the Huber loss (δ = 10⁻³) of the log-loss residuals with L-BFGS
//! from the paper's grid of starts: α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …,
//! 1}, a, b ∈ {0, 5, …, 25}. At C = 6ND it gives N_opt = G·(C/6)^(β/(α+β)),
//! D_opt = G⁻¹·(C/6)^(α/(α+β)), G = (αA/(βB))^(1/(α+β)).

use super::lbfgs::{minimize, Tolerances};
use super::stats::{fit_line, fit_parabola, huber, log_sum_exp, Line};
use super::FitError;
use crate::scaling::points::{distinct, ParamCount, Point};

/// One IsoFLOP level of approach 2.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IsoFlopLevel {
    pub compute: f64,
    /// (N, loss) of the level's runs.
    pub runs: Vec<(f64, f64)>,
    /// Loss = c0 + c1·ln N + c2·(ln N)².
    pub parabola: [f64; 3],
    /// The sizes the parabola was fitted to (around the level's best run);
    /// absent in fit.json files from before the window, which fitted all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<[f64; 2]>,
    pub n_opt: f64,
    pub d_opt: f64,
    pub loss_opt: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IsoFlop {
    pub levels: Vec<IsoFlopLevel>,
    /// Levels that could not give a vertex, and why.
    pub skipped: Vec<String>,
    pub n_line: Line,
    pub d_line: Line,
}

impl IsoFlop {
    pub fn params(&self) -> Vec<f64> {
        vec![
            self.n_line.slope,
            self.n_line.intercept,
            self.d_line.slope,
            self.d_line.intercept,
        ]
    }
}

/// Whether compute `higher` (≥ `lower`) is within 10% of `lower`: one
/// IsoFLOP level, as approach 2 and the held-out check group runs.
pub fn same_level(lower: f64, higher: f64) -> bool {
    (higher / lower).ln() < 1.1f64.ln()
}

/// Groups points whose compute is within 10% of the level's first point.
pub fn isoflop_levels(points: &[Point]) -> Vec<Vec<&Point>> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| a.compute.total_cmp(&b.compute));
    let mut levels: Vec<Vec<&Point>> = Vec::new();
    for p in sorted {
        match levels.last_mut() {
            Some(level) if same_level(level[0].compute, p.compute) => level.push(p),
            _ => levels.push(vec![p]),
        }
    }
    levels
}

/// The sizes a level's parabola is fitted to: from two sizes below the one
/// with the lowest loss to two above it (`sizes` sorted and distinct, `runs`
/// the level's (N, loss)). Three sizes or more whenever the level has three.
fn window_around_minimum(sizes: &[f64], runs: &[(f64, f64)]) -> (f64, f64) {
    let best = runs
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(sizes[0], |r| r.0);
    let at = sizes.iter().position(|&s| s == best).unwrap_or(0);
    // Keep three sizes at an end of the range: the best and the next two.
    let first = at.saturating_sub(2).min(sizes.len().saturating_sub(3));
    let last = (at + 2).max(first + 2).min(sizes.len() - 1);
    (sizes[first], sizes[last])
}

pub fn isoflop(points: &[Point], count: ParamCount) -> Result<IsoFlop, FitError> {
    let mut levels = Vec::new();
    let mut skipped = Vec::new();
    for level in isoflop_levels(points) {
        let compute =
            (level.iter().map(|p| p.compute.ln()).sum::<f64>() / level.len() as f64).exp();
        let sizes = distinct(level.iter().map(|p| p.n(count)));
        if sizes.len() < 3 {
            if level.len() > 1 {
                skipped.push(format!(
                    "C = {compute:.3e}: {} size(s), a parabola needs 3",
                    sizes.len()
                ));
            }
            continue;
        }
        let runs: Vec<(f64, f64)> = level.iter().map(|p| (p.n(count), p.loss)).collect();
        let (lo, hi) = window_around_minimum(&sizes, &runs);
        let near: Vec<&&Point> = level
            .iter()
            .filter(|p| (lo..=hi).contains(&p.n(count)))
            .collect();
        let logs: Vec<(f64, f64)> = near.iter().map(|p| (p.n(count).ln(), p.loss)).collect();
        let Some(c) = fit_parabola(&logs) else {
            continue;
        };
        let vertex = -c[1] / (2.0 * c[2]);
        if !(c[2] > 0.0 && vertex > lo.ln() && vertex < hi.ln()) {
            skipped.push(format!(
                "C = {compute:.3e}: the parabola's minimum lies outside the sizes around the best \
                 one ({lo:.3e}..{hi:.3e})"
            ));
            continue;
        }
        let d_of_n: Vec<(f64, f64)> = near
            .iter()
            .map(|p| (p.n(count).ln(), p.tokens.ln()))
            .collect();
        let d_line = fit_line(&d_of_n).expect("three sizes");
        levels.push(IsoFlopLevel {
            compute,
            runs,
            parabola: c,
            window: Some([lo, hi]),
            n_opt: vertex.exp(),
            d_opt: d_line.at(vertex).exp(),
            loss_opt: c[0] + c[1] * vertex + c[2] * vertex * vertex,
        });
    }
    if levels.len() < 2 {
        return Err(FitError::new(format!(
            "IsoFLOP profiles need two compute levels with three sizes each and a minimum inside \
             them; found {} ({})",
            levels.len(),
            if skipped.is_empty() {
                "no level had three sizes".to_string()
            } else {
                skipped.join("; ")
            }
        )));
    }
    let line = |f: fn(&IsoFlopLevel) -> f64| {
        let pts: Vec<(f64, f64)> = levels.iter().map(|l| (l.compute.ln(), f(l).ln())).collect();
        fit_line(&pts).expect("two levels of different compute")
    };
    Ok(IsoFlop {
        n_line: line(|l| l.n_opt),
        d_line: line(|l| l.d_opt),
        levels,
        skipped,
    })
}

/// E + A/N^α + B/D^β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parametric {
    pub e: f64,
    pub a: f64,
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
}

pub const HUBER_DELTA: f64 = 1e-3;

impl Parametric {
    /// [ln A, ln B, ln E, α, β]: the coordinates of the minimisation.
    pub fn params(&self) -> Vec<f64> {
        vec![self.a.ln(), self.b.ln(), self.e.ln(), self.alpha, self.beta]
    }

    pub fn from_params(x: &[f64]) -> Parametric {
        Parametric {
            a: x[0].exp(),
            b: x[1].exp(),
            e: x[2].exp(),
            alpha: x[3],
            beta: x[4],
        }
    }

    pub fn loss(&self, n: f64, d: f64) -> f64 {
        self.e + self.a / n.powf(self.alpha) + self.b / d.powf(self.beta)
    }

    pub fn optimal_n_exponent(&self) -> f64 {
        self.beta / (self.alpha + self.beta)
    }

    pub fn optimal_d_exponent(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// N_opt and D_opt at compute C = 6ND.
    pub fn optimum(&self, compute: f64) -> (f64, f64) {
        let s = self.alpha + self.beta;
        let g = (self.alpha * self.a / (self.beta * self.b)).powf(1.0 / s);
        let n = g * (compute / 6.0).powf(self.beta / s);
        (n, compute / (6.0 * n))
    }
}

/// Σ Huber(LSE(a − α ln N, b − β ln D, e) − ln L) and its gradient.
fn parametric_objective(data: &[(f64, f64, f64)], x: &[f64], g: &mut [f64]) -> f64 {
    if !x.iter().all(|v| v.is_finite()) {
        return f64::INFINITY;
    }
    let (a, b, e, alpha, beta) = (x[0], x[1], x[2], x[3], x[4]);
    g.iter_mut().for_each(|v| *v = 0.0);
    let mut sum = 0.0;
    for &(ln_n, ln_d, ln_l) in data {
        let (pred, [w1, w2, w3]) = log_sum_exp([a - alpha * ln_n, b - beta * ln_d, e]);
        let (h, dh) = huber(pred - ln_l, HUBER_DELTA);
        sum += h;
        g[0] += dh * w1;
        g[1] += dh * w2;
        g[2] += dh * w3;
        g[3] -= dh * w1 * ln_n;
        g[4] -= dh * w2 * ln_d;
    }
    sum
}

fn log_data(points: &[Point], count: ParamCount) -> Vec<(f64, f64, f64)> {
    points
        .iter()
        .map(|p| (p.n(count).ln(), p.tokens.ln(), p.loss.ln()))
        .collect()
}

/// The paper's grid of 4500 starts.
fn paper_grid() -> Vec<[f64; 5]> {
    let mut starts = Vec::with_capacity(4500);
    for alpha in [0.0, 0.5, 1.0, 1.5, 2.0] {
        for beta in [0.0, 0.5, 1.0, 1.5, 2.0] {
            for e in [-1.0, -0.5, 0.0, 0.5, 1.0] {
                for a in [0.0, 5.0, 10.0, 15.0, 20.0, 25.0] {
                    for b in [0.0, 5.0, 10.0, 15.0, 20.0, 25.0] {
                        starts.push([a, b, e, alpha, beta]);
                    }
                }
            }
        }
    }
    starts
}

/// Approach 3 from every start of the paper's grid; the best minimum wins.
pub fn parametric(points: &[Point], count: ParamCount) -> Result<Parametric, FitError> {
    use rayon::prelude::*;
    let data = log_data(points, count);
    let best = paper_grid()
        .par_iter()
        .map(|s| {
            minimize(
                |x, g| parametric_objective(&data, x, g),
                s,
                Tolerances::default(),
            )
        })
        .filter(|m| m.f.is_finite())
        .min_by(|a, b| a.f.total_cmp(&b.f))
        .ok_or_else(|| FitError::new("no start of the parametric fit gave a finite loss".into()))?;
    checked(Parametric::from_params(&best.x))
}

/// Approach 3 from one start (bootstrap replicates start at the full fit).
pub fn parametric_from(
    points: &[Point],
    count: ParamCount,
    start: &Parametric,
) -> Result<Parametric, FitError> {
    let data = log_data(points, count);
    let m = minimize(
        |x, g| parametric_objective(&data, x, g),
        &start.params(),
        Tolerances::default(),
    );
    checked(Parametric::from_params(&m.x))
}

fn checked(p: Parametric) -> Result<Parametric, FitError> {
    let falls = |name: &str, v: f64| {
        if v > 0.0 {
            Ok(())
        } else {
            Err(FitError::new(format!(
                "the best parametric fit has the loss not falling with {name} (exponent {v:.4}); \
                 the runs need a wider range of {name}"
            )))
        }
    };
    falls("N", p.alpha)?;
    falls("D", p.beta)?;
    // E may underflow to 0: a law without an irreducible floor is still a law.
    if p.e >= 0.0 && [p.e, p.a, p.b].iter().all(|v| v.is_finite()) && p.a > 0.0 && p.b > 0.0 {
        Ok(p)
    } else {
        Err(FitError::new(format!(
            "the parametric fit did not converge ({p:?})"
        )))
    }
}
