//! The `Backend` trait: device buffers and every op of the engine, each with an
//! explicit forward and backward (no autograd). The model code is written once
//! against it; `cpu` is the f32 reference, a CUDA backend implements the same
//! methods and is checked against `cpu` op by op.
//!
//! Conventions every implementation follows:
//! - Layouts are row-major. Activations are `[rows, cols]` with rows = batch × time.
//!   A linear layer's weight is `[out, in]` (PyTorch's convention) and
//!   `out = inp · Wᵀ + b`.
//! - Accumulation rule: parameter gradients are always accumulated (`+=`), so
//!   gradient accumulation over micro-batches needs no extra pass. Activation
//!   gradients are overwritten (`=`), with two documented exceptions that serve
//!   the residual stream: `norm_backward` adds into `dinp`, and
//!   `matmul_backward` adds into `dinp` when asked to.
//! - Parameters live in one flat buffer; ops receive that buffer plus the
//!   [`Span`]s of the tensors they use. Gradients mirror the layout.
//! - Backward ops read exactly what the forward saved (norm statistics,
//!   attention state), never recompute it from other buffers.

pub mod cpu;
pub mod cuda;
mod error;
pub mod fp8;
mod operands;
mod select;

pub use crate::config::NormKind;
pub use error::DeviceError;
pub use operands::{Activation, AdamW, AttentionShape, Linear, MatmulShape, Norm, Span};
pub use select::{select_device, AnyDevice, DeviceChoice};

/// Buffers on a device. `Buf` holds f32 values as the backend stores them
/// (a GPU backend may keep lower precision copies); `Ids` holds u32 indices.
pub trait Device: Send + Sync {
    type Buf: Send + Sync;
    type Ids: Send + Sync;

    /// A human-readable name of the device, printed at start-up.
    fn name(&self) -> String;
    /// Whether every op so far was carried out: the first device failure
    /// since the device was opened (allocation, launch, copy, wait), which
    /// leaves later ops undone. Callers ask after a read (which waits for
    /// the queued work) or a step, where they can stop with a message.
    fn check(&self) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Runs `work`, a whole job on this device (a training run), where the
    /// device's ops run best when called: here, on the calling thread. The
    /// CPU runs it on one of rayon's threads. `work` may not wait for other
    /// threads but through the device's own ops.
    fn run_job<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R
    where
        Self: Sized,
    {
        work()
    }
    /// The dense matmul rate this device reaches in FLOP/s, measured on it,
    /// for MFU; `None` where no such number is meaningful (the CPU).
    fn peak_flops(&self) -> Option<f64> {
        None
    }
    /// A zero-filled buffer of `len` values at full (f32) precision: parameters,
    /// gradients, optimizer state, statistics, the residual stream.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A zero-filled buffer for activations and their gradients, which a GPU
    /// backend keeps in bf16 (mixed precision). Ops accept either kind of
    /// buffer for any argument; the CPU keeps everything in f32.
    fn alloc_activation(&self, len: usize) -> Self::Buf {
        self.alloc(len)
    }
    /// Whether [`alloc_activation`](Self::alloc_activation) gives full
    /// precision (f32) buffers, as this default does: then a copy of an f32
    /// buffer in the activation type would equal the buffer, and the model
    /// keeps none (`Activations::d_resid_copy`).
    fn full_precision_activations(&self) -> bool {
        true
    }
    /// A zero-filled buffer for the residual stream: f32 here, as autocast
    /// keeps it; CUDA keeps it in bf16 (half the stream's memory and
    /// traffic, every residual sum rounded; it learned as well at equal
    /// steps), and `CRAM_RESIDUAL=f32` gives f32 there too.
    fn alloc_residual(&self, len: usize) -> Self::Buf {
        self.alloc(len)
    }
    fn alloc_ids(&self, len: usize) -> Self::Ids;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Overwrites `buf[offset..offset + data.len()]`.
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[f32]);
    fn write_ids(&self, ids: &mut Self::Ids, data: &[u32]);
    /// Reads `buf[offset..offset + len]` to the host (a synchronisation point).
    fn read(&self, buf: &Self::Buf, offset: usize, len: usize) -> Vec<f32>;
    fn zero(&self, buf: &mut Self::Buf);
    /// `dst[..] = src[..]` (same length).
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf);
    /// `dst[dst_at..dst_at + len] = src[src_at..src_at + len]`, converting
    /// where the two buffers differ in precision: rows of a larger buffer
    /// into a chunk's scratch and back (the logits are made in row chunks).
    fn copy_range(
        &self,
        dst: &mut Self::Buf,
        dst_at: usize,
        src: &Self::Buf,
        src_at: usize,
        len: usize,
    );
    /// `dst[..] = src[at..at + dst.len()]`: a chunk's targets.
    fn copy_ids_range(&self, dst: &mut Self::Ids, src: &Self::Ids, at: usize);
    /// `dst[index] += scale · Σ src`: device-side accumulation of step statistics
    /// (losses, counts), read back only when they are logged.
    fn sum_into(&self, dst: &mut Self::Buf, index: usize, src: &Self::Buf, scale: f32);

    fn upload(&self, data: &[f32]) -> Self::Buf {
        let mut buf = self.alloc(data.len());
        self.write(&mut buf, 0, data);
        buf
    }
    fn upload_ids(&self, data: &[u32]) -> Self::Ids {
        let mut ids = self.alloc_ids(data.len());
        self.write_ids(&mut ids, data);
        ids
    }
    fn download(&self, buf: &Self::Buf) -> Vec<f32> {
        self.read(buf, 0, self.len(buf))
    }
}

/// Token and position embeddings.
pub trait EmbeddingOps: Device {
    /// `out[r] = table[ids[r]]`, out `[ids.len, cols]`.
    fn embedding_forward(
        &self,
        out: &mut Self::Buf,
        ids: &Self::Ids,
        params: &Self::Buf,
        table: Span,
        cols: usize,
    );
    /// `grads[table][ids[r]] += dout[r]`.
    fn embedding_backward(
        &self,
        grads: &mut Self::Buf,
        table: Span,
        dout: &Self::Buf,
        ids: &Self::Ids,
        cols: usize,
    );
    /// `x[b, t] += table[t]` for a learned `[max_positions, cols]` table.
    fn learned_positions_forward(
        &self,
        x: &mut Self::Buf,
        params: &Self::Buf,
        table: Span,
        seq: usize,
        cols: usize,
    );
    /// `grads[table][t] += Σ_b dx[b, t]`.
    fn learned_positions_backward(
        &self,
        grads: &mut Self::Buf,
        table: Span,
        dx: &Self::Buf,
        seq: usize,
        cols: usize,
    );
    /// `x[b, t] += scale · pe[t]`, with the sinusoid table
    /// `pe[t, 2i] = sin(t·10000^(-2i/cols))`, `pe[t, 2i+1] = cos(…)` and a learned scalar `scale`.
    fn sinusoidal_positions_forward(
        &self,
        x: &mut Self::Buf,
        params: &Self::Buf,
        scale: Span,
        seq: usize,
        cols: usize,
    );
    /// `grads[scale] += Σ dx · pe`.
    fn sinusoidal_positions_backward(
        &self,
        grads: &mut Self::Buf,
        scale: Span,
        dx: &Self::Buf,
        seq: usize,
        cols: usize,
    );
    /// Rotates q and k of a `[rows, 3·hidden]` q|k|v buffer in place (rotary
    /// positions, the "rotate half" convention of Llama: dimension i pairs with
    /// i + head_dim/2, frequency theta^(-2i/head_dim)).
    fn rotary_forward(&self, qkv: &mut Self::Buf, shape: AttentionShape, theta: f32);
    /// The inverse rotation applied to dq and dk in place.
    fn rotary_backward(&self, dqkv: &mut Self::Buf, shape: AttentionShape, theta: f32);
}

/// LayerNorm and RMSNorm over the last dimension.
pub trait NormOps: Device {
    /// Writes `out`, and the statistics the backward needs: `mean` (LayerNorm;
    /// zeros for RMSNorm) and `rstd`, each `[rows]`.
    #[allow(clippy::too_many_arguments)]
    fn norm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        norm: Norm,
        cols: usize,
    );
    /// A pre-norm sub-layer's input projection: `norm_out = norm(x)` (with
    /// its statistics, as [`norm_forward`](Self::norm_forward)), then
    /// `out[m, n] = norm_out · W[n, k]ᵀ (+ b)` with `k` the norm's width.
    /// One call, so that a backend may hand the product its input in another
    /// form straight from the norm (CUDA under `CRAM_FP8`: an E4M3 copy,
    /// with no cast pass); the default is the two ops in turn.
    #[allow(clippy::too_many_arguments)]
    fn norm_matmul_forward(
        &self,
        out: &mut Self::Buf,
        (norm_out, mean, rstd): (&mut Self::Buf, &mut Self::Buf, &mut Self::Buf),
        x: &Self::Buf,
        params: &Self::Buf,
        norm: Norm,
        layer: Linear,
        shape: MatmulShape,
    ) where
        Self: MatmulOps,
    {
        self.norm_forward(norm_out, mean, rstd, x, params, norm, shape.k);
        self.matmul_forward(out, norm_out, params, layer, shape);
    }
    /// Adds the input gradient into `dinp` (residual-stream rule) and
    /// accumulates the parameter gradients.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        dinp: &mut Self::Buf,
        grads: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        norm: Norm,
        cols: usize,
    );
    /// [`norm_backward`](Self::norm_backward), then `dinp`'s new values
    /// also into `copy`, an activation buffer: in a pre-LN block the next
    /// product's output gradient, which the GPU reads in bf16 while `dinp`
    /// (the residual-stream gradient) stays f32. One call, so that a backend
    /// may write the copy in the same pass (CUDA: no cast of `dinp` before
    /// each output projection's backward); the default is the two ops.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward_copy(
        &self,
        (dinp, copy): (&mut Self::Buf, &mut Self::Buf),
        grads: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        (mean, rstd): (&Self::Buf, &Self::Buf),
        norm: Norm,
        cols: usize,
    ) {
        self.norm_backward(dinp, grads, dout, inp, params, mean, rstd, norm, cols);
        self.copy(copy, dinp);
    }
}

/// Dense layers.
pub trait MatmulOps: Device {
    /// `out[m, n] = inp[m, k] · W[n, k]ᵀ (+ b[n])`.
    fn matmul_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        layer: Linear,
        shape: MatmulShape,
    );
    /// `out = resid + inp · Wᵀ (+ b)`: the projection that ends a residual
    /// branch. `tmp` (out's size) is scratch for a backend that cannot add
    /// inside the product.
    #[allow(clippy::too_many_arguments)]
    fn matmul_forward_add(
        &self,
        out: &mut Self::Buf,
        resid: &Self::Buf,
        tmp: &mut Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        layer: Linear,
        shape: MatmulShape,
    );
    /// `dinp (=|+=) dout · W` when `dinp` is given (`accumulate` picks `+=`),
    /// `dW += doutᵀ · inp`, `db += Σ_rows dout`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_backward(
        &self,
        dinp: Option<&mut Self::Buf>,
        accumulate: bool,
        grads: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        params: &Self::Buf,
        layer: Linear,
        shape: MatmulShape,
    );
}

/// Scaled dot-product multi-head self-attention.
pub trait AttentionOps: Device {
    /// Length of the state `attention_forward` saves for the backward.
    fn attention_saved_len(&self, shape: AttentionShape) -> usize;
    /// `out[rows, hidden] = softmax(q·kᵀ/√d (+ causal mask)) · v` per head,
    /// reading q|k|v from `qkv[rows, 3·hidden]`; writes `saved`.
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        saved: &mut Self::Buf,
        qkv: &Self::Buf,
        shape: AttentionShape,
    );
    /// Writes `dqkv[rows, 3·hidden]`. `out` is the forward's output, as it
    /// left it: the flash kernels read it for Δ = rowsum(dO ∘ O) instead of
    /// keeping a copy of it in `saved`.
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        out: &Self::Buf,
        qkv: &Self::Buf,
        saved: &Self::Buf,
        shape: AttentionShape,
    );
    /// `attention_backward`, then `rotary_backward` of the q and k it wrote
    /// (rotary positions): one definition, which a backend may replace by a
    /// single pass (the CUDA flash kernels rotate dK and dQ as they store them).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_rotary(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        out: &Self::Buf,
        qkv: &Self::Buf,
        saved: &Self::Buf,
        shape: AttentionShape,
        theta: f32,
    ) where
        Self: EmbeddingOps,
    {
        self.attention_backward(dqkv, dout, out, qkv, saved, shape);
        self.rotary_backward(dqkv, shape, theta);
    }
}

/// Element-wise ops.
pub trait ActivationOps: Device {
    fn activation_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, act: Activation);
    fn activation_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        act: Activation,
    );
    /// Gated unit: `inp[rows, 2h]` = value | gate, `out[rows, h] = value · act(gate)`.
    fn glu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, act: Activation, half: usize);
    fn glu_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        act: Activation,
        half: usize,
    );
    /// `out = a + b`.
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf);
    /// Inverted dropout: `out = inp · keep / (1 - p)` with the mask of
    /// [`dropout_keep`] for `(seed, index)`, so every backend draws the same mask.
    fn dropout_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, p: f32, seed: u64);
    fn dropout_backward(&self, dinp: &mut Self::Buf, dout: &Self::Buf, p: f32, seed: u64);
}

/// Prediction heads and losses.
pub trait LossOps: Device {
    /// `out[j] = inp[idx[j]]` for rows of width `cols` (sparse prediction).
    fn gather_rows_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        idx: &Self::Ids,
        cols: usize,
    );
    /// `dinp = 0` except `dinp[idx[j]] = dout[j]` (indices are distinct).
    fn gather_rows_backward(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        idx: &Self::Ids,
        cols: usize,
    );
    /// Softmax cross-entropy per row of `logits[rows, vocab]`: `losses[r]` is
    /// `-log softmax(logits[r])[targets[r]]`, 0 where the target is [`IGNORE`].
    /// With `dscale`, `logits` is overwritten by its gradient
    /// `dscale · (softmax − onehot)` (0 on ignored rows).
    fn cross_entropy(
        &self,
        losses: &mut Self::Buf,
        logits: &mut Self::Buf,
        targets: &Self::Ids,
        vocab: usize,
        dscale: Option<f32>,
    );
    /// `hits[r] = 1` where the first arg-max of `logits[r]` is `targets[r]`,
    /// else 0 (also on [`IGNORE`] rows): prediction accuracy without bringing
    /// the logits to the host (64 MiB a batch of crammed-bert's evaluation).
    fn top1_hits(
        &self,
        hits: &mut Self::Buf,
        logits: &Self::Buf,
        targets: &Self::Ids,
        vocab: usize,
    );
    /// Squared error per row of a one-output regression head: `losses[r] =
    /// (preds[r] − targets[r])²` for every `r < len(targets)`. With `dscale`,
    /// `preds` is overwritten by its gradient `dscale · 2 · (preds − targets)`.
    fn mse_loss(
        &self,
        losses: &mut Self::Buf,
        preds: &mut Self::Buf,
        targets: &Self::Buf,
        dscale: Option<f32>,
    );
}

/// The optimizer over the flat buffer.
pub trait OptimOps: Device {
    /// `out[index] = Σ grads²`: the squared global gradient norm, left on the device.
    fn grad_norm_squared(&self, out: &mut Self::Buf, index: usize, grads: &Self::Buf);
    /// One AdamW step (decoupled weight decay) over the whole flat buffer. The
    /// gradients are first multiplied by `min(1, max_norm / ‖g‖)` with ‖g‖ read
    /// from `norm_sq[norm_index]` on the device; a non-finite ‖g‖ skips the
    /// step (see [`AdamW::skipped_slot`]).
    #[allow(clippy::too_many_arguments)]
    fn adamw_step(
        &self,
        params: &mut Self::Buf,
        grads: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        norm_sq: &mut Self::Buf,
        norm_index: usize,
        hp: AdamW,
    );
}

/// Everything the model and the trainer need.
pub trait Backend:
    EmbeddingOps + NormOps + MatmulOps + AttentionOps + ActivationOps + LossOps + OptimOps
{
}

impl<T> Backend for T where
    T: EmbeddingOps + NormOps + MatmulOps + AttentionOps + ActivationOps + LossOps + OptimOps
{
}

/// Target id meaning "no prediction here".
pub const IGNORE: u32 = u32::MAX;

/// [`MatmulOps::matmul_forward_add`] in two passes, the product into `tmp`
/// and then the sum: the CPU's reference order, and the CUDA backend's way
/// when cuBLASLt's epilogue cannot take the sum (C and D of two types).
#[allow(clippy::too_many_arguments)]
pub fn product_then_sum<B: MatmulOps + ActivationOps>(
    be: &B,
    out: &mut B::Buf,
    resid: &B::Buf,
    tmp: &mut B::Buf,
    inp: &B::Buf,
    params: &B::Buf,
    layer: Linear,
    shape: MatmulShape,
) {
    be.matmul_forward(tmp, inp, params, layer, shape);
    be.add(out, resid, tmp);
}

/// Whether dropout keeps element `index` under `seed`: a counter-based hash
/// (splitmix64), so the mask needs no state and every backend draws the same one.
pub fn dropout_keep(seed: u64, index: u64, p: f32) -> bool {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as f32 / (1u64 << 24) as f32;
    u >= p
}

/// The sinusoid of [`EmbeddingOps::sinusoidal_positions_forward`] at `(t, c)`.
pub fn sinusoid(t: usize, c: usize, cols: usize) -> f32 {
    let i = (c / 2) as f64;
    let angle = t as f64 * (10000f64).powf(-2.0 * i / cols as f64);
    (if c.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }) as f32
}

/// The index of the largest value, the first one on ties: the rule of a
/// "top-1 hit" on every backend (the CUDA `top1_hits` kernel counts the
/// columns that beat the target to match it).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}
