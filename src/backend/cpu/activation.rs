//! Element-wise ops: exact GELU and SiLU, the gated unit (value | gate per
//! row), addition, and inverted dropout with the counter-based mask of
//! [`dropout_keep`]. Backwards overwrite their input gradient (`=`).

use rayon::prelude::*;

use super::math::{exp, normal_cdf};
use super::{Cpu, ELEMENT_CHUNK};
use crate::backend::{dropout_keep, Activation, ActivationOps};

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Writes `factor[i]`, the quantity an activation's value `x·factor` and its
/// slope are both built from: Φ(x) for GELU, σ(x) for SiLU. Both are
/// branch-free arithmetic on [`exp`] ([`normal_cdf`] replaced a call to
/// libm's erf per element, which no loop could vectorise).
fn factors(act: Activation, x: &[f32], factor: &mut [f32]) {
    match act {
        Activation::Gelu => {
            for (f, &x) in factor.iter_mut().zip(x) {
                *f = normal_cdf(x);
            }
        }
        Activation::Silu => {
            for (f, &x) in factor.iter_mut().zip(x) {
                *f = 1.0 / (1.0 + exp(-x));
            }
        }
    }
}

/// The activation's slope at `x`, given its factor (see [`factors`]).
#[inline(always)]
fn slope(act: Activation, x: f32, factor: f32) -> f32 {
    match act {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        Activation::Gelu => factor + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x),
        // d/dx x·σ(x) = σ(x)·(1 + x·(1 - σ(x)))
        Activation::Silu => factor * (1.0 + x * (1.0 - factor)),
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
        out[..inp.len()]
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(inp.par_chunks(ELEMENT_CHUNK))
            .for_each(|(y, x)| {
                factors(act, x, y);
                y.iter_mut().zip(x).for_each(|(y, &x)| *y *= x);
            });
    }

    fn activation_backward(
        &self,
        dinp: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        act: Activation,
    ) {
        dinp[..inp.len()]
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(inp.par_chunks(ELEMENT_CHUNK))
            .zip(dout.par_chunks(ELEMENT_CHUNK))
            .for_each(|((dx, x), dy)| {
                factors(act, x, dx);
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = dy * slope(act, x, *dx);
                }
            });
    }

    fn glu_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, act: Activation, half: usize) {
        let rows = inp.len() / (2 * half);
        out[..rows * half]
            .par_chunks_mut(half)
            .zip(inp.par_chunks(2 * half))
            .for_each(|(y, x)| {
                let (value, gate) = x.split_at(half);
                factors(act, gate, y);
                for ((y, &v), &g) in y.iter_mut().zip(value).zip(gate) {
                    *y *= v * g;
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
                // dvalue holds the factors until it is overwritten.
                factors(act, gate, dvalue);
                let grads = dvalue.iter_mut().zip(dgate.iter_mut());
                for (((dv, dg), (&v, &g)), &dy) in grads.zip(value.iter().zip(gate)).zip(dy) {
                    let factor = *dv;
                    *dv = dy * g * factor;
                    *dg = dy * v * slope(act, g, factor);
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
