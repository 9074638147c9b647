//! Multi-head attention: the fused kernels of `kernels/fused_attention.cu`
//! where one is built for the shape (up to 128 positions), the tiled flash
//! kernels of `kernels/flash_attention.cu` for longer sequences of whole
//! 64-row tiles, else batched per-head cuBLASLt products around the softmax
//! kernels of `kernels/attention.cu`.

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
    /// output gradient and one T×T bf16 tile, P then dS (backward); rows
    /// padded by 8. At T = 128 that is 106 KiB: two blocks share an SM.
    pub fn shared_bytes(&self, backward: bool) -> usize {
        let rows = self.seq * (self.head_dim + 8) * 2;
        if backward {
            4 * rows + self.seq * (self.seq + 8) * 2
        } else {
            3 * rows
        }
    }
}

/// A flash attention kernel pair for one head width: queries and keys in
/// tiles of [`FlashAttention::TILE`], any number of them.
pub(in crate::backend::cuda) struct FlashAttention {
    pub forward: &'static str,
    pub backward: &'static str,
    /// The forward with two 16-row m-tiles a warp (128 query rows a block),
    /// used where the sequence holds whole pairs of tiles (faster where
    /// built; `CRAM_FLASH_FORWARD=m1` turns it off for comparison).
    pub forward_m2: Option<&'static str>,
    /// The backward with two key tiles (128 keys, eight warps) a block, which
    /// reduces into dQ half as often; where the sequence holds whole pairs
    /// of tiles and `CRAM_FLASH_BACKWARD=k2` asks for it (a comparison
    /// switch until a GPU measures it).
    pub backward_k2: Option<&'static str>,
    pub head_dim: usize,
}

/// The head widths `flash_attention.cu` is instantiated for.
pub(in crate::backend::cuda) const FLASH_ATTENTION: [FlashAttention; 3] = [
    FlashAttention {
        forward: "attention_flash_forward_32",
        backward: "attention_flash_backward_32",
        forward_m2: None,
        backward_k2: None,
        head_dim: 32,
    },
    FlashAttention {
        forward: "attention_flash_forward_64",
        backward: "attention_flash_backward_64",
        forward_m2: Some("attention_flash_forward_64_m2"),
        backward_k2: Some("attention_flash_backward_64_k2"),
        head_dim: 64,
    },
    FlashAttention {
        forward: "attention_flash_forward_128",
        backward: "attention_flash_backward_128",
        forward_m2: None,
        backward_k2: None,
        head_dim: 128,
    },
];

impl FlashAttention {
    /// Query and key rows per tile (`FA_TILE` in the kernels).
    pub const TILE: usize = 64;
    /// Threads per block: four warps of 16 rows (a key tile's; eight warps
    /// for the backward's two).
    const THREADS: u32 = 128;

    /// Dynamic shared memory (bytes): a q tile and two (k, v) buffers
    /// (forward); k and v tiles, two (q, output-gradient) buffers and the P
    /// and dS tiles (backward); rows padded by 8 bf16. The second buffer
    /// takes the next tile's copy while the warps compute on the first.
    pub fn shared_bytes(&self, backward: bool) -> usize {
        if backward {
            Self::backward_bytes(self.head_dim, 1)
        } else {
            Self::forward_bytes(self.head_dim, 1)
        }
    }

    /// The backward's shared memory with `kb` key tiles a block: K and V,
    /// two (q, output-gradient) buffers, and P and dS of 64 query rows by
    /// the block's keys.
    pub fn backward_bytes(head_dim: usize, kb: usize) -> usize {
        let tile = Self::TILE * (head_dim + 8) * 2;
        (2 * kb + 4) * tile + 2 * Self::TILE * (kb * Self::TILE + 8) * 2
    }

    /// The forward's shared memory with `m` query tiles a block: the
    /// queries and two (k, v) buffers.
    pub fn forward_bytes(head_dim: usize, m: usize) -> usize {
        (m + 4) * Self::TILE * (head_dim + 8) * 2
    }

    /// Saved state (bf16 elements): each query row's f32 log-sum-exp. The
    /// backward's Δ = rowsum(dO ∘ O) reads O from the forward's output,
    /// which the model keeps for the output projection anyway (a copy here
    /// was rows × hidden bf16 a layer: 0.6 GB at gpt-small's shape).
    fn saved_len(shape: AttentionShape) -> usize {
        2 * shape.batch * shape.heads * shape.seq
    }

    /// Blocks of `rows` query or key rows for `shape`.
    fn blocks(shape: AttentionShape, rows: usize) -> u32 {
        (shape.batch * shape.heads * (shape.seq / rows)) as u32
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

impl Cuda {
    fn flash_forward(
        &self,
        f: &FlashAttention,
        out: &mut CudaBuf,
        saved: &mut CudaBuf,
        qkv: &CudaBuf,
        shape: AttentionShape,
    ) {
        assert!(
            saved.bf16 && saved.len >= FlashAttention::saved_len(shape),
            "attention state must be a bf16 buffer of attention_saved_len values"
        );
        let lse = saved.ptr();
        // Two query tiles a block where the sequence holds whole pairs of
        // tiles, unless the comparison switch turns it off.
        let m2 = (f.forward_m2).filter(|_| {
            self.flash_forward_m2 && shape.seq.is_multiple_of(2 * FlashAttention::TILE)
        });
        let (kernel, blocks, bytes) = match m2 {
            Some(k) => (
                k,
                FlashAttention::blocks(shape, 2 * FlashAttention::TILE),
                FlashAttention::forward_bytes(f.head_dim, 2),
            ),
            None => (
                f.forward,
                FlashAttention::blocks(shape, FlashAttention::TILE),
                f.shared_bytes(false),
            ),
        };
        self.timed("attention_forward", || {
            let q = self.as_bf16(qkv, "cast_qkv");
            assert_vector_aligned("flash attention", &[q, out.ptr()]);
            self.launch(
                kernel,
                blocks,
                FlashAttention::THREADS,
                bytes as u32,
                &[
                    out.ptr(),
                    out.bf(),
                    lse,
                    q,
                    shape.seq as u64,
                    shape.heads as u64,
                    shape.causal as u64,
                    f32_arg(1.0 / (shape.head_dim as f32).sqrt()),
                ],
            )
        });
    }

    /// Δ per row first, then the key-tile kernel (dK, dV; dQ by f32 atomics
    /// into zeroed scratch), then dQ into dqkv.
    #[allow(clippy::too_many_arguments)]
    fn flash_backward(
        &self,
        f: &FlashAttention,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
        rope: Option<f32>,
    ) {
        let row_heads = shape.batch * shape.heads * shape.seq;
        let lse = saved.ptr();
        let (rows, hidden) = (shape.rows(), shape.hidden());
        // Three timed parts, so that a profile tells the key-tile kernel from
        // the passes around it: Δ with dQ's zeroing, the kernel, dQ's store.
        let q = self.as_bf16(qkv, "cast_qkv");
        assert_vector_aligned("flash attention", &[q, dout.ptr(), dqkv.ptr(), out.ptr()]);
        let delta = self.scratch("flash_delta", row_heads * 4);
        let dq = self.scratch("flash_dq", rows * hidden * 4);
        // Eight columns a thread (the flash head widths, 32 to 128, are
        // multiples of 8): Δ, and dQ's zeroing in the same pass.
        let chunks = rows * hidden / 8;
        // Rotary positions: dK and dQ get the inverse rotation as they are
        // stored (no separate pass over dqkv's q and k columns).
        let table = rope.map_or(0, |theta| self.rotary_table(shape, theta));
        self.timed("attention_backward_delta", || {
            self.launch(
                "flash_backward_delta",
                self.grid(chunks),
                256,
                0,
                &[
                    delta,
                    dq,
                    dout.ptr(),
                    dout.bf(),
                    out.ptr(),
                    out.bf(),
                    chunks as u64,
                    hidden as u64,
                    shape.seq as u64,
                    shape.head_dim as u64,
                ],
            );
        });
        // Two key tiles a block where asked for and the sequence holds whole pairs.
        let k2 = (f.backward_k2).filter(|_| {
            self.flash_backward_k2 && shape.seq.is_multiple_of(2 * FlashAttention::TILE)
        });
        let (kernel, kb) = k2.map_or((f.backward, 1), |k| (k, 2));
        self.timed("attention_backward", || {
            self.launch(
                kernel,
                FlashAttention::blocks(shape, kb * FlashAttention::TILE),
                kb as u32 * FlashAttention::THREADS,
                FlashAttention::backward_bytes(f.head_dim, kb) as u32,
                &[
                    dqkv.ptr(),
                    dqkv.bf(),
                    dq,
                    dout.ptr(),
                    dout.bf(),
                    q,
                    lse,
                    delta,
                    table,
                    shape.seq as u64,
                    shape.heads as u64,
                    shape.causal as u64,
                    f32_arg(1.0 / (shape.head_dim as f32).sqrt()),
                ],
            )
        });
        // Four columns a thread where the counts fit 32 bits (the flash
        // head widths make hidden a multiple of 32).
        let vec4 = hidden.is_multiple_of(4) && u32::try_from(rows * hidden / 4).is_ok();
        if rope.is_some() {
            // Four rotary pairs a thread: head widths 32 to 128 make half a
            // head a multiple of 4, and the table is scratch (aligned).
            assert!(
                vec4,
                "flash attention's rotary dQ store needs 32-bit counts"
            );
            let n4 = rows * hidden / 8;
            self.timed("attention_backward_dq", || {
                self.launch(
                    "flash_backward_store_dq_rotary4",
                    self.grid(n4),
                    256,
                    0,
                    &[
                        dqkv.ptr(),
                        dqkv.bf(),
                        dq,
                        table,
                        shape.seq as u64,
                        shape.heads as u64,
                        shape.head_dim as u64,
                        n4 as u64,
                    ],
                )
            });
            return;
        }
        let (name, threads) = if vec4 {
            ("flash_backward_store_dq4", rows * hidden / 4)
        } else {
            ("flash_backward_store_dq", rows * hidden)
        };
        self.timed("attention_backward_dq", || {
            self.launch(
                name,
                self.grid(threads),
                256,
                0,
                &[dqkv.ptr(), dqkv.bf(), dq, rows as u64, hidden as u64],
            )
        });
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
                        f32_arg(1.0 / (shape.head_dim as f32).sqrt()),
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
                1.0 / (d as f32).sqrt(),
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
        if let Some(f) = self.fused_attention(shape) {
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
                        f32_arg(1.0 / (shape.head_dim as f32).sqrt()),
                    ],
                )
            });
            return;
        }
        if let Some(f) = self.flash_attention(shape) {
            self.flash_backward(f, dqkv, dout, out, qkv, saved, shape, None);
            return;
        }
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
                &[
                    ds,
                    dp,
                    p,
                    rows as u64,
                    t as u64,
                    f32_arg(1.0 / (d as f32).sqrt()),
                ],
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
        match self.flash_attention(shape) {
            // The short kernels (sequences up to 128) keep the separate pass.
            Some(f) if self.fused_attention(shape).is_none() => {
                self.flash_backward(f, dqkv, dout, out, qkv, saved, shape, Some(theta))
            }
            _ => {
                self.attention_backward(dqkv, dout, out, qkv, saved, shape);
                self.rotary_backward(dqkv, shape, theta);
            }
        }
    }
}
