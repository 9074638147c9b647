//! FP8 copies of matmul operands (`kernels/fp8.cu`) and the FP8 forward of
//! a linear layer (`CRAM_FP8=forward`, a comparison switch until it is
//! measured faster at equal loss). One scale per tensor, from the tensor's
//! own largest magnitude ("current scaling"): an amax pass, then the cast.
//! Weights are cast once after each change of the parameters (the copies
//! live with the parameter buffer, `CudaBuf::fp8`); inputs every call.

use crate::backend::cuda::blas::{Dims, Fp8, Fp8Operand};
use crate::backend::cuda::memory::Fp8Copy;
use crate::backend::cuda::{vector_aligned, Cuda, CudaBuf};
use crate::backend::fp8::fp8_shape;
use crate::backend::{Linear, MatmulShape};

/// Threads a block of the cast kernels, and the most blocks of the amax
/// pass (its partial maxima are reduced again by every cast block).
const CAST_BLOCK: u32 = 256;
const MAX_PARTS: usize = 1024;

impl Cuda {
    /// Whether `out = inp · Wᵀ (+ resid)` of `shape` runs in FP8: asked for,
    /// a GPU with FP8 tensor cores, bf16 output, a shape that `fp8_shape`
    /// (the rule both backends share) takes, and input and weights that the
    /// casts can read 16 bytes at a time (a layout whose weight starts at an
    /// offset that is not a multiple of four stays in bf16 rather than
    /// failing).
    pub(super) fn fp8_forward_for(
        &self,
        out: &CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) -> bool {
        self.fp8_forward
            && out.bf16
            && fp8_shape(shape)
            && vector_aligned(&[inp.ptr(), params.at(layer.weight.offset)])
    }

    /// `out = inp · Wᵀ + beta · c` in FP8 (E4M3 input and weight, bf16 out).
    pub(super) fn project_fp8(
        &self,
        out: &CudaBuf,
        (c, beta): (u64, f32),
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        let x = self.scratch("fp8_input", m * k + 16);
        let x_descale = x + (m * k) as u64;
        self.cast_fp8(x, x_descale, inp.ptr(), inp.bf16, m * k, Fp8::E4M3);
        let (w, w_descale) = self.fp8_weight(params, layer.weight.offset, n * k);
        self.timed("matmul_forward", || {
            self.blas.gemm_fp8(
                Dims::plain(m, n, k),
                (
                    Fp8Operand {
                        ptr: x,
                        format: Fp8::E4M3,
                        descale: x_descale,
                    },
                    Fp8Operand {
                        ptr: w,
                        format: Fp8::E4M3,
                        descale: w_descale,
                    },
                ),
                c,
                out.ptr(),
                beta,
            )
        });
    }

    /// The E4M3 copy of the `len` weights at `offset` of `params` (and its
    /// descale pointer), cast again when the parameters changed since.
    fn fp8_weight(&self, params: &CudaBuf, offset: usize, len: usize) -> (u64, u64) {
        let mut copies = super::super::locked(&params.fp8);
        let copy = copies.entry(offset).or_insert_with(|| Fp8Copy {
            mem: self.allocate(len + 16),
            fresh: false,
        });
        let (ptr, descale) = (copy.mem.ptr, copy.mem.ptr + len as u64);
        if !copy.fresh {
            self.cast_fp8(ptr, descale, params.at(offset), params.bf16, len, Fp8::E4M3);
            copy.fresh = true;
        }
        (ptr, descale)
    }

    /// `dst[i] = fp8(src[i] · s)` with s putting max |src| on the format's
    /// largest value; `1/s` lands at `descale`. `n` is a multiple of 8 and
    /// `src` 16-byte aligned.
    fn cast_fp8(&self, dst: u64, descale: u64, src: u64, src_bf16: bool, n: usize, format: Fp8) {
        assert!(
            n.is_multiple_of(8) && vector_aligned(&[src, dst]),
            "FP8 casts take 16-byte aligned buffers of a multiple of 8 values"
        );
        let groups = n / 8;
        let blocks = groups.div_ceil(CAST_BLOCK as usize).max(1);
        let parts = blocks.min(MAX_PARTS);
        let partials = self.scratch("fp8_partials", 4 * MAX_PARTS);
        let (bf, fmt) = (src_bf16 as u64, (format == Fp8::E5M2) as u64);
        self.timed("fp8_cast", || {
            self.launch(
                "fp8_amax_partials",
                parts as u32,
                CAST_BLOCK,
                0,
                &[partials, src, bf, n as u64],
            );
            self.launch(
                "fp8_cast",
                blocks.min(self.sm_count as usize * 8) as u32,
                CAST_BLOCK,
                0,
                &[dst, src, bf, n as u64, partials, parts as u64, descale, fmt],
            );
        });
    }
}
