//! Token embeddings (gather / scatter-add), learned and scaled-sinusoidal
//! position embeddings, and rotary positions applied to q|k in place.
//! Parameter gradients are accumulated (`+=`); the scatter-add and the
//! position sums run in a fixed order so that repeated ids give the same bits.

use rayon::prelude::*;

use super::Cpu;
use crate::backend::{sinusoid, AttentionShape, EmbeddingOps, Span};

impl EmbeddingOps for Cpu {
    fn embedding_forward(
        &self,
        out: &mut Vec<f32>,
        ids: &Vec<u32>,
        params: &Vec<f32>,
        table: Span,
        cols: usize,
    ) {
        let table = &params[table.range()];
        let vocab = table.len() / cols;
        out[..ids.len() * cols]
            .par_chunks_mut(cols)
            .zip(ids.par_iter())
            .for_each(|(row, &id)| {
                let id = id as usize;
                assert!(
                    id < vocab,
                    "token id {id} outside the embedding table of {vocab} rows"
                );
                row.copy_from_slice(&table[id * cols..(id + 1) * cols]);
            });
    }

    fn embedding_backward(
        &self,
        grads: &mut Vec<f32>,
        table: Span,
        dout: &Vec<f32>,
        ids: &Vec<u32>,
        cols: usize,
    ) {
        // Sequential over rows: ids repeat, and a fixed order keeps the sums
        // deterministic. This is a small fraction of a step's work.
        let dtable = &mut grads[table.range()];
        for (r, &id) in ids.iter().enumerate() {
            let id = id as usize;
            let dst = &mut dtable[id * cols..(id + 1) * cols];
            for (d, g) in dst.iter_mut().zip(&dout[r * cols..(r + 1) * cols]) {
                *d += g;
            }
        }
    }

    fn learned_positions_forward(
        &self,
        x: &mut Vec<f32>,
        params: &Vec<f32>,
        table: Span,
        seq: usize,
        cols: usize,
    ) {
        let table = &params[table.range()];
        assert!(
            table.len() >= seq * cols,
            "sequence longer than the position table"
        );
        x.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let t = r % seq;
            for (v, p) in row.iter_mut().zip(&table[t * cols..(t + 1) * cols]) {
                *v += p;
            }
        });
    }

    fn learned_positions_backward(
        &self,
        grads: &mut Vec<f32>,
        table: Span,
        dx: &Vec<f32>,
        seq: usize,
        cols: usize,
    ) {
        let batch = dx.len() / (seq * cols);
        grads[table.range()][..seq * cols]
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(t, dst)| {
                for b in 0..batch {
                    let r = b * seq + t;
                    for (d, g) in dst.iter_mut().zip(&dx[r * cols..(r + 1) * cols]) {
                        *d += g;
                    }
                }
            });
    }

    fn sinusoidal_positions_forward(
        &self,
        x: &mut Vec<f32>,
        params: &Vec<f32>,
        scale: Span,
        seq: usize,
        cols: usize,
    ) {
        let scale = params[scale.offset];
        let pe = sinusoid_table(seq, cols);
        x.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let t = r % seq;
            for (v, p) in row.iter_mut().zip(&pe[t * cols..(t + 1) * cols]) {
                *v += scale * p;
            }
        });
    }

    fn sinusoidal_positions_backward(
        &self,
        grads: &mut Vec<f32>,
        scale: Span,
        dx: &Vec<f32>,
        seq: usize,
        cols: usize,
    ) {
        let pe = sinusoid_table(seq, cols);
        let per_row: Vec<f64> = dx
            .par_chunks(cols)
            .enumerate()
            .map(|(r, row)| {
                let t = r % seq;
                row.iter()
                    .zip(&pe[t * cols..(t + 1) * cols])
                    .map(|(&g, &p)| g as f64 * p as f64)
                    .sum::<f64>()
            })
            .collect();
        grads[scale.offset] += per_row.iter().sum::<f64>() as f32;
    }

    fn rotary_forward(&self, qkv: &mut Vec<f32>, shape: AttentionShape, theta: f32) {
        rotate_qk(qkv, shape, theta, 1.0);
    }

    fn rotary_backward(&self, dqkv: &mut Vec<f32>, shape: AttentionShape, theta: f32) {
        // A rotation's transpose is the rotation by the opposite angle.
        rotate_qk(dqkv, shape, theta, -1.0);
    }
}

/// `pe[t, c]` for `t < seq`, as [`sinusoid`] defines it.
fn sinusoid_table(seq: usize, cols: usize) -> Vec<f32> {
    (0..seq * cols)
        .map(|i| sinusoid(i / cols, i % cols, cols))
        .collect()
}

/// Rotates every head of the q and k parts of `qkv[rows, 3·hidden]` by
/// `sign · t · theta^(-2i/head_dim)`, pairing dimension `i` with `i + head_dim/2`.
fn rotate_qk(qkv: &mut [f32], shape: AttentionShape, theta: f32, sign: f64) {
    let AttentionShape { seq, head_dim, .. } = shape;
    assert!(
        head_dim % 2 == 0,
        "rotary positions need an even head_dim, got {head_dim}"
    );
    let half = head_dim / 2;
    let hidden = shape.hidden();
    // cos and sin for every (t, i), computed in f64 once per call.
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for t in 0..seq {
        for i in 0..half {
            let freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let angle = sign * t as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    qkv[..shape.rows() * 3 * hidden]
        .par_chunks_mut(3 * hidden)
        .enumerate()
        .for_each(|(r, row)| {
            let t = r % seq;
            let (cos, sin) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            for head in row[..2 * hidden].chunks_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * cos[i] - b * sin[i];
                    hi[i] = b * cos[i] + a * sin[i];
                }
            }
        });
}
