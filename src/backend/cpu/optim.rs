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
                let base = chunk * ELEMENT_CHUNK;
                for i in 0..p.len() {
                    let g = g[i] * clip;
                    m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
                    v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
                    let m_hat = m[i] / bias1;
                    let v_hat = v[i] / bias2;
                    let decay = if base + i < hp.decay_len {
                        hp.weight_decay
                    } else {
                        0.0
                    };
                    p[i] -= hp.lr * (m_hat / (v_hat.sqrt() + hp.eps) + decay * p[i]);
                }
            });
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
