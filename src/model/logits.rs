//! The decoder and the loss over the predicted rows, a chunk of rows at a
//! time, so that the `[rows, vocab]` logits never exist whole: at gpt-small's
//! micro-batch (32 × 1,024 rows, a 32,768-token vocabulary) they were 2.1 GB
//! in bf16, more than cram's whole excess of peak memory over torch.compile.
//! Each chunk's logits become their gradient in place (the cross-entropy),
//! which the decoder's backward consumes at once: the decoder's weight
//! gradient and the gradient of its input are made here, during the loss,
//! and [`Model::backward`](super::Model::backward) goes on from the latter.

use super::activations::{Activations, ChunkActs, HeadActs};
use super::{DeviceBatch, Model};
use crate::backend::{Backend, MatmulShape};
use std::ops::Range;

/// How the predicted rows are split: `count` chunks of `per_chunk` rows,
/// the last one shorter where they do not divide evenly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitChunks {
    pub rows: usize,
    pub per_chunk: usize,
    pub count: usize,
}

impl LogitChunks {
    /// Logits that exist at once by default: 2²⁷ (256 MiB in bf16), 4,096
    /// rows of a 32,768-token vocabulary. Chunks that size keep the decoder's
    /// products large (4,096 × 768 × 32,768 at gpt-small) and the copies in
    /// and out of a chunk a small fraction of them.
    pub const VALUES: usize = 1 << 27;

    /// The default most rows a chunk for a vocabulary of `vocab` tokens.
    pub fn default_rows(vocab: usize) -> usize {
        (Self::VALUES / vocab.max(1)).max(1)
    }

    /// The fewest chunks of at most `max_rows` rows, made as even as they
    /// can be (so no chunk is a sliver, which would make a tiny product).
    pub fn new(rows: usize, max_rows: usize) -> Self {
        let count = rows.div_ceil(max_rows.max(1)).max(1);
        LogitChunks {
            rows,
            per_chunk: rows.div_ceil(count),
            count,
        }
    }

    /// The rows of chunk `k`.
    pub fn range(&self, k: usize) -> Range<usize> {
        let start = (k * self.per_chunk).min(self.rows);
        start..(start + self.per_chunk).min(self.rows)
    }
}

/// What the loss pass leaves besides the per-row losses.
pub enum LossPass<'a, B: Backend> {
    /// Losses only.
    Losses,
    /// The losses and, per row, 1 where the first arg-max of the logits is
    /// the target (accuracy without bringing the logits to the host).
    Hits(&'a mut B::Buf),
    /// The losses and the gradients of `dscale` × their sum: the decoder's
    /// into `grads` (accumulated), its input's into `acts.head.d_hidden`.
    Gradients { grads: &'a mut B::Buf, dscale: f32 },
}

/// The buffers of the decoder and the loss, borrowed apart: the decoder's
/// input `z` (as `head_forward` left it: the transform's output, the gathered
/// rows, or the hidden states) and what the loss pass writes.
pub(super) struct DecoderIo<'a, B: Backend> {
    pub z: &'a B::Buf,
    pub logits: &'a mut B::Buf,
    pub losses: &'a mut B::Buf,
    pub d_z: &'a mut B::Buf,
    pub chunk: &'a mut ChunkActs<B>,
}

impl Model {
    /// The decoder's input and output buffers of `acts` for `batch`.
    pub(super) fn decoder_io<'a, B: Backend>(
        &self,
        acts: &'a mut Activations<B>,
        batch: &DeviceBatch<B>,
    ) -> DecoderIo<'a, B> {
        let Activations {
            head,
            final_out,
            resid,
            ..
        } = acts;
        let HeadActs {
            gathered,
            transform_out,
            logits,
            losses,
            d_hidden,
            chunk,
            ..
        } = head;
        let z = if self.layout.head_transform.is_some() {
            transform_out
        } else if batch.predict.is_some() {
            gathered
        } else if self.layout.final_norm.is_some() {
            final_out
        } else {
            &resid[2 * self.cfg.layers]
        };
        DecoderIo {
            z,
            logits,
            losses,
            d_z: d_hidden,
            chunk,
        }
    }

    /// The decoder over the head's input rows and the cross-entropy against
    /// the batch's targets, chunk by chunk: per-row losses in
    /// `acts.head.losses`, and what `pass` asks for.
    pub(super) fn decoder_loss<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        mut pass: LossPass<B>,
    ) {
        let (c, vocab, decoder) = (self.cfg.hidden, self.cfg.vocab_size, self.layout.decoder);
        let chunks = acts.head.chunks;
        let io = self.decoder_io(acts, batch);
        let (z, logits, chunk) = (io.z, io.logits, io.chunk);
        let one = chunks.count == 1;
        let dscale = match &pass {
            LossPass::Gradients { dscale, .. } => Some(*dscale),
            _ => None,
        };
        for k in 0..chunks.count {
            let rows = chunks.range(k);
            let m = rows.len();
            let (z_k, targets) = if one {
                (z, &batch.targets)
            } else {
                be.copy_range(&mut chunk.z, 0, z, rows.start * c, m * c);
                be.copy_ids_range(&mut chunk.targets[k], &batch.targets, rows.start);
                (&chunk.z, &chunk.targets[k])
            };
            let shape = MatmulShape { m, k: c, n: vocab };
            be.matmul_forward(logits, z_k, params, decoder, shape);
            let losses_k = if one {
                &mut *io.losses
            } else {
                &mut chunk.losses
            };
            if let LossPass::Hits(hits) = &mut pass {
                // The chunk's losses hold its hits until the loss overwrites them.
                be.top1_hits(losses_k, logits, targets, vocab);
                be.copy_range(hits, rows.start, losses_k, 0, m);
            }
            be.cross_entropy(losses_k, logits, targets, vocab, dscale);
            if !one {
                be.copy_range(io.losses, rows.start, &chunk.losses, 0, m);
            }
            if let LossPass::Gradients { grads, .. } = &mut pass {
                let d_z_k = if one { &mut *io.d_z } else { &mut chunk.d_z };
                be.matmul_backward(
                    Some(d_z_k),
                    false,
                    grads,
                    logits,
                    z_k,
                    params,
                    decoder,
                    shape,
                );
                if !one {
                    be.copy_range(io.d_z, rows.start * c, &chunk.d_z, 0, m * c);
                }
            }
        }
    }
}
