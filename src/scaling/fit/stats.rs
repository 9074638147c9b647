//! Small numerical helpers of the fits: least-squares lines and parabolas,
//! percentiles, the Huber loss.

/// `y = slope·x + intercept` by least squares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
}

impl Line {
    pub fn at(&self, x: f64) -> f64 {
        self.slope * x + self.intercept
    }
}

/// The least-squares line through `(x, y)`; `None` when the x are all equal
/// or fewer than two.
pub fn fit_line(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 1e-12 * n * mx.abs().max(1.0).powi(2) {
        return None;
    }
    let slope = sxy / sxx;
    Some(Line {
        slope,
        intercept: my - slope * mx,
    })
}

/// `y = c0 + c1·x + c2·x²` by least squares (x centred for conditioning);
/// `None` with fewer than three distinct x.
pub fn fit_parabola(points: &[(f64, f64)]) -> Option<[f64; 3]> {
    let n = points.len() as f64;
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    if xs.len() < 3 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    // Normal equations of (1, u, u²) with u = x - mx.
    let mut m = [[0.0f64; 4]; 3];
    for &(x, y) in points {
        let u = x - mx;
        let basis = [1.0, u, u * u];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] += basis[r] * basis[c];
            }
            m[r][3] += basis[r] * y;
        }
    }
    let [b0, b1, b2] = solve3(m)?;
    // Back from u to x: b0 + b1(x-mx) + b2(x-mx)².
    Some([b0 - b1 * mx + b2 * mx * mx, b1 - 2.0 * b2 * mx, b2])
}

/// Gaussian elimination with partial pivoting of an augmented 3×4 system.
fn solve3(mut m: [[f64; 4]; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for row in m.iter_mut().skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|c| m[r][c] * x[c]).sum();
        x[r] = (m[r][3] - s) / m[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The smallest and largest of `values`: (+∞, −∞) when there are none.
pub fn extent(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    (values.into_iter()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Huber's loss divided by δ, and its derivative: r²/(2δ) inside ±δ,
/// |r| − δ/2 outside. Dividing by δ keeps values near |r| without moving the
/// minimum.
pub fn huber(r: f64, delta: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (r * r / (2.0 * delta), r / delta)
    } else {
        (r.abs() - delta / 2.0, r.signum())
    }
}

/// ln(Σ exp(v)) and the softmax weights of `v`, without overflow.
pub fn log_sum_exp<const K: usize>(v: [f64; K]) -> (f64, [f64; K]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut w = v.map(|x| (x - max).exp());
    let sum: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= sum);
    (max + sum.ln(), w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_parabola_are_exact_on_exact_data() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 3.0 * i as f64 - 2.0)).collect();
        let l = fit_line(&pts).unwrap();
        assert!((l.slope - 3.0).abs() < 1e-12 && (l.intercept + 2.0).abs() < 1e-12);
        let pts: Vec<(f64, f64)> = (0..6)
            .map(|i| {
                let x = 10.0 + i as f64;
                (x, 1.0 - 2.0 * x + 0.5 * x * x)
            })
            .collect();
        let c = fit_parabola(&pts).unwrap();
        assert!(
            (c[0] - 1.0).abs() < 1e-8 && (c[1] + 2.0).abs() < 1e-9 && (c[2] - 0.5).abs() < 1e-10,
            "{c:?}"
        );
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
        assert!(fit_line(&[(1.0, 2.0)]).is_none());
        assert!(fit_parabola(&[(1.0, 1.0), (2.0, 2.0), (2.0, 3.0)]).is_none());
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.125), 1.5);
        assert_eq!(quantile(&v, 1.0), 5.0);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let (l, w) = log_sum_exp([1000.0, 1000.0]);
        assert!((l - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(w, [0.5, 0.5]);
    }
}
