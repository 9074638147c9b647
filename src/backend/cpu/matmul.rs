//! Dense layers through the `gemm` crate: `out = inp · Wᵀ (+ b)` with `W`
//! stored `[out, in]`. The backward computes `dinp (=|+=) dout · W`,
//! `dW += doutᵀ · inp` and `db += Σ_rows dout`. gemm splits the output into
//! tiles per thread and walks the inner dimension in order, so its results
//! do not depend on scheduling; the bias sums use fixed row blocks.

use gemm::Parallelism;

use super::{add_into, sum_row_blocks, Cpu};
use crate::backend::fp8::{self, fp8_shape};
use crate::backend::{product_then_sum, Linear, MatmulOps, MatmulShape};

/// A matrix operand for gemm: element `(i, j)` is
/// `data[i·row_stride + j·col_stride]`. A transpose swaps the strides, and a
/// block of columns of a wider matrix is a slice with a larger row stride.
#[derive(Clone, Copy)]
pub(super) struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// Rows `row_stride` apart with contiguous columns.
    pub(super) fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Operand {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    pub(super) fn t(self) -> Self {
        Operand {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether a `rows × cols` matrix fits in `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst[m, n] (=|+=) scale · lhs[m, k] · rhs[k, n]`, with `dst` row-major.
pub(super) fn gemm(
    dst: &mut [f32],
    accumulate: bool,
    scale: f32,
    lhs: Operand,
    rhs: Operand,
    (m, k, n): (usize, usize, usize),
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n, "gemm output too small");
    assert!(lhs.fits(m, k), "gemm left operand too small");
    assert!(rhs.fits(k, n), "gemm right operand too small");
    // SAFETY: the asserts keep every element gemm reads or writes inside the
    // slices, and `dst`, borrowed mutably, cannot alias `lhs` or `rhs`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The layer's bias, if it has one.
fn layer_bias(params: &[f32], layer: Linear) -> Option<&[f32]> {
    layer.bias.map(|b| &params[b.range()])
}

impl Cpu {
    /// `out = x · wᵀ (+ bias)`, with `w` the layer's weight or its
    /// FP8-rounded copy.
    fn project(
        &self,
        out: &mut [f32],
        x: &[f32],
        (w, bias): (&[f32], Option<&[f32]>),
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        let out = &mut out[..m * n];
        if let Some(bias) = bias {
            for row in out.chunks_mut(n) {
                row.copy_from_slice(bias);
            }
        }
        gemm(
            out,
            bias.is_some(),
            1.0,
            Operand::rows(x, k),
            Operand::rows(w, k).t(),
            (m, k, n),
            self.parallelism(),
        );
    }

    /// [`project`](Self::project) as the GPU's FP8 product computes it:
    /// `x` already rounded to E4M3 (and scaled back), the weight rounded by
    /// its own largest magnitude, the products summed in f32.
    pub(super) fn project_e4m3(
        &self,
        out: &mut [f32],
        x: &[f32],
        params: &[f32],
        layer: Linear,
        shape: MatmulShape,
    ) {
        let w = fp8::round_e4m3_by_amax(&params[layer.weight.range()]);
        self.project(out, x, (&w, layer_bias(params, layer)), shape);
    }

    /// gemm's parallelism for one large product over the whole pool.
    fn parallelism(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }
}

impl MatmulOps for Cpu {
    fn matmul_forward(
        &self,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        params: &Vec<f32>,
        layer: Linear,
        shape: MatmulShape,
    ) {
        if self.fp8.cast && fp8_shape(shape) {
            let x = fp8::round_e4m3_by_amax(&inp[..shape.m * shape.k]);
            self.project_e4m3(out, &x, params, layer, shape);
        } else {
            let w = &params[layer.weight.range()];
            self.project(out, inp, (w, layer_bias(params, layer)), shape);
        }
    }

    fn matmul_forward_add(
        &self,
        out: &mut Vec<f32>,
        resid: &Vec<f32>,
        tmp: &mut Vec<f32>,
        inp: &Vec<f32>,
        params: &Vec<f32>,
        layer: Linear,
        shape: MatmulShape,
    ) {
        product_then_sum(self, out, resid, tmp, inp, params, layer, shape);
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut Vec<f32>>,
        accumulate: bool,
        grads: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        params: &Vec<f32>,
        layer: Linear,
        shape: MatmulShape,
    ) {
        let MatmulShape { m, k, n } = shape;
        if let Some(dinp) = dinp {
            let weight = &params[layer.weight.range()];
            gemm(
                dinp,
                accumulate,
                1.0,
                Operand::rows(dout, n),
                Operand::rows(weight, k),
                (m, n, k),
                self.parallelism(),
            );
        }
        gemm(
            &mut grads[layer.weight.range()],
            true,
            1.0,
            Operand::rows(dout, n).t(),
            Operand::rows(inp, k),
            (n, m, k),
            self.parallelism(),
        );
        if let Some(bias) = layer.bias {
            let mut dbias = vec![0f32; n];
            sum_row_blocks(&mut dbias, m, n, |block, partial| {
                for r in block {
                    add_into(partial, &dout[r * n..(r + 1) * n]);
                }
            });
            add_into(&mut grads[bias.range()], &dbias);
        }
    }
}
