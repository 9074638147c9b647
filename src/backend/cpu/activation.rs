//! Element-wise ops: exact GELU and SiLU, the gated unit (value | gate per
//! row), addition, and inverted dropout with the counter-based mask of
//! [`dropout_keep`]. Backwards overwrite their input gradient (`=`).

use rayon::prelude::*;

use super::math::exp;
use super::{Cpu, ELEMENT_CHUNK};
use crate::backend::{dropout_keep, Activation, ActivationOps};

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The activation's value and slope at `x`, computed together because they
/// share the expensive part (the erf, or the sigmoid). Always inlined, so
/// that callers that need only the value let the compiler drop the slope.
#[inline(always)]
fn activate(act: Activation, x: f32) -> (f32, f32) {
    match act {
        // x·Φ(x), with slope Φ(x) + x·φ(x)
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
            (x * cdf, cdf + x * pdf)
        }
        // x·σ(x), with slope σ(x)·(1 + x·(1 - σ(x)))
        Activation::Silu => {
            let s = 1.0 / (1.0 + exp(-x));
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
    }
}

/// `out[i] = f(i, a[i])` over the length of `out`, in parallel chunks.
fn map_indexed(out: &mut [f32], a: &[f32], f: impl Fn(usize, f32) -> f32 + Sync) {
    let n = out.len();
    out.par_chunks_mut(ELEMENT_CHUNK)
        .zip(a[..n].par_chunks(ELEMENT_CHUNK))
        .enumerate()
        .for_each(|(chunk, (o, a))| {
            let base = chunk * ELEMENT_CHUNK;
            for (i, (o, &a)) in o.iter_mut().zip(a).enumerate() {
                *o = f(base + i, a);
            }
        });
}

/// `out[i] = f(a[i], b[i])` over the length of `out`, in parallel chunks.
fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    let n = out.len();
    out.par_chunks_mut(ELEMENT_CHUNK)
        .zip(a[..n].par_chunks(ELEMENT_CHUNK))
        .zip(b[..n].par_chunks(ELEMENT_CHUNK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
}

impl ActivationOps for Cpu {
    fn activation_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, act: Activation) {
        map_indexed(&mut out[..inp.len()], inp, |_, x| activate(act, x).0);
    }

    fn activation_backward(
        &self,
        dinp: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        act: Activation,
    ) {
        zip_map(&mut dinp[..inp.len()], dout, inp, |dy, x| {
            dy * activate(act, x).1
        });
    }

    fn glu_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, act: Activation, half: usize) {
        let rows = inp.len() / (2 * half);
        out[..rows * half]
            .par_chunks_mut(half)
            .zip(inp.par_chunks(2 * half))
            .for_each(|(y, x)| {
                let (value, gate) = x.split_at(half);
                for ((y, &v), &g) in y.iter_mut().zip(value).zip(gate) {
                    *y = v * activate(act, g).0;
                }
            });
    }

    fn glu_backward(
        &self,
        dinp: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        act: Activation,
        half: usize,
    ) {
        let rows = inp.len() / (2 * half);
        dinp[..rows * 2 * half]
            .par_chunks_mut(2 * half)
            .zip(inp.par_chunks(2 * half))
            .zip(dout.par_chunks(half))
            .for_each(|((dx, x), dy)| {
                let (dvalue, dgate) = dx.split_at_mut(half);
                let (value, gate) = x.split_at(half);
                for c in 0..half {
                    let (activated, slope) = activate(act, gate[c]);
                    dvalue[c] = dy[c] * activated;
                    dgate[c] = dy[c] * value[c] * slope;
                }
            });
    }

    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>) {
        zip_map(&mut out[..a.len()], a, b, |a, b| a + b);
    }

    fn dropout_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, p: f32, seed: u64) {
        dropout(&mut out[..inp.len()], inp, p, seed);
    }

    fn dropout_backward(&self, dinp: &mut Vec<f32>, dout: &Vec<f32>, p: f32, seed: u64) {
        dropout(&mut dinp[..dout.len()], dout, p, seed);
    }
}

/// `out[i] = inp[i] / (1 - p)` where element `i` is kept, 0 where dropped. The
/// backward is the same map applied to the output gradient.
fn dropout(out: &mut [f32], inp: &[f32], p: f32, seed: u64) {
    if p <= 0.0 {
        out.copy_from_slice(&inp[..out.len()]);
        return;
    }
    let scale = 1.0 / (1.0 - p);
    map_indexed(out, inp, |i, x| {
        if dropout_keep(seed, i as u64, p) {
            x * scale
        } else {
            0.0
        }
    });
}
