//! The optimizer over the flat buffer: the squared global gradient norm and
//! one AdamW step with clipping folded in. The norm is summed in f64 over
//! fixed chunks combined in order, so it does not depend on thread count.

use rayon::prelude::*;

use super::{Cpu, ELEMENT_CHUNK};
use crate::backend::{AdamW, OptimOps};

impl OptimOps for Cpu {
    fn grad_norm_squared(&self, out: &mut Vec<f32>, index: usize, grads: &Vec<f32>) {
        let partials: Vec<f64> = grads
            .par_chunks(ELEMENT_CHUNK)
            .map(|chunk| chunk.iter().map(|&g| g as f64 * g as f64).sum::<f64>())
            .collect();
        out[index] = partials.iter().sum::<f64>() as f32;
    }

    fn adamw_step(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        norm_sq: &mut Vec<f32>,
        norm_index: usize,
        hp: AdamW,
    ) {
        if !norm_sq[norm_index].is_finite() {
            if let Some(slot) = hp.skipped_slot {
                norm_sq[slot] += 1.0;
            }
            return;
        }
        let clip = clip_factor(norm_sq[norm_index], hp.max_norm);
        let step = hp.step as f64;
        let bias1 = (1.0 - (hp.beta1 as f64).powf(step)) as f32;
        let bias2 = (1.0 - (hp.beta2 as f64).powf(step)) as f32;
        params
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(grads.par_chunks(ELEMENT_CHUNK))
            .zip(m.par_chunks_mut(ELEMENT_CHUNK))
            .zip(v.par_chunks_mut(ELEMENT_CHUNK))
            .enumerate()
            .for_each(|(chunk, (((p, g), m), v))| {
                // The decayed prefix and the rest as two plain loops with a
                // constant decay each: no per-element branch or bounds check,
                // so the compiler vectorises them (the arithmetic per element
                // is unchanged, so the results are too).
                let split = hp
                    .decay_len
                    .saturating_sub(chunk * ELEMENT_CHUNK)
                    .min(p.len());
                let (p0, p1) = p.split_at_mut(split);
                let (m0, m1) = m.split_at_mut(split);
                let (v0, v1) = v.split_at_mut(split);
                let (g0, g1) = g.split_at(split);
                let k = Constants {
                    clip,
                    bias1,
                    bias2,
                    hp,
                };
                update(p0, g0, m0, v0, hp.weight_decay, &k);
                update(p1, g1, m1, v1, 0.0, &k);
            });
    }
}

/// What one AdamW step applies to every element.
struct Constants {
    clip: f32,
    bias1: f32,
    bias2: f32,
    hp: AdamW,
}

/// AdamW on equal-length slices with one weight decay.
fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: f32, k: &Constants) {
    let hp = &k.hp;
    let elements = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
    for (((p, &g), m), v) in elements {
        let g = g * k.clip;
        *m = hp.beta1 * *m + (1.0 - hp.beta1) * g;
        *v = hp.beta2 * *v + (1.0 - hp.beta2) * g * g;
        let m_hat = *m / k.bias1;
        let v_hat = *v / k.bias2;
        *p -= hp.lr * (m_hat / (v_hat.sqrt() + hp.eps) + decay * *p);
    }
}

/// `min(1, max_norm / ‖g‖)`, or 1 when clipping is off (`max_norm == 0`).
fn clip_factor(norm_sq: f32, max_norm: f32) -> f32 {
    let norm = norm_sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        max_norm / norm
    } else {
        1.0
    }
}
