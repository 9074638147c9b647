//! Multi-head scaled dot-product self-attention over a packed q|k|v buffer
//! `[batch·seq, 3·hidden]` (head `h` at columns `h·head_dim..` of each part).
//! The forward saves the softmax probabilities `[batch, heads, seq, seq]`
//! (zeros above the diagonal when causal); the backward reads them and
//! overwrites `dqkv` (`=`). Each (batch, head) pair is one rayon task that
//! owns its output columns, so no sum depends on scheduling.

use rayon::prelude::*;

use super::Cpu;
use crate::backend::{AttentionOps, AttentionShape};

impl AttentionOps for Cpu {
    fn attention_saved_len(&self, shape: AttentionShape) -> usize {
        shape.batch * shape.heads * shape.seq * shape.seq
    }

    fn attention_forward(
        &self,
        out: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        qkv: &Vec<f32>,
        shape: AttentionShape,
    ) {
        let AttentionShape { seq, head_dim, .. } = shape;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let out_heads = split_columns(
            &mut out[..shape.rows() * shape.hidden()],
            seq,
            shape.hidden(),
            head_dim,
        );
        out_heads
            .into_par_iter()
            .zip(saved[..self.attention_saved_len(shape)].par_chunks_mut(seq * seq))
            .enumerate()
            .for_each(|(pair, (mut out, probs))| {
                let head = Head::new(qkv, shape, pair);
                for t in 0..seq {
                    let visible = head.visible(t);
                    let p = &mut probs[t * seq..(t + 1) * seq];
                    let q = head.q(t);
                    let mut max = f32::NEG_INFINITY;
                    for (s, x) in p[..visible].iter_mut().enumerate() {
                        *x = dot(q, head.k(s)) * scale;
                        max = max.max(*x);
                    }
                    let mut sum = 0f32;
                    for x in &mut p[..visible] {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    for x in &mut p[..visible] {
                        *x *= inv;
                    }
                    p[visible..].fill(0.0);

                    let o = &mut *out[t];
                    o.fill(0.0);
                    for (s, &w) in p[..visible].iter().enumerate() {
                        axpy(o, w, head.v(s));
                    }
                }
            });
    }

    fn attention_backward(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        qkv: &Vec<f32>,
        saved: &Vec<f32>,
        shape: AttentionShape,
    ) {
        let AttentionShape {
            seq,
            heads,
            head_dim,
            ..
        } = shape;
        let hidden = shape.hidden();
        let scale = 1.0 / (head_dim as f32).sqrt();

        // Regroup the per-(batch, part, head) column blocks of dqkv as
        // (dq, dk, dv) per (batch, head).
        let mut blocks = split_columns(
            &mut dqkv[..shape.rows() * 3 * hidden],
            seq,
            3 * hidden,
            head_dim,
        )
        .into_iter();
        let mut tasks = Vec::with_capacity(shape.batch * heads);
        for _ in 0..shape.batch {
            let mut q: Vec<_> = blocks.by_ref().take(3 * heads).collect();
            let v = q.split_off(2 * heads);
            let k = q.split_off(heads);
            tasks.extend(q.into_iter().zip(k).zip(v));
        }

        tasks
            .into_par_iter()
            .zip(saved[..self.attention_saved_len(shape)].par_chunks(seq * seq))
            .enumerate()
            .for_each(|(pair, (((mut dq, mut dk), mut dv), probs))| {
                let head = Head::new(qkv, shape, pair);
                let (b, h) = (pair / heads, pair % heads);
                for rows in [&mut dq, &mut dk, &mut dv] {
                    rows.iter_mut().for_each(|r| r.fill(0.0));
                }
                let mut dp = vec![0f32; seq];
                for t in 0..seq {
                    let visible = head.visible(t);
                    let p = &probs[t * seq..(t + 1) * seq];
                    let row = (b * seq + t) * hidden + h * head_dim;
                    let dy = &dout[row..row + head_dim];
                    // dP = dO·Vᵀ and dV += Pᵀ·dO
                    for s in 0..visible {
                        dp[s] = dot(dy, head.v(s));
                        axpy(dv[s], p[s], dy);
                    }
                    // Softmax backward: dS = P ⊙ (dP - Σ P·dP), then
                    // dQ = scale·dS·K and dK = scale·dSᵀ·Q.
                    let centre: f32 = (0..visible).map(|s| p[s] * dp[s]).sum();
                    let q = head.q(t);
                    let dq_t = &mut *dq[t];
                    for s in 0..visible {
                        let ds = p[s] * (dp[s] - centre) * scale;
                        axpy(dq_t, ds, head.k(s));
                        axpy(dk[s], ds, q);
                    }
                }
            });
    }
}

/// Read access to one (batch, head) pair's q, k and v rows in `qkv`.
struct Head<'a> {
    qkv: &'a [f32],
    base: usize,
    stride: usize,
    hidden: usize,
    head_dim: usize,
    causal: bool,
    seq: usize,
}

impl<'a> Head<'a> {
    /// The pair numbered `batch · heads + head`.
    fn new(qkv: &'a [f32], shape: AttentionShape, pair: usize) -> Self {
        let (b, h) = (pair / shape.heads, pair % shape.heads);
        let stride = 3 * shape.hidden();
        Head {
            qkv,
            base: b * shape.seq * stride + h * shape.head_dim,
            stride,
            hidden: shape.hidden(),
            head_dim: shape.head_dim,
            causal: shape.causal,
            seq: shape.seq,
        }
    }

    fn part(&self, t: usize, part: usize) -> &'a [f32] {
        let start = self.base + t * self.stride + part * self.hidden;
        &self.qkv[start..start + self.head_dim]
    }
    fn q(&self, t: usize) -> &'a [f32] {
        self.part(t, 0)
    }
    fn k(&self, s: usize) -> &'a [f32] {
        self.part(s, 1)
    }
    fn v(&self, s: usize) -> &'a [f32] {
        self.part(s, 2)
    }

    /// How many keys query `t` attends to (keys `0..visible`).
    fn visible(&self, t: usize) -> usize {
        if self.causal {
            t + 1
        } else {
            self.seq
        }
    }
}

/// Splits `buf[batch·seq, row_width]` into column blocks of `width`: one
/// `Vec` of `seq` row slices per (batch, block), batch-major. This hands each
/// (batch, head) task its own output columns without unsafe code.
fn split_columns(
    buf: &mut [f32],
    seq: usize,
    row_width: usize,
    width: usize,
) -> Vec<Vec<&mut [f32]>> {
    let blocks = row_width / width;
    let mut groups: Vec<Vec<&mut [f32]>> = Vec::with_capacity(buf.len() / (seq * width));
    for batch_rows in buf.chunks_mut(seq * row_width) {
        let first = groups.len();
        groups.extend((0..blocks).map(|_| Vec::with_capacity(seq)));
        for row in batch_rows.chunks_mut(row_width) {
            for (j, part) in row.chunks_mut(width).enumerate() {
                groups[first + j].push(part);
            }
        }
    }
    groups
}

/// Dot product with eight partial sums, so that it vectorises; the order
/// is fixed, so the result is too.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a·x`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}
