//! Random numbers shared by layers that must not import each other (the
//! model's initialisation, the GLUE heads', the CUDA backend's test
//! samples): a standard normal sample by the Box–Muller transform, so that
//! a draw depends only on the generator's stream (ChaCha), with no extra
//! crate.

use rand::Rng;

pub fn standard_normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
