//! Dense layers through the `gemm` crate: `out = inp · Wᵀ (+ b)` with `W`
//! stored `[out, in]`. The backward computes `dinp (=|+=) dout · W`,
//! `dW += doutᵀ · inp` and `db += Σ_rows dout`. gemm splits the output into
//! tiles per thread and walks the inner dimension in order, so its results
//! do not depend on scheduling; the bias sums use fixed row blocks.

use gemm::{gemm, Parallelism};

use super::{add_into, sum_row_blocks, Cpu};
use crate::backend::{Linear, MatmulOps, MatmulShape};

/// A row-major matrix view for gemm: element `(i, j)` is at
/// `ptr + i·row_stride + j·col_stride`. A transpose swaps the strides.
#[derive(Clone, Copy)]
struct View {
    row_stride: isize,
    col_stride: isize,
}

impl View {
    fn row_major(cols: usize) -> Self {
        View {
            row_stride: cols as isize,
            col_stride: 1,
        }
    }
    fn transposed(self) -> Self {
        View {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl Cpu {
    /// `dst[m, n] (=|+=) lhs[m, k] · rhs[k, n]` for the given views.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        dst: &mut [f32],
        accumulate: bool,
        lhs: &[f32],
        lhs_view: View,
        rhs: &[f32],
        rhs_view: View,
        (m, k, n): (usize, usize, usize),
    ) {
        let extent = |v: View, rows: usize, cols: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * v.row_stride as usize + (cols - 1) * v.col_stride as usize + 1
            }
        };
        assert!(dst.len() >= m * n, "matmul output too small");
        assert!(
            lhs.len() >= extent(lhs_view, m, k),
            "matmul input too small"
        );
        assert!(
            rhs.len() >= extent(rhs_view, k, n),
            "matmul weight too small"
        );
        // SAFETY: the asserts above keep every element gemm touches inside the
        // slices; `dst` is borrowed mutably and does not alias `lhs` or `rhs`.
        unsafe {
            gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                lhs.as_ptr(),
                lhs_view.col_stride,
                lhs_view.row_stride,
                rhs.as_ptr(),
                rhs_view.col_stride,
                rhs_view.row_stride,
                1.0,
                1.0,
                false,
                false,
                false,
                self.parallelism(),
            );
        }
    }

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
        let MatmulShape { m, k, n } = shape;
        let out = &mut out[..m * n];
        if let Some(bias) = layer.bias {
            let bias = &params[bias.range()];
            for row in out.chunks_mut(n) {
                row.copy_from_slice(bias);
            }
        }
        let weight = &params[layer.weight.range()];
        self.gemm(
            out,
            layer.bias.is_some(),
            inp,
            View::row_major(k),
            weight,
            View::row_major(k).transposed(),
            (m, k, n),
        );
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
            self.gemm(
                dinp,
                accumulate,
                dout,
                View::row_major(n),
                weight,
                View::row_major(k),
                (m, n, k),
            );
        }
        self.gemm(
            &mut grads[layer.weight.range()],
            true,
            dout,
            View::row_major(n).transposed(),
            inp,
            View::row_major(k),
            (n, m, k),
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
