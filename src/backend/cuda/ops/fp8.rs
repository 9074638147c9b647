//! FP8 copies of matmul operands (`kernels/fp8.cu`) and the FP8 forward of
//! a linear layer (`CRAM_FP8`, comparison switches until measured faster at
//! equal loss). One scale per tensor. A product whose input a norm writes
//! (`norm_matmul_forward`: the blocks' QKV and up projections) gets the
//! E4M3 copy from the norm kernel itself, scaled by a bound that the norm's
//! parameters give (`fp8_norm_scale` in `kernels/norm.cu`), so no pass over
//! the input; any other input (the decoder's, `CRAM_FP8=forward`) is cast
//! by its own largest magnitude ("current scaling"): an amax pass, then the
//! cast. Weights are cast once after each change of the parameters (the
//! copies live with the parameter buffer, `CudaBuf::fp8`).

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
    /// Whether `out = inp · Wᵀ (+ resid)` of `shape` can run in FP8 (the
    /// caller checks its switch): bf16 output, a shape that `fp8_shape`
    /// takes (the rule both backends share), and input and weights that
    /// the casts can read 16 bytes at a time (a layout whose weight starts
    /// at an offset that is not a multiple of four stays in bf16 rather
    /// than failing).
    pub(super) fn fp8_fits(
        &self,
        out: &CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) -> bool {
        out.bf16 && fp8_shape(shape) && vector_aligned(&[inp.ptr(), params.at(layer.weight.offset)])
    }

    /// Scratch for the E4M3 input of an `m·k` product and, after it, its
    /// descale (one buffer: each product's input is consumed before the
    /// next one's is written, in stream order).
    pub(super) fn fp8_input(&self, len: usize) -> (u64, u64) {
        let x = self.scratch("fp8_input", len + 16);
        (x, x + len as u64)
    }

    /// The E4M3 copy of `inp` by its own largest magnitude.
    pub(super) fn cast_input_fp8(&self, inp: &CudaBuf, len: usize) -> (u64, u64) {
        let (x, descale) = self.fp8_input(len);
        self.cast_fp8(x, descale, inp.ptr(), inp.bf16, len, Fp8::E4M3);
        (x, descale)
    }

    /// `out = x · Wᵀ + beta · c` in FP8: `x` the E4M3 input and its descale
    /// pointer, the weight's E4M3 copy, bf16 out.
    pub(super) fn project_fp8(
        &self,
        out: &CudaBuf,
        (c, beta): (u64, f32),
        (x, x_descale): (u64, u64),
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
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
