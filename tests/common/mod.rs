//! Helpers shared by the CPU backend tests: seeded random inputs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform in `[-scale, scale)`.
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `len` ids uniform in `[0, bound)`.
pub fn ids(rng: &mut ChaCha8Rng, len: usize, bound: u32) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..bound)).collect()
}
