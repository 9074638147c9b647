//! The FP8 forward's rules, shared by both backends: which products run in
//! FP8 (`CRAM_FP8`), and E4M3 rounding with one scale per tensor. The CUDA
//! backend runs them on FP8 tensor cores (`cuda/ops/fp8.rs`); the CPU
//! backend emulates the same rounding in f32 (`cpu/matmul.rs`), so that the
//! GPU's FP8 products have a reference to be checked against and FP8's
//! effect on learning can be studied on a machine without a GPU. On the
//! CPU the switch makes nothing faster.

use super::MatmulShape;

/// Outputs at least this wide go through FP8: the input's cast costs m·k,
/// the product m·k·n, so narrow outputs (the attention projection and the
/// MLP's down projection at 768) would spend on the cast what the product
/// saves.
pub const FP8_MIN_OUT: usize = 2048;

/// E4M3's largest finite value.
pub const E4M3_MAX: f32 = 448.0;

/// Which forward products run in FP8, from `CRAM_FP8` (comparison switches
/// until FP8 is measured to learn as well as bf16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fp8Switch {
    /// Products whose input a norm writes (the blocks' QKV and up
    /// projections, through `norm_matmul_forward`), with `blocks` or
    /// `forward`. The input's scale comes from a bound that the norm's
    /// parameters give ([`norm_output_scale`]).
    pub normed: bool,
    /// Every other wide product (the decoder), with `forward`. The input's
    /// scale comes from its own largest magnitude ([`amax_scale`]).
    pub cast: bool,
}

impl Fp8Switch {
    /// The switch as `CRAM_FP8` sets it: `forward` (every wide product),
    /// `blocks` (the norm-fed ones) or anything else (none).
    pub fn from_env() -> Fp8Switch {
        Self::from_value(&std::env::var("CRAM_FP8").unwrap_or_default())
    }

    /// The switch for `CRAM_FP8`'s `value`.
    pub fn from_value(value: &str) -> Fp8Switch {
        Fp8Switch {
            normed: value == "forward" || value == "blocks",
            cast: value == "forward",
        }
    }

    /// The switch as a user sets it, when on.
    pub fn name(self) -> Option<&'static str> {
        match (self.normed, self.cast) {
            (_, true) => Some("CRAM_FP8=forward"),
            (true, false) => Some("CRAM_FP8=blocks"),
            _ => None,
        }
    }
}

/// Whether a product of `shape` is one FP8 pays for and cuBLASLt's FP8
/// products take: an output of [`FP8_MIN_OUT`] or wider, every size a
/// multiple of 16. (The CUDA backend adds its own alignment conditions.)
pub fn fp8_shape(shape: MatmulShape) -> bool {
    let MatmulShape { m, k, n } = shape;
    n >= FP8_MIN_OUT && [m, k, n].iter().all(|d| d.is_multiple_of(16))
}

/// `x` rounded to the nearest E4M3 value (ties to even), saturating at ±448
/// like the GPU's `cvt.rn.satfinite`: 3 mantissa bits, normal exponents from
/// 2⁻⁶, subnormal steps of 2⁻⁹.
pub fn e4m3(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return E4M3_MAX.copysign(x);
    }
    // The exponent of a's binade, no lower than the smallest normal's.
    let exponent = ((a.to_bits() >> 23) as i32 - 127).max(-6);
    let step = (2f32).powi(exponent - 3);
    ((a / step).round_ties_even() * step).copysign(x)
}

/// The scale putting a tensor's largest magnitude `amax` on E4M3's largest
/// value ("current scaling"; 1 for an all-zero tensor).
pub fn amax_scale(amax: f32) -> f32 {
    if amax > 0.0 {
        E4M3_MAX / amax
    } else {
        1.0
    }
}

/// The E4M3 scale of a norm's output from the norm's parameters alone:
/// |x̂| < √cols for LayerNorm (Σ x̂² = cols·var/(var+eps)) and RMSNorm alike,
/// so |y_c| ≤ √cols·|w_c| + |b_c| bounds every output without a pass over
/// it (the CUDA norm kernel's `fp8_norm_scale` computes the same).
pub fn norm_output_scale(weight: &[f32], bias: Option<&[f32]>) -> f32 {
    let root = (weight.len() as f32).sqrt();
    let bound = weight
        .iter()
        .enumerate()
        .map(|(c, w)| root * w.abs() + bias.map_or(0.0, |b| b[c].abs()))
        .fold(0.0, f32::max);
    amax_scale(bound)
}

/// `x` as the FP8 product sees it: each value scaled, rounded to E4M3 and
/// scaled back (the product multiplies by the inverse scale).
pub fn round_e4m3(x: &[f32], scale: f32) -> Vec<f32> {
    x.iter().map(|v| e4m3(v * scale) / scale).collect()
}

/// [`round_e4m3`] with the tensor's own largest magnitude as the scale.
pub fn round_e4m3_by_amax(x: &[f32]) -> Vec<f32> {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    round_e4m3(x, amax_scale(amax))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite E4M3 value, from its bits (sign 0, 4 exponent bits with
    /// bias 7, 3 mantissa bits; 0x7f is NaN).
    fn e4m3_values() -> Vec<f32> {
        (0u32..0x7f)
            .map(|bits| {
                let (e, m) = ((bits >> 3) as i32, (bits & 7) as f32);
                if e == 0 {
                    m / 8.0 * (2f32).powi(-6)
                } else {
                    (1.0 + m / 8.0) * (2f32).powi(e - 7)
                }
            })
            .collect()
    }

    #[test]
    fn e4m3_keeps_every_value_and_rounds_midpoints_to_even() {
        let values = e4m3_values();
        assert_eq!(values.last(), Some(&448.0));
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(e4m3(v), v, "{v} is an E4M3 value");
            assert_eq!(e4m3(-v), -v);
            if let Some(&next) = values.get(i + 1) {
                let mid = (v + next) / 2.0;
                // The even neighbour has an even mantissa: bit pattern index even.
                let even = if i % 2 == 0 { v } else { next };
                assert_eq!(e4m3(mid), even, "midpoint of {v} and {next}");
                assert_eq!(e4m3(v + (next - v) * 0.3), v);
                assert_eq!(e4m3(v + (next - v) * 0.7), next);
            }
        }
    }

    #[test]
    fn e4m3_saturates_like_satfinite() {
        assert_eq!(e4m3(500.0), 448.0);
        assert_eq!(e4m3(f32::INFINITY), 448.0);
        assert_eq!(e4m3(-1e9), -448.0);
        assert!(e4m3(f32::NAN).is_nan());
        assert_eq!(e4m3(1e-9), 0.0);
    }

    #[test]
    fn norm_scale_bounds_every_output() {
        let weight = [1.0, -3.0, 0.5, 2.0];
        let bias = [0.1, 0.0, -0.4, 0.2];
        // √4·3 + 0 = 6 is the largest bound.
        assert_eq!(norm_output_scale(&weight, Some(&bias)), 448.0 / 6.0);
        assert_eq!(norm_output_scale(&[0.0; 4], None), 1.0);
    }

    #[test]
    fn switch_names() {
        let blocks = Fp8Switch {
            normed: true,
            cast: false,
        };
        assert_eq!(blocks.name(), Some("CRAM_FP8=blocks"));
        assert_eq!(Fp8Switch::default().name(), None);
    }
}
