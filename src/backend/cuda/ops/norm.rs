//! LayerNorm and RMSNorm over the last dimension (kernels in
//! `kernels/norm.cu`).

use super::ROW_BLOCK;
use crate::backend::cuda::{assert_vector_aligned, f32_arg, Cuda, CudaBuf};
use crate::backend::{Device, Linear, MatmulOps, MatmulShape, Norm, NormKind, NormOps};

/// Warps per block of `norm_backward`, and the shared memory it may use
/// (set as the kernel's limit at start-up): 2·cols floats per warp.
pub(in crate::backend::cuda) const NORM_BACKWARD_WARPS: usize = 4;
pub(in crate::backend::cuda) const NORM_BACKWARD_SHARED: usize = 64 * 1024;

/// `norm_backward_N`: the backward for rows of exactly 256·N columns, N = 1..=4.
const ROW_KERNELS: [&str; 4] = [
    "norm_backward_1",
    "norm_backward_2",
    "norm_backward_3",
    "norm_backward_4",
];

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
        self.launch_norm_forward((out, mean, rstd), inp, params, norm, cols, None);
    }

    /// Under `CRAM_FP8` (`fp8.normed`) and where the product fits FP8, the
    /// norm writes the product's E4M3 input beside its bf16 output.
    fn norm_matmul_forward(
        &self,
        out: &mut CudaBuf,
        (norm_out, mean, rstd): (&mut CudaBuf, &mut CudaBuf, &mut CudaBuf),
        x: &CudaBuf,
        params: &CudaBuf,
        norm: Norm,
        layer: Linear,
        shape: MatmulShape,
    ) {
        if !(self.fp8.normed && self.fp8_fits(out, norm_out, params, layer, shape)) {
            self.norm_forward(norm_out, mean, rstd, x, params, norm, shape.k);
            self.matmul_forward(out, norm_out, params, layer, shape);
            return;
        }
        let q = self.fp8_input(shape.m * shape.k);
        let stats = (&*norm_out, &*mean, &*rstd);
        self.launch_norm_forward(stats, x, params, norm, shape.k, Some(q));
        self.project_fp8(out, (out.ptr(), 0.0), q, params, layer, shape);
        self.add_layer_bias(out, params, layer, shape);
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
        let io = (&*dinp, 0, dout, inp);
        self.launch_norm_backward(io, grads, params, (mean, rstd), norm, cols);
    }

    fn norm_backward_copy(
        &self,
        (dinp, copy): (&mut CudaBuf, &mut CudaBuf),
        grads: &mut CudaBuf,
        dout: &CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        (mean, rstd): (&CudaBuf, &CudaBuf),
        norm: Norm,
        cols: usize,
    ) {
        assert_eq!(copy.len, dinp.len, "norm_backward_copy: the copy's length");
        if !copy.bf16 {
            self.norm_backward(dinp, grads, dout, inp, params, mean, rstd, norm, cols);
            self.copy(copy, dinp);
            return;
        }
        copy.invalidate_shadow();
        let io = (&*dinp, copy.ptr(), dout, inp);
        self.launch_norm_backward(io, grads, params, (mean, rstd), norm, cols);
    }
}

impl Cuda {
    /// The norm's backward into `dinp` (f32 or bf16) and, where `copy` is
    /// not 0, the same values in bf16 at `copy` (`norm_backward_copy`).
    fn launch_norm_backward(
        &self,
        (dinp, copy, dout, inp): (&CudaBuf, u64, &CudaBuf, &CudaBuf),
        grads: &CudaBuf,
        params: &CudaBuf,
        (mean, rstd): (&CudaBuf, &CudaBuf),
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
        let threads = 32 * NORM_BACKWARD_WARPS as u32;
        // Rows of 256·N columns (N ≤ 4) have a kernel that holds the row in
        // registers (`norm_backward_rows`): as many blocks as are resident.
        // The general kernel: eight blocks per SM (as many as shared memory
        // allows for BERT widths). Every warp walks several rows.
        let (kernel, blocks) = match ROW_KERNELS.get((cols / 256).wrapping_sub(1)) {
            Some(&name) if cols.is_multiple_of(256) => (
                name,
                self.resident_grid(
                    name,
                    threads,
                    shared as u32,
                    rows.div_ceil(NORM_BACKWARD_WARPS),
                ),
            ),
            _ => (
                "norm_backward",
                (self.sm_count as usize * 8).min(rows.div_ceil(NORM_BACKWARD_WARPS).max(1)) as u32,
            ),
        };
        if cols.is_multiple_of(4) {
            assert_vector_aligned("norm_backward", &[dinp.ptr(), dout.ptr(), inp.ptr(), copy]);
        }
        self.timed("norm_backward", || {
            self.launch(
                kernel,
                blocks,
                threads,
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
                    copy,
                ],
            )
        });
    }

    /// The norm's forward; `fp8`, when given, is where its output's E4M3
    /// copy and that copy's descale go (`fp8_norm_scale` in the kernel).
    fn launch_norm_forward(
        &self,
        (out, mean, rstd): (&CudaBuf, &CudaBuf, &CudaBuf),
        inp: &CudaBuf,
        params: &CudaBuf,
        norm: Norm,
        cols: usize,
        fp8: Option<(u64, u64)>,
    ) {
        let rows = inp.len / cols;
        assert!(!mean.bf16 && !rstd.bf16, "norm statistics are f32");
        if cols.is_multiple_of(4) {
            assert_vector_aligned("norm_forward", &[out.ptr(), inp.ptr()]);
        }
        let (q, q_descale) = fp8.unwrap_or((0, 0));
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
                    q,
                    q_descale,
                ],
            )
        });
    }
}
