//! The Backend ops on the GPU: argument plumbing around the kernels in
//! `kernels/*.cu` and the cuBLASLt products in `blas.rs`. Each op is wrapped
//! in `timed` so that `cram bench --profile` can attribute GPU time.

use super::blas::{Dims, RowMajor};
use super::{assert_vector_aligned, f32_arg, vector_aligned, Cuda, CudaBuf, CudaIds, View};
use crate::backend::{
    Activation, ActivationOps, AdamW, AttentionOps, AttentionShape, Device, EmbeddingOps, Linear,
    LossOps, MatmulOps, MatmulShape, Norm, NormKind, NormOps, OptimOps, Span,
};

/// Threads per block of the row kernels (one warp per row).
const ROW_BLOCK: u32 = 256;
const WARPS_PER_BLOCK: usize = ROW_BLOCK as usize / 32;
/// Warps per block of `norm_backward`, and the shared memory it may use
/// (set as the kernel's limit at start-up): 2·cols floats per warp.
pub(super) const NORM_BACKWARD_WARPS: usize = 4;
pub(super) const NORM_BACKWARD_SHARED: usize = 64 * 1024;

fn act_code(act: Activation) -> u64 {
    match act {
        Activation::Gelu => 0,
        Activation::Silu => 1,
    }
}

impl Cuda {
    fn row_grid(&self, rows: usize) -> u32 {
        rows.div_ceil(WARPS_PER_BLOCK).max(1) as u32
    }

    /// Pointer to a parameter tensor in an f32 buffer.
    fn f32_at(buf: &CudaBuf, span: Span) -> u64 {
        assert!(!buf.bf16, "parameters and gradients are f32");
        buf.at(span.offset)
    }
}

impl EmbeddingOps for Cuda {
    fn embedding_forward(
        &self,
        out: &mut CudaBuf,
        ids: &CudaIds,
        params: &CudaBuf,
        table: Span,
        cols: usize,
    ) {
        let n = ids.len * cols;
        self.timed("embedding_forward", || {
            self.launch_each(
                "embedding_forward",
                n,
                &[
                    out.ptr(),
                    out.bf(),
                    ids.ptr(),
                    Self::f32_at(params, table),
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn embedding_backward(
        &self,
        grads: &mut CudaBuf,
        table: Span,
        dout: &CudaBuf,
        ids: &CudaIds,
        cols: usize,
    ) {
        let n = ids.len * cols;
        self.timed("embedding_backward", || {
            self.launch_each(
                "embedding_backward",
                n,
                &[
                    Self::f32_at(grads, table),
                    dout.ptr(),
                    dout.bf(),
                    ids.ptr(),
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn learned_positions_forward(
        &self,
        x: &mut CudaBuf,
        params: &CudaBuf,
        table: Span,
        seq: usize,
        cols: usize,
    ) {
        let n = x.len;
        self.timed("positions_forward", || {
            self.launch_each(
                "learned_positions_forward",
                n,
                &[
                    x.ptr(),
                    x.bf(),
                    Self::f32_at(params, table),
                    seq as u64,
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn learned_positions_backward(
        &self,
        grads: &mut CudaBuf,
        table: Span,
        dx: &CudaBuf,
        seq: usize,
        cols: usize,
    ) {
        let rows = dx.len / cols;
        self.timed("positions_backward", || {
            self.launch_each(
                "learned_positions_backward",
                seq * cols,
                &[
                    Self::f32_at(grads, table),
                    dx.ptr(),
                    dx.bf(),
                    seq as u64,
                    cols as u64,
                    rows as u64,
                ],
            )
        });
    }

    fn sinusoidal_positions_forward(
        &self,
        x: &mut CudaBuf,
        params: &CudaBuf,
        scale: Span,
        seq: usize,
        cols: usize,
    ) {
        let n = x.len;
        self.timed("positions_forward", || {
            self.launch_each(
                "sinusoidal_positions_forward",
                n,
                &[
                    x.ptr(),
                    x.bf(),
                    Self::f32_at(params, scale),
                    seq as u64,
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn sinusoidal_positions_backward(
        &self,
        grads: &mut CudaBuf,
        scale: Span,
        dx: &CudaBuf,
        seq: usize,
        cols: usize,
    ) {
        let n = dx.len;
        self.timed("positions_backward", || {
            let blocks = self.grid(n).min(1024);
            let partials = self.scratch("partials", blocks as usize * 4);
            self.launch(
                "sinusoidal_positions_backward",
                blocks,
                256,
                0,
                &[
                    partials,
                    dx.ptr(),
                    dx.bf(),
                    seq as u64,
                    cols as u64,
                    n as u64,
                ],
            );
            self.finish_sum(Self::f32_at(grads, scale), 0, partials, blocks, 1.0, true);
        });
    }

    fn rotary_forward(&self, qkv: &mut CudaBuf, shape: AttentionShape, theta: f32) {
        self.timed("rotary", || self.rotary(qkv, shape, theta, 1.0));
    }

    fn rotary_backward(&self, dqkv: &mut CudaBuf, shape: AttentionShape, theta: f32) {
        self.timed("rotary", || self.rotary(dqkv, shape, theta, -1.0));
    }
}

impl Cuda {
    fn rotary(&self, qkv: &mut CudaBuf, shape: AttentionShape, theta: f32, direction: f32) {
        assert!(
            shape.head_dim.is_multiple_of(2),
            "rotary positions need an even head_dim, got {}",
            shape.head_dim
        );
        let n = shape.rows() * shape.hidden();
        self.launch_each(
            "rotary",
            n,
            &[
                qkv.ptr(),
                qkv.bf(),
                shape.seq as u64,
                shape.heads as u64,
                shape.head_dim as u64,
                f32_arg(theta),
                f32_arg(direction),
                shape.rows() as u64,
            ],
        );
    }
}

impl NormOps for Cuda {
    fn norm_forward(
        &self,
        out: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        norm: Norm,
        cols: usize,
    ) {
        let rows = inp.len / cols;
        assert!(!mean.bf16 && !rstd.bf16, "norm statistics are f32");
        if cols.is_multiple_of(4) {
            assert_vector_aligned("norm_forward", &[out.ptr(), inp.ptr()]);
        }
        self.timed("norm_forward", || {
            self.launch(
                "norm_forward",
                self.row_grid(rows),
                ROW_BLOCK,
                0,
                &[
                    out.ptr(),
                    out.bf(),
                    mean.ptr(),
                    rstd.ptr(),
                    inp.ptr(),
                    inp.bf(),
                    Self::f32_at(params, norm.weight),
                    norm.bias.map_or(0, |b| Self::f32_at(params, b)),
                    (norm.kind == NormKind::Layernorm) as u64,
                    f32_arg(norm.eps),
                    rows as u64,
                    cols as u64,
                ],
            )
        });
    }

    fn norm_backward(
        &self,
        dinp: &mut CudaBuf,
        grads: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        norm: Norm,
        cols: usize,
    ) {
        let rows = inp.len / cols;
        // Each of the block's warps keeps dw and db (2·cols floats) in shared memory.
        let shared = NORM_BACKWARD_WARPS * 2 * cols * 4;
        assert!(
            shared <= NORM_BACKWARD_SHARED,
            "norm_backward: {cols} columns need more shared memory than the {NORM_BACKWARD_SHARED} bytes it may use"
        );
        // Eight blocks per SM (as many as shared memory allows for BERT
        // widths); every warp walks several rows.
        let blocks = (self.sm_count as usize * 8).min(rows.div_ceil(NORM_BACKWARD_WARPS).max(1));
        if cols.is_multiple_of(4) {
            assert_vector_aligned("norm_backward", &[dinp.ptr(), dout.ptr(), inp.ptr()]);
        }
        self.timed("norm_backward", || {
            self.launch(
                "norm_backward",
                blocks as u32,
                32 * NORM_BACKWARD_WARPS as u32,
                shared as u32,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    Self::f32_at(grads, norm.weight),
                    norm.bias.map_or(0, |b| Self::f32_at(grads, b)),
                    dout.ptr(),
                    dout.bf(),
                    inp.ptr(),
                    inp.bf(),
                    Self::f32_at(params, norm.weight),
                    mean.ptr(),
                    rstd.ptr(),
                    (norm.kind == NormKind::Layernorm) as u64,
                    rows as u64,
                    cols as u64,
                ],
            )
        });
    }
}

impl MatmulOps for Cuda {
    fn matmul_forward(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        self.timed("matmul_forward", || {
            let x = self.as_bf16(inp, "cast_inp");
            let w = self.bf16_ptr(params) + 2 * layer.weight.offset as u64;
            self.blas.gemm(
                RowMajor::ABt,
                Dims::plain(m, n, k),
                (x, w),
                (out.ptr(), out.bf16),
                1.0,
                0.0,
            );
            if let Some(bias) = layer.bias {
                self.launch_each(
                    "add_bias",
                    m * n,
                    &[
                        out.ptr(),
                        out.bf(),
                        Self::f32_at(params, bias),
                        n as u64,
                        (m * n) as u64,
                    ],
                );
            }
        });
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut CudaBuf>,
        accumulate: bool,
        grads: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        self.timed("matmul_backward", || {
            let dy = self.as_bf16(dout, "cast_dout");
            let x = self.as_bf16(inp, "cast_inp");
            if let Some(dinp) = dinp {
                let w = self.bf16_ptr(params) + 2 * layer.weight.offset as u64;
                let beta = if accumulate { 1.0 } else { 0.0 };
                self.blas.gemm(
                    RowMajor::AB,
                    Dims::plain(m, k, n),
                    (dy, w),
                    (dinp.ptr(), dinp.bf16),
                    1.0,
                    beta,
                );
            }
            self.blas.gemm(
                RowMajor::AtB,
                Dims::plain(n, k, m),
                (dy, x),
                (Self::f32_at(grads, layer.weight), false),
                1.0,
                1.0,
            );
            if let Some(bias) = layer.bias {
                self.launch_each(
                    "bias_backward",
                    n,
                    &[
                        Self::f32_at(grads, bias),
                        dout.ptr(),
                        dout.bf(),
                        m as u64,
                        n as u64,
                    ],
                );
            }
        });
    }
}

/// A fused attention kernel pair for one `(seq, head_dim)`: whole rows of
/// scores stay on chip and only each row's log-sum-exp is saved.
pub(super) struct FusedAttention {
    pub forward: &'static str,
    pub backward: &'static str,
    pub seq: usize,
    pub head_dim: usize,
}

/// The shapes `fused_attention.cu` is instantiated for.
pub(super) const FUSED_ATTENTION: [FusedAttention; 6] = [
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
    /// output gradient and two T×T bf16 tiles (backward); rows padded by 8.
    pub fn shared_bytes(&self, backward: bool) -> usize {
        let rows = self.seq * (self.head_dim + 8) * 2;
        if backward {
            4 * rows + 2 * self.seq * (self.seq + 8) * 2
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
        match self.fused_attention(shape) {
            // One f32 log-sum-exp per query row, in a bf16 buffer's bytes.
            Some(_) => 2 * shape.batch * shape.heads * shape.seq,
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
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
    ) {
        if let Some(f) = self.fused_attention(shape) {
            self.timed("attention_backward", || {
                let q = self.as_bf16(qkv, "cast_qkv");
                assert_vector_aligned("fused attention", &[q, dout.ptr(), dqkv.ptr()]);
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
}

impl ActivationOps for Cuda {
    fn activation_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, act: Activation) {
        let n = out.len;
        self.timed("activation", || {
            self.launch_each(
                "activation_forward",
                n,
                &[
                    out.ptr(),
                    out.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    n as u64,
                ],
            )
        });
    }

    fn activation_backward(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        act: Activation,
    ) {
        let n = dinp.len;
        self.timed("activation_backward", || {
            self.launch_each(
                "activation_backward",
                n,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    dout.ptr(),
                    dout.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    n as u64,
                ],
            )
        });
    }

    fn glu_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, act: Activation, half: usize) {
        let n = inp.len / 2;
        assert!(inp.len < 1 << 32, "glu indexes with 32 bits");
        let (name, vec4) = Self::glu_kernel("glu_forward", half, &[out.ptr(), inp.ptr()]);
        self.timed("glu_forward", || {
            self.launch_vec(
                name,
                n,
                vec4,
                &[
                    out.ptr(),
                    out.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    half as u64,
                    n as u64,
                ],
            )
        });
    }

    fn glu_backward(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        act: Activation,
        half: usize,
    ) {
        let n = inp.len / 2;
        assert!(inp.len < 1 << 32, "glu indexes with 32 bits");
        let (name, vec4) =
            Self::glu_kernel("glu_backward", half, &[dinp.ptr(), dout.ptr(), inp.ptr()]);
        self.timed("glu_backward", || {
            self.launch_vec(
                name,
                n,
                vec4,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    dout.ptr(),
                    dout.bf(),
                    inp.ptr(),
                    inp.bf(),
                    act_code(act),
                    half as u64,
                    n as u64,
                ],
            )
        });
    }

    fn add(&self, out: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf) {
        let n = out.len;
        let vec4 = n.is_multiple_of(4) && vector_aligned(&[out.ptr(), a.ptr(), b.ptr()]);
        self.timed("add", || {
            self.launch_vec(
                if vec4 { "add" } else { "add_scalar" },
                n,
                vec4,
                &[
                    out.ptr(),
                    out.bf(),
                    a.ptr(),
                    a.bf(),
                    b.ptr(),
                    b.bf(),
                    n as u64,
                ],
            )
        });
    }

    fn dropout_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, p: f32, seed: u64) {
        self.timed("dropout", || self.dropout(out, inp, p, seed));
    }

    fn dropout_backward(&self, dinp: &mut CudaBuf, dout: &CudaBuf, p: f32, seed: u64) {
        self.timed("dropout", || self.dropout(dinp, dout, p, seed));
    }
}

impl Cuda {
    /// The GLU kernel for `half` columns: four values per thread when a
    /// group of four never straddles a row and the buffers allow 16-byte
    /// accesses, else one (`<name>_scalar`).
    fn glu_kernel(name: &'static str, half: usize, ptrs: &[u64]) -> (&'static str, bool) {
        let vec4 = half.is_multiple_of(4) && vector_aligned(ptrs);
        let scalar = match name {
            "glu_forward" => "glu_forward_scalar",
            _ => "glu_backward_scalar",
        };
        (if vec4 { name } else { scalar }, vec4)
    }

    fn dropout(&self, out: &mut CudaBuf, inp: &CudaBuf, p: f32, seed: u64) {
        let n = out.len;
        self.launch_each(
            "dropout",
            n,
            &[
                out.ptr(),
                out.bf(),
                inp.ptr(),
                inp.bf(),
                f32_arg(p),
                seed,
                n as u64,
            ],
        );
    }
}

impl LossOps for Cuda {
    fn gather_rows_forward(&self, out: &mut CudaBuf, inp: &CudaBuf, idx: &CudaIds, cols: usize) {
        let n = idx.len * cols;
        self.timed("gather_rows", || {
            self.launch_each(
                "gather_rows",
                n,
                &[
                    out.ptr(),
                    out.bf(),
                    inp.ptr(),
                    inp.bf(),
                    idx.ptr(),
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn gather_rows_backward(&self, dinp: &mut CudaBuf, dout: &CudaBuf, idx: &CudaIds, cols: usize) {
        let n = idx.len * cols;
        self.zero(dinp);
        self.timed("scatter_rows", || {
            self.launch_each(
                "scatter_rows",
                n,
                &[
                    dinp.ptr(),
                    dinp.bf(),
                    dout.ptr(),
                    dout.bf(),
                    idx.ptr(),
                    cols as u64,
                    n as u64,
                ],
            )
        });
    }

    fn cross_entropy(
        &self,
        losses: &mut CudaBuf,
        logits: &mut CudaBuf,
        targets: &CudaIds,
        vocab: usize,
        dscale: Option<f32>,
    ) {
        let rows = targets.len;
        assert!(!losses.bf16, "losses are f32");
        if rows == 0 {
            return;
        }
        self.timed("cross_entropy", || {
            self.launch(
                "cross_entropy",
                rows as u32,
                512,
                0,
                &[
                    losses.ptr(),
                    logits.ptr(),
                    logits.bf(),
                    targets.ptr(),
                    vocab as u64,
                    dscale.is_some() as u64,
                    f32_arg(dscale.unwrap_or(0.0)),
                ],
            )
        });
    }

    fn top1_hits(&self, hits: &mut CudaBuf, logits: &CudaBuf, targets: &CudaIds, vocab: usize) {
        let rows = targets.len;
        assert!(!hits.bf16, "hits are f32");
        if rows == 0 {
            return;
        }
        self.timed("top1_hits", || {
            self.launch(
                "top1_hits",
                rows as u32,
                512,
                0,
                &[
                    hits.ptr(),
                    logits.ptr(),
                    logits.bf(),
                    targets.ptr(),
                    vocab as u64,
                ],
            )
        });
    }

    fn mse_loss(
        &self,
        losses: &mut CudaBuf,
        preds: &mut CudaBuf,
        targets: &CudaBuf,
        dscale: Option<f32>,
    ) {
        self.timed("mse_loss", || self.mse(losses, preds, targets, dscale));
    }
}

impl Cuda {
    fn mse(
        &self,
        losses: &mut CudaBuf,
        preds: &mut CudaBuf,
        targets: &CudaBuf,
        dscale: Option<f32>,
    ) {
        let n = targets.len;
        assert!(!losses.bf16, "losses are f32");
        self.launch_each(
            "mse_loss",
            n,
            &[
                losses.ptr(),
                preds.ptr(),
                preds.bf(),
                targets.ptr(),
                targets.bf(),
                dscale.is_some() as u64,
                f32_arg(dscale.unwrap_or(0.0)),
                n as u64,
            ],
        );
    }
}

impl OptimOps for Cuda {
    fn grad_norm_squared(&self, out: &mut CudaBuf, index: usize, grads: &CudaBuf) {
        assert!(!out.bf16, "statistics buffers are f32");
        self.timed("grad_norm", || {
            self.reduce_into(out.ptr(), index, View::whole(grads), true, 1.0, false)
        });
    }

    fn adamw_step(
        &self,
        params: &mut CudaBuf,
        grads: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        norm_sq: &CudaBuf,
        norm_index: usize,
        hp: AdamW,
    ) {
        let shadow = params
            .shadow
            .get_mut()
            .expect("shadow lock")
            .as_ref()
            .map_or(0, |s| s.ptr);
        self.adamw_raw(
            (View::whole(params), shadow),
            View::whole(grads),
            (View::whole(m), View::whole(v)),
            (norm_sq, norm_index),
            hp,
        );
    }
}
