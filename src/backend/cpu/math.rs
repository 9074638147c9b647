//! Functions written so that loops over them vectorise. The standard
//! library's `exp` is a call into the C library per element, and a plain
//! `iter().sum()` is one long dependency chain (IEEE addition is not
//! reassociated); both dominated softmax, cross-entropy and the norms.
//! The reductions use a fixed number of lanes, so their results are
//! deterministic.

/// Partial sums kept by [`sum`] and [`max`]: two AVX registers' worth.
const LANES: usize = 16;

/// `Σ x`, accumulated in [`LANES`] interleaved partial sums.
pub(super) fn sum(x: &[f32]) -> f32 {
    sum_by(x, |v| v)
}

/// `Σ f(x)`, accumulated in [`LANES`] interleaved partial sums.
#[inline(always)]
pub(super) fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] += f(chunk[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `max x` (`-inf` for an empty slice), over [`LANES`] interleaved maxima.
pub(super) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] = if chunk[i] > acc[i] { chunk[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `e^x` with a relative error below 1e-7, about 1 ulp (Cephes' `expf` polynomial after reducing `x` to
/// `n·ln 2 + r` with |r| ≤ ln2/2). Below -87.3 it returns 0, and above 88.3 it
/// saturates at about 2.4e38 instead of overflowing: the callers pass `x ≤ 0`
/// (softmax, Gaussian) or only need `1/(1 + e^x)` to vanish (sigmoid).
#[inline]
pub(super) fn exp(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer that lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.3, 88.3);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * two_n
    }
}

/// Φ(x), the standard normal CDF, to within 3e-7 absolute (measured over
/// [-12, 12] against f64 erf; libm's `erff` is within about 1e-7, the
/// formula itself 7.5e-8, the rest is f32 rounding): Abramowitz & Stegun
/// 7.1.26 for erf(|x|/√2) on the
/// [`exp`] above, mirrored for x < 0. Unlike libm's `erff` it has no call
/// and no branch, so a loop over it vectorises: exact GELU's factor was the
/// CPU's third hotspot (about 10% of a `tiny` step, 2026-12-06). Its absolute
/// error is what a GELU needs (x·Φ(x) and Φ(x) + x·φ(x)); it is not a
/// general erf, whose relative error near 0 would be larger.
#[inline]
pub(super) fn normal_cdf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    // erf(z) = 1 − poly·e^{−z²}; Φ(|x|) = (1 + erf(z)) / 2.
    let tail = 0.5 * poly * exp(-z * z);
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::{exp, max, normal_cdf, sum};

    #[test]
    fn normal_cdf_is_within_3e7_of_the_f64_erf() {
        let mut worst = 0f64;
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            let exact = 0.5 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            worst = worst.max((normal_cdf(x) as f64 - exact).abs());
        }
        assert!(worst < 3e-7, "max |Φ error| {worst:e} over [-12, 12]");
        assert_eq!(normal_cdf(-200.0), 0.0);
        assert_eq!(normal_cdf(200.0), 1.0);
    }

    #[test]
    fn lane_reductions_match_plain_ones() {
        for len in [0, 1, 15, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
            // Integers: every order of addition gives the same sum.
            assert_eq!(sum(&x), x.iter().sum::<f32>(), "sum of {len}");
            assert_eq!(
                max(&x),
                x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                "max of {len}"
            );
        }
    }

    #[test]
    fn exp_is_within_one_ulp() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + i as f32 * (175.0 / 2_000_000.0);
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() * f32::EPSILON;
            let error = (exp(x) as f64 - exact).abs() / ulp as f64;
            worst = worst.max(error);
        }
        eprintln!("worst error {worst:.2} ulp");
        assert!(worst <= 1.0, "exp is off by {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }
}
