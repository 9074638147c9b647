//! Linear layers: cuBLASLt products on the bf16 weight copy, plus the bias
//! kernels `add_bias` and `bias_backward` (in `kernels/elementwise.cu`).

use crate::backend::cuda::blas::{Dims, RowMajor};
use crate::backend::cuda::{Cuda, CudaBuf};
use crate::backend::{product_then_sum, Linear, MatmulOps, MatmulShape, Span};

impl MatmulOps for Cuda {
    fn matmul_forward(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        self.project(out, None, inp, params, layer, shape);
    }

    fn matmul_forward_add(
        &self,
        out: &mut CudaBuf,
        resid: &CudaBuf,
        tmp: &mut CudaBuf,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        if out.bf16 != resid.bf16 || resid.len < shape.m * shape.n {
            // cuBLASLt's C and D share one type: a mixed sum takes two passes.
            product_then_sum(self, out, resid, tmp, inp, params, layer, shape);
            return;
        }
        self.project(out, Some(resid), inp, params, layer, shape);
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

impl Cuda {
    /// `out = inp · Wᵀ (+ resid) (+ b)`: cuBLASLt's epilogue adds `resid`
    /// (C, with D = out) when there is one. In FP8 under `CRAM_FP8=forward`
    /// where `fp8_fits` says so (`ops/fp8.rs`).
    fn project(
        &self,
        out: &CudaBuf,
        resid: Option<&CudaBuf>,
        inp: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        let (c, beta) = resid.map_or((out.ptr(), 0.0), |r| (r.ptr(), 1.0));
        if self.fp8.cast && self.fp8_fits(out, inp, params, layer, shape) {
            let x = self.cast_input_fp8(inp, m * k);
            self.project_fp8(out, (c, beta), x, params, layer, shape);
        } else {
            self.timed("matmul_forward", || {
                let x = self.as_bf16(inp, "cast_inp");
                let w = self.bf16_ptr(params) + 2 * layer.weight.offset as u64;
                self.blas.gemm_from(
                    RowMajor::ABt,
                    Dims::plain(m, n, k),
                    (x, w),
                    c,
                    (out.ptr(), out.bf16),
                    1.0,
                    beta,
                );
            });
        }
        self.add_layer_bias(out, params, layer, shape);
    }

    /// `out += b` when the layer has a bias.
    pub(super) fn add_layer_bias(
        &self,
        out: &CudaBuf,
        params: &CudaBuf,
        layer: Linear,
        shape: MatmulShape,
    ) {
        if let Some(bias) = layer.bias {
            let (m, n) = (shape.m, shape.n);
            self.timed("matmul_forward", || self.add_bias(out, params, bias, m, n));
        }
    }

    /// `out[r, ·] += b` over the `m` rows of an `[m, n]` product.
    fn add_bias(&self, out: &CudaBuf, params: &CudaBuf, bias: Span, m: usize, n: usize) {
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
}
