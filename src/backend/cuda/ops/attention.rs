//! Multi-head attention: the fused kernels of `kernels/fused_attention.cu`
//! where one is built for the shape (up to 128 positions), the tiled flash
//! kernels of `kernels/flash_attention.cu` for longer sequences of whole
//! 64-row tiles, else batched per-head cuBLASLt products around the softmax
//! kernels of `kernels/attention.cu`.

use super::flash_attention::FlashAttention;
use super::ROW_BLOCK;
use crate::backend::cuda::blas::{Dims, RowMajor};
use crate::backend::cuda::{assert_vector_aligned, f32_arg, Cuda, CudaBuf};
use crate::backend::{AttentionOps, AttentionShape, EmbeddingOps};

/// A fused attention kernel pair for one `(seq, head_dim)`: whole rows of
/// scores stay on chip and only each row's log-sum-exp is saved.
pub(in crate::backend::cuda) struct FusedAttention {
    pub forward: &'static str,
    pub backward: &'static str,
    pub seq: usize,
    pub head_dim: usize,
}

/// The shapes `fused_attention.cu` is instantiated for.
pub(in crate::backend::cuda) const FUSED_ATTENTION: [FusedAttention; 6] = [
    fused(
        32,
        32,
        "attention_fused_forward_32_32",
        "attention_fused_backward_32_32",
    ),
    fused(
        64,
        32,
        "attention_fused_forward_64_32",
        "attention_fused_backward_64_32",
    ),
    fused(
        128,
        32,
        "attention_fused_forward_128_32",
        "attention_fused_backward_128_32",
    ),
    fused(
        32,
        64,
        "attention_fused_forward_32_64",
        "attention_fused_backward_32_64",
    ),
    fused(
        64,
        64,
        "attention_fused_forward_64_64",
        "attention_fused_backward_64_64",
    ),
    fused(
        128,
        64,
        "attention_fused_forward_128_64",
        "attention_fused_backward_128_64",
    ),
];

const fn fused(
    seq: usize,
    head_dim: usize,
    forward: &'static str,
    backward: &'static str,
) -> FusedAttention {
    FusedAttention {
        forward,
        backward,
        seq,
        head_dim,
    }
}

impl FusedAttention {
    /// Dynamic shared memory (bytes): q, k, v rows (forward), plus the
    /// output gradient and one tile that holds the output, then P, then dS
    /// (backward: T×T, or T×D where that is wider); rows padded by 8. At
    /// T = 128 that is 106 KiB: two blocks share an SM.
    pub fn shared_bytes(&self, backward: bool) -> usize {
        let rows = self.seq * (self.head_dim + 8) * 2;
        if backward {
            4 * rows + rows.max(self.seq * (self.seq + 8) * 2)
        } else {
            3 * rows
        }
    }
}

/// Where the pieces of attention's saved state live (bf16 elements): the
/// per-head q, k, v, then the probabilities.
struct AttentionLayout {
    bh: usize,
    head_elems: usize,
    probs_elems: usize,
}

impl AttentionLayout {
    fn new(s: AttentionShape) -> Self {
        let bh = s.batch * s.heads;
        AttentionLayout {
            bh,
            head_elems: bh * s.seq * s.head_dim,
            probs_elems: bh * s.seq * s.seq,
        }
    }
    fn total(&self) -> usize {
        3 * self.head_elems + self.probs_elems
    }
    /// Pointer to q (0), k (1), v (2) or the probabilities (3) in `base`.
    fn part(&self, base: u64, which: usize) -> u64 {
        base + 2 * (which * self.head_elems) as u64
    }
}

impl Cuda {
    fn head_args(s: AttentionShape) -> [u64; 4] {
        [
            s.batch as u64,
            s.seq as u64,
            s.heads as u64,
            s.head_dim as u64,
        ]
    }

    /// Dims of a batched per-head product with row-major operands of `[t, t]`
    /// or `[t, d]`, given `(m, n, k)` and which operands are `[t, t]`.
    fn head_dims(
        s: AttentionShape,
        bh: usize,
        mnk: (usize, usize, usize),
        square: [bool; 3],
    ) -> Dims {
        let stride = |sq: bool| {
            if sq {
                s.seq * s.seq
            } else {
                s.seq * s.head_dim
            }
        };
        Dims {
            m: mnk.0,
            n: mnk.1,
            k: mnk.2,
            batch: bh,
            stride_a: stride(square[0]),
            stride_b: stride(square[1]),
            stride_c: stride(square[2]),
        }
    }
}

impl AttentionOps for Cuda {
    fn attention_saved_len(&self, shape: AttentionShape) -> usize {
        if self.fused_attention(shape).is_some() {
            // One f32 log-sum-exp per query row, in a bf16 buffer's bytes.
            return 2 * shape.batch * shape.heads * shape.seq;
        }
        match self.flash_attention(shape) {
            Some(_) => FlashAttention::saved_len(shape),
            None => AttentionLayout::new(shape).total(),
        }
    }

    fn attention_forward(
        &self,
        out: &mut CudaBuf,
        saved: &mut CudaBuf,
        qkv: &CudaBuf,
        shape: AttentionShape,
    ) {
        if let Some(f) = self.fused_attention(shape) {
            assert!(
                saved.len * saved.elem_bytes() >= 4 * shape.batch * shape.heads * shape.seq,
                "attention state must hold attention_saved_len values"
            );
            self.timed("attention_forward", || {
                let q = self.as_bf16(qkv, "cast_qkv");
                assert_vector_aligned("fused attention", &[q, out.ptr()]);
                self.launch(
                    f.forward,
                    (shape.batch * shape.heads) as u32,
                    2 * shape.seq as u32,
                    f.shared_bytes(false) as u32,
                    &[
                        out.ptr(),
                        out.bf(),
                        saved.ptr(),
                        q,
                        shape.heads as u64,
                        shape.causal as u64,
                        f32_arg(shape.scale()),
                    ],
                )
            });
            return;
        }
        if let Some(f) = self.flash_attention(shape) {
            self.flash_forward(f, out, saved, qkv, shape);
            return;
        }
        let s = shape;
        let lay = AttentionLayout::new(s);
        assert!(
            saved.bf16 && saved.len >= lay.total(),
            "attention state must be a bf16 buffer of attention_saved_len values"
        );
        let (t, d) = (s.seq, s.head_dim);
        let [b_, t_, h_, d_] = Self::head_args(s);
        self.timed("attention_forward", || {
            let base = saved.ptr();
            let n = 3 * s.rows() * s.hidden();
            self.launch_each(
                "qkv_to_heads",
                n,
                &[base, qkv.ptr(), qkv.bf(), b_, t_, h_, d_],
            );
            let scores = self.scratch("scores", lay.probs_elems * 4);
            self.blas.gemm(
                RowMajor::ABt,
                Self::head_dims(s, lay.bh, (t, t, d), [false, false, true]),
                (lay.part(base, 0), lay.part(base, 1)),
                (scores, false),
                s.scale(),
                0.0,
            );
            let rows = lay.bh * t;
            self.launch(
                "attention_softmax",
                self.row_grid(rows),
                ROW_BLOCK,
                0,
                &[
                    lay.part(base, 3),
                    scores,
                    rows as u64,
                    t as u64,
                    s.causal as u64,
                ],
            );
            let o = self.scratch("heads_out", lay.head_elems * 2);
            self.blas.gemm(
                RowMajor::AB,
                Self::head_dims(s, lay.bh, (t, d, t), [true, false, false]),
                (lay.part(base, 3), lay.part(base, 2)),
                (o, true),
                1.0,
                0.0,
            );
            self.launch_each(
                "heads_to_rows",
                s.rows() * s.hidden(),
                &[out.ptr(), out.bf(), o, b_, t_, h_, d_],
            );
        });
    }

    fn attention_backward(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
    ) {
        self.backward(dqkv, dout, out, qkv, saved, shape, None);
    }

    fn attention_backward_rotary(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
        theta: f32,
    ) {
        self.backward(dqkv, dout, out, qkv, saved, shape, Some(theta));
    }
}

impl Cuda {
    /// The attention backward on whichever kernels hold `shape`; with
    /// `rope` (rotary positions' theta), then the inverse rotation of dq and
    /// dk: inside the flash kernels, as its own pass after the others.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
        rope: Option<f32>,
    ) {
        if let Some(f) = self.fused_attention(shape) {
            self.fused_backward(f, dqkv, dout, out, qkv, saved, shape);
        } else if let Some(f) = self.flash_attention(shape) {
            return self.flash_backward(f, dqkv, dout, out, qkv, saved, shape, rope);
        } else {
            self.general_backward(dqkv, dout, saved, shape);
        }
        if let Some(theta) = rope {
            self.rotary_backward(dqkv, shape, theta);
        }
    }

    /// The short kernels' backward: one block a (batch, head), the whole
    /// sequence on chip.
    #[allow(clippy::too_many_arguments)]
    fn fused_backward(
        &self,
        f: &FusedAttention,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
    ) {
        self.timed("attention_backward", || {
            let q = self.as_bf16(qkv, "cast_qkv");
            assert_vector_aligned("fused attention", &[q, dout.ptr(), dqkv.ptr(), out.ptr()]);
            self.launch(
                f.backward,
                (shape.batch * shape.heads) as u32,
                2 * shape.seq as u32,
                f.shared_bytes(true) as u32,
                &[
                    dqkv.ptr(),
                    dqkv.bf(),
                    dout.ptr(),
                    dout.bf(),
                    out.ptr(),
                    out.bf(),
                    q,
                    saved.ptr(),
                    shape.heads as u64,
                    shape.causal as u64,
                    f32_arg(shape.scale()),
                ],
            )
        });
    }

    /// The general backward: batched per-head cuBLASLt products around the
    /// softmax backward kernel, from the per-head q, k, v and probabilities
    /// the forward saved.
    fn general_backward(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
    ) {
        let s = shape;
        let lay = AttentionLayout::new(s);
        let (t, d) = (s.seq, s.head_dim);
        let [b_, t_, h_, d_] = Self::head_args(s);
        self.timed("attention_backward", || {
            let base = saved.ptr();
            let (q, k, v, p) = (
                lay.part(base, 0),
                lay.part(base, 1),
                lay.part(base, 2),
                lay.part(base, 3),
            );
            let d_o = self.scratch("heads_out", lay.head_elems * 2);
            self.launch_each(
                "rows_to_heads",
                s.rows() * s.hidden(),
                &[d_o, dout.ptr(), dout.bf(), b_, t_, h_, d_],
            );
            let dp = self.scratch("scores", lay.probs_elems * 4);
            self.blas.gemm(
                RowMajor::ABt,
                Self::head_dims(s, lay.bh, (t, t, d), [false, false, true]),
                (d_o, v),
                (dp, false),
                1.0,
                0.0,
            );
            let dheads = self.scratch("dheads", 3 * lay.head_elems * 2);
            let (dq, dk, dv) = (
                lay.part(dheads, 0),
                lay.part(dheads, 1),
                lay.part(dheads, 2),
            );
            // dV = Pᵀ · dO
            self.blas.gemm(
                RowMajor::AtB,
                Self::head_dims(s, lay.bh, (t, d, t), [true, false, false]),
                (p, d_o),
                (dv, true),
                1.0,
                0.0,
            );
            let ds = self.scratch("dscores", lay.probs_elems * 2);
            let rows = lay.bh * t;
            self.launch(
                "attention_softmax_backward",
                self.row_grid(rows),
                ROW_BLOCK,
                0,
                &[ds, dp, p, rows as u64, t as u64, f32_arg(s.scale())],
            );
            // dQ = dS · K, dK = dSᵀ · Q
            self.blas.gemm(
                RowMajor::AB,
                Self::head_dims(s, lay.bh, (t, d, t), [true, false, false]),
                (ds, k),
                (dq, true),
                1.0,
                0.0,
            );
            self.blas.gemm(
                RowMajor::AtB,
                Self::head_dims(s, lay.bh, (t, d, t), [true, false, false]),
                (ds, q),
                (dk, true),
                1.0,
                0.0,
            );
            self.launch_each(
                "heads_to_qkv",
                3 * s.rows() * s.hidden(),
                &[dqkv.ptr(), dqkv.bf(), dheads, b_, t_, h_, d_],
            );
        });
    }
}
