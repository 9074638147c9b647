//! What the ops are given besides buffers: where a layer's tensors lie in the
//! flat parameter buffer (`Span`, `Linear`, `Norm`), the shapes of products
//! and attention, the feed-forward non-linearity and the AdamW step's
//! settings.

use crate::config::NormKind;

/// A tensor's place inside the flat parameter (or gradient) buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// A linear layer's parameters: weight `[out, in]` and optional bias `[out]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub weight: Span,
    pub bias: Option<Span>,
}

/// A normalisation layer's parameters: scale `[cols]` and optional shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    pub kind: NormKind,
    pub weight: Span,
    pub bias: Option<Span>,
    pub eps: f32,
}

/// Shape of a matmul: `[m, k] · [n, k]ᵀ → [m, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Shape of a multi-head self-attention over a packed `[batch·seq, 3·heads·head_dim]`
/// q|k|v buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl AttentionShape {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
    /// The scores' scale, 1/√head_dim.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Non-linearity of a feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, x·Φ(x) with the error function (not the tanh approximation).
    Gelu,
    /// SiLU, x·σ(x).
    Silu,
}

/// Hyper-parameters of one AdamW step over the flat buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step number, for the bias corrections.
    pub step: u64,
    /// Elements `[0, decay_len)` get weight decay; the rest (norms, biases,
    /// scalars, laid out last) do not.
    pub decay_len: usize,
    /// Clip the global gradient norm to this value (0 disables clipping).
    pub max_norm: f32,
    /// A step whose gradient norm is not finite changes nothing (parameters
    /// and moments stay as they were); when `Some(slot)`, it also adds 1 to
    /// `norm_sq[slot]` on the device, so the trainer learns of skipped steps
    /// when it next reads its statistics, without a read-back per step.
    pub skipped_slot: Option<usize>,
}
