//! The compute frontier: the lower envelope of the loss-versus-compute curves
//! of all runs (Kaplan et al. 2020, figure 14; Hoffmann et al. 2022, approach
//! 1). At each compute C on a log grid, the run with the lowest loss at C
//! (its curve interpolated linearly in log C, log L) gives N_opt(C) and
//! D_opt(C) = C / (its compute per token); power laws through those give the
//! compute-optimal exponents and L(C_min).
//!
//! Runs of the smallest and largest sizes are left out of the envelope when
//! there are three or more sizes: that they win at some C may only mean that
//! no smaller or larger model was run there. Without curves (a plain table of
//! finished runs) the envelope is the Pareto front of the final points.

use super::stats::{fit_line, Line};
use super::FitError;
use crate::scaling::points::{distinct, Curve, ParamCount, PointSet};

/// One point of the lower envelope.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvelopePoint {
    pub compute: f64,
    pub loss: f64,
    pub n: f64,
    pub tokens: f64,
}

/// Power laws through the envelope: N_opt = k_N·C^a, D_opt = k_D·C^b,
/// L = (C_c / C)^α_C.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    pub n_line: Line,
    pub d_line: Line,
    pub loss_line: Line,
    pub points: Vec<EnvelopePoint>,
}

impl Frontier {
    pub fn n_exponent(&self) -> f64 {
        self.n_line.slope
    }
    pub fn d_exponent(&self) -> f64 {
        self.d_line.slope
    }
    pub fn alpha_c(&self) -> f64 {
        -self.loss_line.slope
    }
    pub fn c_c(&self) -> f64 {
        (self.loss_line.intercept / self.alpha_c()).exp()
    }
    /// The values the bootstrap keeps: a, ln k_N, b, ln k_D.
    pub fn params(&self) -> Vec<f64> {
        vec![
            self.n_line.slope,
            self.n_line.intercept,
            self.d_line.slope,
            self.d_line.intercept,
        ]
    }
}

const GRID: usize = 200;

/// The frontier of `set` with N counted as `count`.
pub fn frontier(set: &PointSet, count: ParamCount) -> Result<Frontier, FitError> {
    let points = if set.curves.iter().any(|c| c.samples.len() >= 2) {
        curve_envelope(&set.curves, count)
    } else {
        pareto_front(set, count)
    };
    let sizes = distinct(points.iter().map(|p| p.n));
    if sizes.len() < 2 {
        return Err(FitError::new(format!(
            "the lower envelope holds {} model size(s) after dropping the smallest and largest; \
             run more sizes or longer curves",
            sizes.len()
        )));
    }
    let logs = |f: fn(&EnvelopePoint) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.compute.ln(), f(p).ln())).collect()
    };
    let line = |pts: Vec<(f64, f64)>| {
        fit_line(&pts).ok_or_else(|| FitError::new("the envelope spans a single compute".into()))
    };
    Ok(Frontier {
        n_line: line(logs(|p| p.n))?,
        d_line: line(logs(|p| p.tokens))?,
        loss_line: line(logs(|p| p.loss))?,
        points,
    })
}

/// Sizes whose runs may enter the envelope: all but the extremes when there are three or more.
fn interior(sizes: &[f64], n: f64) -> bool {
    sizes.len() < 3 || (n > sizes[0] * (1.0 + 1e-9) && n < sizes[sizes.len() - 1] * (1.0 - 1e-9))
}

fn curve_envelope(curves: &[Curve], count: ParamCount) -> Vec<EnvelopePoint> {
    let sizes = distinct(curves.iter().map(|c| c.n(count)));
    let logs: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            c.samples
                .iter()
                .map(|(t, l)| ((c.flops_per_token * t).ln(), l.ln()))
                .collect()
        })
        .collect();
    let lo = logs
        .iter()
        .filter_map(|s| s.first())
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min);
    let hi = logs
        .iter()
        .filter_map(|s| s.last())
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut out = Vec::new();
    for i in 0..GRID {
        let x = lo + (hi - lo) * i as f64 / (GRID - 1) as f64;
        let at: Vec<(usize, f64)> = logs
            .iter()
            .enumerate()
            .filter_map(|(j, s)| interpolate(s, x).map(|y| (j, y)))
            .collect();
        if at.len() < 2 {
            continue;
        }
        let (j, y) = at
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("two candidates");
        let c = &curves[j];
        if interior(&sizes, c.n(count)) {
            out.push(EnvelopePoint {
                compute: x.exp(),
                loss: y.exp(),
                n: c.n(count),
                tokens: x.exp() / c.flops_per_token,
            });
        }
    }
    out
}

/// `y` at `x` on a polyline sorted by x; `None` outside its range.
fn interpolate(s: &[(f64, f64)], x: f64) -> Option<f64> {
    let (first, last) = (s.first()?, s.last()?);
    if x < first.0 || x > last.0 {
        return None;
    }
    let k = s.partition_point(|p| p.0 < x);
    if k == 0 {
        return Some(first.1);
    }
    let (a, b) = (s[k - 1], s[k]);
    Some(a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0))
}

fn pareto_front(set: &PointSet, count: ParamCount) -> Vec<EnvelopePoint> {
    let sizes = distinct(set.points.iter().map(|p| p.n(count)));
    let mut pts: Vec<_> = set.points.iter().collect();
    pts.sort_by(|a, b| a.compute.total_cmp(&b.compute));
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for p in pts {
        if p.loss < best {
            best = p.loss;
            if interior(&sizes, p.n(count)) {
                out.push(EnvelopePoint {
                    compute: p.compute,
                    loss: p.loss,
                    n: p.n(count),
                    tokens: p.tokens,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_inside_and_outside() {
        let s = [(0.0, 1.0), (1.0, 3.0), (3.0, 7.0)];
        assert_eq!(interpolate(&s, 0.5), Some(2.0));
        assert_eq!(interpolate(&s, 2.0), Some(5.0));
        assert_eq!(interpolate(&s, 0.0), Some(1.0));
        assert_eq!(interpolate(&s, 3.0), Some(7.0));
        assert_eq!(interpolate(&s, 3.5), None);
    }
}
