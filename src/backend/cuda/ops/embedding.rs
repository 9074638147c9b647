//! Token embeddings, learned and sinusoidal position embeddings, and rotary
//! positions applied to q|k in place (kernels in `kernels/embedding.cu`).

use crate::backend::cuda::{f32_arg, vector_aligned, Cuda, CudaBuf, CudaIds};
use crate::backend::{AttentionShape, EmbeddingOps, Span};

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
            let (pe, per_seq) = self.sinusoid_table(seq, cols);
            let (threads, vec4, wide) = sinusoid_loop(x.ptr(), pe, per_seq, n);
            self.launch_each(
                "sinusoidal_positions_forward",
                threads,
                &[
                    x.ptr(),
                    x.bf(),
                    pe,
                    Self::f32_at(params, scale),
                    per_seq as u64,
                    n as u64,
                    vec4 as u64,
                    wide as u64,
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
            let (pe, per_seq) = self.sinusoid_table(seq, cols);
            let (threads, vec4, wide) = sinusoid_loop(dx.ptr(), pe, per_seq, n);
            let blocks = self.grid(threads).min(1024);
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
                    pe,
                    per_seq as u64,
                    n as u64,
                    vec4 as u64,
                    wide as u64,
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
    /// The sinusoid of the first `seq` positions, `[seq, cols]` f32 in
    /// scratch (`sinusoid_table`, kernels/embedding.cu), and its length.
    /// Rebuilt per call like the rotary table: seq·cols entries, a few
    /// microseconds.
    fn sinusoid_table(&self, seq: usize, cols: usize) -> (u64, usize) {
        let per_seq = seq * cols;
        let pe = self.scratch("sinusoid_table", per_seq * 4);
        self.launch_each("sinusoid_table", per_seq, &[pe, seq as u64, cols as u64]);
        (pe, per_seq)
    }

    /// The (cos, sin) table of `rotary_table` (kernels/embedding.cu) for
    /// `shape` and `theta`, in scratch. It is rebuilt per call:
    /// seq·head_dim/2 entries, a few microseconds, and no cache to keep in
    /// step with seq and theta.
    pub(super) fn rotary_table(&self, shape: AttentionShape, theta: f32) -> u64 {
        let table = self.scratch("rotary_table", shape.seq * shape.head_dim * 4);
        self.launch_each(
            "rotary_table",
            shape.seq * shape.head_dim / 2,
            &[
                table,
                shape.seq as u64,
                shape.head_dim as u64,
                f32_arg(theta),
            ],
        );
        table
    }

    fn rotary(&self, qkv: &mut CudaBuf, shape: AttentionShape, theta: f32, direction: f32) {
        assert!(
            shape.head_dim.is_multiple_of(2),
            "rotary positions need an even head_dim, got {}",
            shape.head_dim
        );
        let table = self.rotary_table(shape, theta);
        // The four-pair kernel takes its thread count last, the scalar one its rows.
        let n = shape.rows() * shape.hidden();
        let vec4 = shape.head_dim.is_multiple_of(8)
            && vector_aligned(&[qkv.ptr(), table])
            && u32::try_from(n / 4).is_ok();
        let (name, threads, last) = if vec4 {
            ("rotary4", n / 4, n / 4)
        } else {
            ("rotary", n, shape.rows())
        };
        self.launch_each(
            name,
            threads,
            &[
                qkv.ptr(),
                qkv.bf(),
                table,
                shape.seq as u64,
                shape.heads as u64,
                shape.head_dim as u64,
                f32_arg(direction),
                last as u64,
            ],
        );
    }
}

/// How the sinusoid kernels walk `n` elements of `x` whose positions repeat
/// every `per_seq`: four a thread where the period and both buffers allow
/// 16-byte accesses, and 64-bit indices only where `n` needs them. Returns
/// the thread count and the two flags.
fn sinusoid_loop(x: u64, pe: u64, per_seq: usize, n: usize) -> (usize, bool, bool) {
    let vec4 = per_seq.is_multiple_of(4) && n.is_multiple_of(4) && vector_aligned(&[x, pe]);
    let wide = i32::try_from(n).is_err();
    let threads = if vec4 { n / 4 } else { n };
    (threads, vec4, wide)
}
