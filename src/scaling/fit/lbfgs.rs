//! Limited-memory BFGS (Nocedal & Wright, algorithm 7.4/7.5) with a
//! backtracking Armijo line search, for the handful of smooth parameters of a
//! scaling law. The objective returns its value and writes its gradient; a
//! non-finite value (a parameter outside its domain) makes the line search
//! step back, which is how the fits keep exponents positive without bounds.

/// Where a minimisation stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub f: f64,
    pub iterations: usize,
    /// The gradient or the change in value fell below its tolerance (as
    /// opposed to running out of iterations or of line-search steps).
    pub converged: bool,
}

/// Stopping rules of [`minimize`].
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    pub max_iterations: usize,
    /// Stop when every gradient component is below this.
    pub gradient: f64,
    /// Stop when an iteration lowers the value by less than this times max(1, |f|).
    pub value: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            max_iterations: 1000,
            gradient: 1e-10,
            value: 1e-15,
        }
    }
}

const HISTORY: usize = 10;
const ARMIJO: f64 = 1e-4;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The two-loop recursion: `-H·g` for the inverse Hessian approximation of
/// the stored pairs (s, y), scaled by γ = s·y / y·y of the newest pair.
fn search_direction(g: &[f64], pairs: &[(Vec<f64>, Vec<f64>, f64)]) -> Vec<f64> {
    let mut q: Vec<f64> = g.to_vec();
    let mut alphas = Vec::with_capacity(pairs.len());
    for (s, y, rho) in pairs.iter().rev() {
        let a = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
        alphas.push(a);
    }
    let gamma = pairs
        .last()
        .map(|(s, y, _)| dot(s, y) / dot(y, y))
        .unwrap_or(1.0);
    q.iter_mut().for_each(|qi| *qi *= gamma);
    for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
    }
    q.iter_mut().for_each(|qi| *qi = -*qi);
    q
}

/// Minimises `f` from `x0`. `f(x, grad)` returns the value at `x` and writes
/// the gradient into `grad`.
pub fn minimize<F>(mut f: F, x0: &[f64], tol: Tolerances) -> Minimum
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut pairs: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let (mut x_new, mut g_new) = (vec![0.0; n], vec![0.0; n]);
    if !fx.is_finite() {
        return Minimum {
            x,
            f: fx,
            iterations: 0,
            converged: false,
        };
    }
    for iteration in 0..tol.max_iterations {
        if g.iter().all(|gi| gi.abs() < tol.gradient) {
            return Minimum {
                x,
                f: fx,
                iterations: iteration,
                converged: true,
            };
        }
        let mut d = search_direction(&g, &pairs);
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction: forget the curvature and go downhill.
            pairs.clear();
            d = g.iter().map(|gi| -gi).collect();
            slope = dot(&g, &d);
        }
        // Without curvature information the first step is scaled to unit length.
        let mut t = if pairs.is_empty() {
            (1.0 / dot(&d, &d).sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            x_new
                .iter_mut()
                .zip(&x)
                .zip(&d)
                .for_each(|((xn, xi), di)| *xn = xi + t * di);
            let f_new = f(&x_new, &mut g_new);
            if f_new.is_finite() && f_new <= fx + ARMIJO * t * slope {
                accepted = Some(f_new);
                break;
            }
            t *= 0.5;
        }
        let Some(f_new) = accepted else {
            return Minimum {
                x,
                f: fx,
                iterations: iteration,
                converged: false,
            };
        };
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
            if pairs.len() == HISTORY {
                pairs.remove(0);
            }
            pairs.push((s, y, 1.0 / sy));
        }
        let decrease = fx - f_new;
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if decrease <= tol.value * fx.abs().max(1.0) {
            return Minimum {
                x,
                f: fx,
                iterations: iteration + 1,
                converged: true,
            };
        }
    }
    Minimum {
        x,
        f: fx,
        iterations: tol.max_iterations,
        converged: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock's valley: minimum 0 at (1, 1), a classic test of curvature handling.
    #[test]
    fn finds_the_rosenbrock_minimum() {
        let rosen = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let m = minimize(rosen, &[-1.2, 1.0], Tolerances::default());
        assert!(m.converged, "{m:?}");
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    /// An infinite value outside the domain keeps the iterate inside it.
    #[test]
    fn steps_back_from_non_finite_values() {
        // f(x) = x - ln x on x > 0: minimum at 1; infinite for x ≤ 0.
        let f = |x: &[f64], g: &mut [f64]| {
            if x[0] <= 0.0 {
                return f64::INFINITY;
            }
            g[0] = 1.0 - 1.0 / x[0];
            x[0] - x[0].ln()
        };
        let m = minimize(f, &[5.0], Tolerances::default());
        assert!((m.x[0] - 1.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn quadratic_in_many_dimensions() {
        let f = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for (i, (xi, gi)) in x.iter().zip(g.iter_mut()).enumerate() {
                let w = (i + 1) as f64;
                *gi = 2.0 * w * (xi - i as f64);
                v += w * (xi - i as f64).powi(2);
            }
            v
        };
        let m = minimize(f, &[0.0; 8], Tolerances::default());
        for (i, xi) in m.x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-7, "{m:?}");
        }
    }
}
