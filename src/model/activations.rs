//! Buffers the forward pass writes and the backward pass reads, allocated once
//! for a `(batch, seq)` shape so that running out of memory fails at start-up.
//! The prediction head's buffers depend on how many rows get logits and are
//! resized when that changes (sparse MLM predicts a near-constant number).

use super::layout::is_pre_norm;
use super::logits::LogitChunks;
use crate::backend::{AttentionShape, Backend};
use crate::config::{FfnKind, ModelConfig};

/// Saved statistics of one normalisation.
pub struct NormStats<B: Backend> {
    pub mean: B::Buf,
    pub rstd: B::Buf,
}

impl<B: Backend> NormStats<B> {
    fn new(be: &B, rows: usize) -> Self {
        NormStats {
            mean: be.alloc(rows),
            rstd: be.alloc(rows),
        }
    }
}

pub struct BlockActs<B: Backend> {
    /// Pre-LN: the attention norm's output. Post-LN: the residual sum it normalises.
    pub attn_norm_io: B::Buf,
    pub attn_stats: NormStats<B>,
    pub qkv: B::Buf,
    pub att_saved: B::Buf,
    pub att: B::Buf,
    /// Pre-LN: the feed-forward norm's output. Post-LN: the residual sum it normalises.
    pub ffn_norm_io: B::Buf,
    pub ffn_stats: NormStats<B>,
    /// First feed-forward projection `[rows, ffn]`.
    pub ffn_h: B::Buf,
    /// After the (gated) activation `[rows, ffn_inner]`.
    pub ffn_g: B::Buf,
}

/// Buffers of the rows that get logits.
pub struct HeadActs<B: Backend> {
    /// The predicted rows and how they are split for the decoder and the loss.
    pub chunks: LogitChunks,
    pub gathered: B::Buf,
    pub transform_pre: B::Buf,
    pub transform_act: B::Buf,
    pub transform_out: B::Buf,
    pub transform_stats: NormStats<B>,
    /// The logits of one chunk of rows `[chunks.per_chunk, vocab]`; every
    /// row's when there is one chunk.
    pub logits: B::Buf,
    pub losses: B::Buf,
    /// The gradient of the decoder's input, every row.
    pub d_hidden: B::Buf,
    /// A chunk's inputs, targets and results, where there are several chunks.
    pub chunk: ChunkActs<B>,
    pub d_transform_pre: B::Buf,
    pub d_transform_act: B::Buf,
    pub d_gathered: B::Buf,
}

/// Scratch of the chunked decoder: a chunk's rows of the decoder's input and
/// of its gradient, its targets (exact lengths, one buffer per chunk) and its
/// losses. Empty when the rows are one chunk.
pub struct ChunkActs<B: Backend> {
    pub z: B::Buf,
    pub d_z: B::Buf,
    pub targets: Vec<B::Ids>,
    pub losses: B::Buf,
}

impl<B: Backend> ChunkActs<B> {
    fn new(be: &B, c: usize, chunks: LogitChunks) -> Self {
        let rows = if chunks.count > 1 {
            chunks.per_chunk
        } else {
            0
        };
        ChunkActs {
            z: be.alloc_activation(rows * c),
            d_z: be.alloc_activation(rows * c),
            targets: match chunks.count {
                1 => Vec::new(),
                n => (0..n)
                    .map(|k| be.alloc_ids(chunks.range(k).len()))
                    .collect(),
            },
            losses: be.alloc(rows),
        }
    }
}

impl<B: Backend> HeadActs<B> {
    fn new(be: &B, cfg: &ModelConfig, rows: usize, chunk_rows: usize) -> Self {
        let c = cfg.hidden;
        let t = if cfg.head_transform { rows * c } else { 0 };
        let act = |len| be.alloc_activation(len);
        let chunks = LogitChunks::new(rows, chunk_rows);
        HeadActs {
            chunks,
            gathered: act(rows * c),
            transform_pre: act(t),
            transform_act: act(t),
            transform_out: act(t),
            transform_stats: NormStats::new(be, if cfg.head_transform { rows } else { 0 }),
            logits: act(chunks.per_chunk * cfg.vocab_size),
            losses: be.alloc(rows),
            d_hidden: act(rows * c),
            chunk: ChunkActs::new(be, c, chunks),
            d_transform_pre: act(t),
            d_transform_act: act(t),
            d_gathered: act(rows * c),
        }
    }
}

pub struct Activations<B: Backend> {
    pub batch: usize,
    pub seq: usize,
    /// Token (+ position) embeddings before the embedding norm.
    pub emb: B::Buf,
    pub emb_norm_out: B::Buf,
    pub emb_stats: NormStats<B>,
    /// The residual stream: `resid[2l]` enters block l, `resid[2l + 1]` follows
    /// its attention half, `resid[2L]` leaves the last block.
    pub resid: Vec<B::Buf>,
    pub blocks: Vec<BlockActs<B>>,
    pub final_out: B::Buf,
    pub final_stats: NormStats<B>,
    pub head: HeadActs<B>,
    /// Most rows whose logits exist at once (see [`LogitChunks`]).
    logit_chunk_rows: usize,
    /// Seed of the dropout masks of the current forward, reused by its backward.
    pub dropout_seed: u64,
    // Gradient scratch, reused by every block.
    pub d_resid: B::Buf,
    /// `d_resid` in the activation type, written beside it by every norm
    /// backward that ends a pre-LN block half (and the final norm's): the
    /// output projections' backward reads it, so the GPU casts no f32
    /// residual gradient before each of those products. None where
    /// activations are f32 (the CPU): there it would equal `d_resid`.
    pub d_resid_copy: Option<B::Buf>,
    pub d_sum: B::Buf,
    pub d_tmp: B::Buf,
    pub d_norm: B::Buf,
    pub d_att: B::Buf,
    pub d_qkv: B::Buf,
    pub d_ffn_h: B::Buf,
    pub d_ffn_g: B::Buf,
    pub d_hidden: B::Buf,
    /// Forward scratch `[rows, hidden]` for projections before the residual add.
    pub tmp: B::Buf,
    pub tmp2: B::Buf,
}

impl<B: Backend> Activations<B> {
    pub fn new(be: &B, cfg: &ModelConfig, batch: usize, seq: usize) -> Self {
        let n = batch * seq;
        let c = cfg.hidden;
        let inner = match cfg.ffn_kind {
            FfnKind::Gelu => cfg.ffn,
            FfnKind::GluGelu | FfnKind::Swiglu => cfg.ffn / 2,
        };
        let shape = AttentionShape {
            batch,
            seq,
            heads: cfg.heads,
            head_dim: cfg.head_dim(),
            causal: false,
        };
        let emb_norm = if cfg.embedding_norm { n } else { 0 };
        // Mixed precision: the residual stream (unless the backend offers
        // bf16 for it), its gradient and the statistics stay f32; everything
        // a matmul reads or writes may be bf16. A post-LN block's norm input
        // is the residual sum, so it takes the residual's precision.
        let act = |len| be.alloc_activation(len);
        let norm_io = |len| {
            if is_pre_norm(cfg) {
                be.alloc_activation(len)
            } else {
                be.alloc_residual(len)
            }
        };
        let blocks = (0..cfg.layers)
            .map(|_| BlockActs {
                attn_norm_io: norm_io(n * c),
                attn_stats: NormStats::new(be, n),
                qkv: act(n * 3 * c),
                att_saved: act(be.attention_saved_len(shape)),
                att: act(n * c),
                ffn_norm_io: norm_io(n * c),
                ffn_stats: NormStats::new(be, n),
                ffn_h: act(n * cfg.ffn),
                ffn_g: act(n * inner),
            })
            .collect();
        let final_rows = if cfg.final_norm { n } else { 0 };
        Activations {
            batch,
            seq,
            emb: be.alloc(n * c),
            emb_norm_out: act(emb_norm * c),
            emb_stats: NormStats::new(be, emb_norm),
            resid: (0..=2 * cfg.layers)
                .map(|_| be.alloc_residual(n * c))
                .collect(),
            blocks,
            final_out: act(final_rows * c),
            final_stats: NormStats::new(be, final_rows),
            head: HeadActs::new(be, cfg, 0, 1),
            logit_chunk_rows: LogitChunks::default_rows(cfg.vocab_size),
            dropout_seed: 0,
            d_resid: be.alloc(n * c),
            d_resid_copy: (!be.full_precision_activations()).then(|| act(n * c)),
            d_sum: be.alloc(n * c),
            d_tmp: be.alloc(n * c),
            d_norm: act(n * c),
            d_att: act(n * c),
            d_qkv: act(n * 3 * c),
            d_ffn_h: act(n * cfg.ffn),
            d_ffn_g: act(n * inner),
            d_hidden: act(n * c),
            tmp: act(n * c),
            tmp2: act(n * c),
        }
    }

    /// Resizes the head's buffers for `rows` predicted rows.
    pub fn ensure_head_rows(&mut self, be: &B, cfg: &ModelConfig, rows: usize) {
        if self.head.chunks != LogitChunks::new(rows, self.logit_chunk_rows) {
            // The old buffers go first, so that the two never coexist.
            self.head = HeadActs::new(be, cfg, 0, 1);
            self.head = HeadActs::new(be, cfg, rows, self.logit_chunk_rows);
        }
    }

    /// Makes the logits in chunks of at most `rows` rows from the next
    /// forward on (the default holds [`LogitChunks::VALUES`] logits):
    /// `usize::MAX` keeps every row's logits, as [`Model::forward_logits`]
    /// needs, and tests take small chunks to check that chunking changes
    /// nothing.
    ///
    /// [`Model::forward_logits`]: super::Model::forward_logits
    pub fn set_logit_chunk_rows(&mut self, rows: usize) {
        self.logit_chunk_rows = rows;
    }

    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}
