//! The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018,
//! "An Empirical Model of Large-Batch Training"), the batch size beyond which
//! larger batches stop paying off. With the squared norms of mean gradients
//! over a small batch B_s and a big batch B_b, appendix A's unbiased estimates
//! are
//!
//! ```text
//! |G|²  ≈ (B_b·|G_b|² − B_s·|G_s|²) / (B_b − B_s)
//! tr(Σ) ≈ (|G_s|² − |G_b|²) / (1/B_s − 1/B_b)
//! ```
//!
//! Each is noisy on one step, so both are averaged over steps before the
//! ratio is taken. The trainer measures |G_s|² after the first micro-batch of
//! a step and |G_b|² after all of them: no extra forward or backward pass.

/// Squared gradient norms at two batch sizes of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormPair {
    pub small_batch: f64,
    pub small_norm_sq: f64,
    pub big_batch: f64,
    pub big_norm_sq: f64,
}

impl NormPair {
    /// The unbiased estimates (|G|², tr Σ) of one pair.
    pub fn estimates(&self) -> (f64, f64) {
        let (bs, bb) = (self.small_batch, self.big_batch);
        let g2 = (bb * self.big_norm_sq - bs * self.small_norm_sq) / (bb - bs);
        let trace = (self.small_norm_sq - self.big_norm_sq) / (1.0 / bs - 1.0 / bb);
        (g2, trace)
    }
}

/// The averaged estimates over a logging interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseScale {
    pub grad_sq: f64,
    pub trace: f64,
    pub steps: u64,
}

impl NoiseScale {
    /// B_simple, in the unit of the batch sizes; `None` when the |G|² estimate
    /// is not positive (too few steps for the noise to average out).
    pub fn b_simple(&self) -> Option<f64> {
        (self.grad_sq > 0.0).then(|| self.trace / self.grad_sq)
    }
}

/// Sums estimates until taken.
#[derive(Debug, Clone, Default)]
pub struct NoiseMeter {
    grad_sq: f64,
    trace: f64,
    steps: u64,
}

impl NoiseMeter {
    pub fn add(&mut self, pair: NormPair) {
        let (g2, trace) = pair.estimates();
        if g2.is_finite() && trace.is_finite() {
            self.grad_sq += g2;
            self.trace += trace;
            self.steps += 1;
        }
    }

    /// The mean estimates since the last call, and a reset.
    pub fn take(&mut self) -> Option<NoiseScale> {
        let out = (self.steps > 0).then(|| NoiseScale {
            grad_sq: self.grad_sq / self.steps as f64,
            trace: self.trace / self.steps as f64,
            steps: self.steps,
        });
        *self = NoiseMeter::default();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Per-example gradients g_i = G + ε_i with ε_i ~ N(0, diag(σ²)): the mean
    /// of a batch of B has E|Ĝ|² = |G|² + tr(Σ)/B. The estimator, averaged
    /// over steps, recovers |G|², tr(Σ) = Σσ² and their ratio.
    #[test]
    fn recovers_trace_and_norm_of_a_synthetic_gradient_source() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let dim = 64;
        let g: Vec<f64> = (0..dim).map(|i| 0.1 * ((i % 7) as f64 - 3.0)).collect();
        let sigma: Vec<f64> = (0..dim).map(|i| 0.5 + (i % 5) as f64 * 0.25).collect();
        let true_g2: f64 = g.iter().map(|x| x * x).sum();
        let true_trace: f64 = sigma.iter().map(|s| s * s).sum();
        let (small, micro_steps) = (4usize, 8usize);
        let mut meter = NoiseMeter::default();
        for _ in 0..4000 {
            let mut sums = vec![vec![0.0; dim]; micro_steps];
            for sum in sums.iter_mut() {
                for _ in 0..small {
                    for ((s, gi), si) in sum.iter_mut().zip(&g).zip(&sigma) {
                        *s += gi + si * normal(&mut rng);
                    }
                }
            }
            let norm_sq_of_mean = |parts: &[Vec<f64>]| {
                let b = (parts.len() * small) as f64;
                (0..dim)
                    .map(|j| (parts.iter().map(|p| p[j]).sum::<f64>() / b).powi(2))
                    .sum::<f64>()
            };
            meter.add(NormPair {
                small_batch: small as f64,
                small_norm_sq: norm_sq_of_mean(&sums[..1]),
                big_batch: (small * micro_steps) as f64,
                big_norm_sq: norm_sq_of_mean(&sums),
            });
        }
        let est = meter.take().unwrap();
        let b_true = true_trace / true_g2;
        let b = est.b_simple().unwrap();
        eprintln!(
            "|G|² {:.4} (true {true_g2:.4}), tr Σ {:.3} (true {true_trace:.3}), B_simple {b:.3} (true {b_true:.3})",
            est.grad_sq, est.trace
        );
        assert!((est.grad_sq / true_g2 - 1.0).abs() < 0.05);
        assert!((est.trace / true_trace - 1.0).abs() < 0.05);
        assert!((b / b_true - 1.0).abs() < 0.07);
        assert!(meter.take().is_none(), "take resets");
    }

    /// Exact expectations: E|G_B|² = |G|² + tr/B gives the inputs back.
    #[test]
    fn exact_expectations_invert() {
        let (g2, trace) = (2.0, 30.0);
        let pair = NormPair {
            small_batch: 3.0,
            small_norm_sq: g2 + trace / 3.0,
            big_batch: 12.0,
            big_norm_sq: g2 + trace / 12.0,
        };
        let (eg, et) = pair.estimates();
        assert!((eg - g2).abs() < 1e-12 && (et - trace).abs() < 1e-12);
    }
}
