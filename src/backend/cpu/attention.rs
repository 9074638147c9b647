//! Multi-head scaled dot-product self-attention over a packed q|k|v buffer
//! `[batch·seq, 3·hidden]` (head `h` at columns `h·head_dim..` of each part).
//! The forward saves the softmax probabilities `[batch, heads, seq, seq]`
//! (zeros above the diagonal when causal); the backward reads them and
//! overwrites `dqkv` (`=`). Each (batch, head) pair is one rayon task that
//! owns its output columns and runs its small products through
//! single-threaded gemm, so no sum depends on scheduling.

use gemm::Parallelism;
use rayon::prelude::*;

use super::math::{self, exp};
use super::matmul::{gemm, Operand};
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
        let hidden = shape.hidden();
        let out_heads = split_columns(&mut out[..shape.rows() * hidden], seq, hidden, head_dim);
        out_heads
            .into_par_iter()
            .zip(saved[..self.attention_saved_len(shape)].par_chunks_mut(seq * seq))
            .enumerate()
            .for_each_init(
                || vec![0f32; seq * head_dim],
                |scratch, (pair, (mut out, probs))| {
                    let head = Head::new(qkv, shape, pair);
                    // S = Q·Kᵀ/√d, then the softmax of each row in place.
                    head.gemm(probs, head.q(), head.k().t(), (head_dim, seq), head.scale);
                    for (t, row) in probs.chunks_mut(seq).enumerate() {
                        softmax_in_place(row, head.visible(t));
                    }
                    // O = P·V
                    head.gemm(
                        scratch,
                        Operand::rows(probs, seq),
                        head.v(),
                        (seq, head_dim),
                        1.0,
                    );
                    copy_rows(&mut out, scratch);
                },
            );
    }

    fn attention_backward(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        _out: &Vec<f32>,
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
            .for_each_init(
                || (vec![0f32; seq * seq], vec![0f32; seq * head_dim]),
                |(ds, scratch), (pair, (((mut dq, mut dk), mut dv), probs))| {
                    let head = Head::new(qkv, shape, pair);
                    let (b, h) = (pair / heads, pair % heads);
                    let dy = Operand::rows(&dout[b * seq * hidden + h * head_dim..], hidden);
                    let p = Operand::rows(probs, seq);
                    // dV = Pᵀ·dO
                    head.gemm(scratch, p.t(), dy, (seq, head_dim), 1.0);
                    copy_rows(&mut dv, scratch);
                    // dP = dO·Vᵀ, then the softmax backward in place:
                    // dS = P ⊙ (dP - Σ_s P·dP) / √d (zero where P is masked).
                    head.gemm(ds, dy, head.v().t(), (head_dim, seq), 1.0);
                    for (dp, p) in ds.chunks_mut(seq).zip(probs.chunks(seq)) {
                        let centre: f32 = dp.iter().zip(p).map(|(d, p)| d * p).sum();
                        for (d, &p) in dp.iter_mut().zip(p) {
                            *d = p * (*d - centre) * head.scale;
                        }
                    }
                    let ds = Operand::rows(ds, seq);
                    // dQ = dS·K and dK = dSᵀ·Q
                    head.gemm(scratch, ds, head.k(), (seq, head_dim), 1.0);
                    copy_rows(&mut dq, scratch);
                    head.gemm(scratch, ds.t(), head.q(), (seq, head_dim), 1.0);
                    copy_rows(&mut dk, scratch);
                },
            );
    }
}

/// One (batch, head) pair: its q, k and v as gemm operands inside `qkv`.
struct Head<'a> {
    qkv: &'a [f32],
    base: usize,
    shape: AttentionShape,
    scale: f32,
}

impl<'a> Head<'a> {
    /// The pair numbered `batch · heads + head`.
    fn new(qkv: &'a [f32], shape: AttentionShape, pair: usize) -> Self {
        let (b, h) = (pair / shape.heads, pair % shape.heads);
        Head {
            qkv,
            base: b * shape.seq * 3 * shape.hidden() + h * shape.head_dim,
            shape,
            scale: shape.scale(),
        }
    }

    /// Part 0, 1 or 2 (q, k or v) as a `[seq, head_dim]` operand.
    fn part(&self, part: usize) -> Operand<'a> {
        let start = self.base + part * self.shape.hidden();
        Operand::rows(&self.qkv[start..], 3 * self.shape.hidden())
    }
    fn q(&self) -> Operand<'a> {
        self.part(0)
    }
    fn k(&self) -> Operand<'a> {
        self.part(1)
    }
    fn v(&self) -> Operand<'a> {
        self.part(2)
    }

    /// `dst[seq, n] = scale · lhs[seq, k] · rhs[k, n]`, single-threaded:
    /// the tasks are already one per (batch, head).
    fn gemm(
        &self,
        dst: &mut [f32],
        lhs: Operand,
        rhs: Operand,
        (k, n): (usize, usize),
        scale: f32,
    ) {
        gemm(
            dst,
            false,
            scale,
            lhs,
            rhs,
            (self.shape.seq, k, n),
            Parallelism::None,
        );
    }

    /// How many keys query `t` attends to (keys `0..visible`).
    fn visible(&self, t: usize) -> usize {
        if self.shape.causal {
            t + 1
        } else {
            self.shape.seq
        }
    }
}

/// Softmax over `row[..visible]`, zeros after it.
fn softmax_in_place(row: &mut [f32], visible: usize) {
    let (live, masked) = row.split_at_mut(visible);
    let max = math::max(live);
    live.iter_mut().for_each(|x| *x = exp(*x - max));
    let inv = 1.0 / math::sum(live);
    live.iter_mut().for_each(|x| *x *= inv);
    masked.fill(0.0);
}

/// Copies the rows of a contiguous `[seq, head_dim]` block into a head's
/// column slices.
fn copy_rows(dst: &mut [&mut [f32]], src: &[f32]) {
    let width = src.len() / dst.len();
    for (row, src) in dst.iter_mut().zip(src.chunks(width)) {
        row.copy_from_slice(src);
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
