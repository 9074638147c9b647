//! The sparse-prediction row gather, softmax cross-entropy and the squared
//! error of regression heads. The gather's backward overwrites `dinp` (`=`);
//! the losses overwrite their inputs with their gradient when asked, the
//! cross-entropy row by row in parallel.

use rayon::prelude::*;

use super::math::{self, exp};
use super::Cpu;
use crate::backend::{LossOps, IGNORE};

impl LossOps for Cpu {
    fn gather_rows_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, idx: &Vec<u32>, cols: usize) {
        out[..idx.len() * cols]
            .par_chunks_mut(cols)
            .zip(idx.par_iter())
            .for_each(|(row, &i)| {
                let i = i as usize;
                row.copy_from_slice(&inp[i * cols..(i + 1) * cols]);
            });
    }

    fn top1_hits(&self, hits: &mut Vec<f32>, logits: &Vec<f32>, targets: &Vec<u32>, vocab: usize) {
        let rows = targets.len();
        hits[..rows]
            .par_iter_mut()
            .zip(logits[..rows * vocab].par_chunks(vocab))
            .zip(targets.par_iter())
            .for_each(|((hit, row), &target)| {
                let top = target != IGNORE && crate::backend::argmax(row) == target as usize;
                *hit = f32::from(u8::from(top));
            });
    }

    fn gather_rows_backward(
        &self,
        dinp: &mut Vec<f32>,
        dout: &Vec<f32>,
        idx: &Vec<u32>,
        cols: usize,
    ) {
        dinp.fill(0.0);
        for (j, &i) in idx.iter().enumerate() {
            let i = i as usize;
            dinp[i * cols..(i + 1) * cols].copy_from_slice(&dout[j * cols..(j + 1) * cols]);
        }
    }

    fn cross_entropy(
        &self,
        losses: &mut Vec<f32>,
        logits: &mut Vec<f32>,
        targets: &Vec<u32>,
        vocab: usize,
        dscale: Option<f32>,
    ) {
        let rows = targets.len();
        losses[..rows]
            .par_iter_mut()
            .zip(logits[..rows * vocab].par_chunks_mut(vocab))
            .zip(targets.par_iter())
            .for_each_init(
                || Vec::with_capacity(if dscale.is_some() { 0 } else { vocab }),
                |scratch, ((loss, row), &target)| {
                    if target == IGNORE {
                        *loss = 0.0;
                        if dscale.is_some() {
                            row.fill(0.0);
                        }
                        return;
                    }
                    let target = target as usize;
                    assert!(
                        target < vocab,
                        "target {target} outside the vocabulary of {vocab}"
                    );
                    // loss = log Σ exp(x - max) - (x[target] - max), with the max
                    // subtracted for stability. The exponentials go to the row
                    // itself when it is to become the gradient, else to scratch.
                    let max = math::max(row);
                    let shifted_target = row[target] - max;
                    let exps: &mut [f32] = match dscale {
                        Some(_) => row,
                        None => {
                            scratch.clear();
                            scratch.extend_from_slice(row);
                            scratch
                        }
                    };
                    exps.iter_mut().for_each(|x| *x = exp(*x - max));
                    let sum = math::sum(exps);
                    *loss = sum.ln() - shifted_target;
                    if let Some(scale) = dscale {
                        // softmax · scale, minus scale at the target
                        let factor = scale / sum;
                        exps.iter_mut().for_each(|x| *x *= factor);
                        exps[target] -= scale;
                    }
                },
            );
    }

    fn mse_loss(
        &self,
        losses: &mut Vec<f32>,
        preds: &mut Vec<f32>,
        targets: &Vec<f32>,
        dscale: Option<f32>,
    ) {
        for ((loss, pred), &target) in losses.iter_mut().zip(preds.iter_mut()).zip(targets) {
            let diff = *pred - target;
            *loss = diff * diff;
            if let Some(scale) = dscale {
                *pred = scale * 2.0 * diff;
            }
        }
    }
}
