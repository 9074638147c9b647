//! LayerNorm and RMSNorm over the last dimension. The forward saves `mean`
//! (zeros for RMSNorm) and `rstd` per row; the backward reads them, adds the
//! input gradient into `dinp` (the residual-stream exception to the `=` rule)
//! and accumulates the scale and shift gradients (`+=`) in row blocks of a
//! fixed size.

use rayon::prelude::*;

use super::{add_into, math, sum_row_blocks, Cpu};
use crate::backend::fp8::{self, fp8_shape};
use crate::backend::{Linear, MatmulOps, MatmulShape, Norm, NormKind, NormOps};

impl NormOps for Cpu {
    fn norm_forward(
        &self,
        out: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        inp: &Vec<f32>,
        params: &Vec<f32>,
        norm: Norm,
        cols: usize,
    ) {
        let rows = inp.len() / cols;
        let weight = &params[norm.weight.range()];
        let bias = norm.bias.map(|b| &params[b.range()]);
        out[..rows * cols]
            .par_chunks_mut(cols)
            .zip(inp.par_chunks(cols))
            .zip(mean[..rows].par_iter_mut().zip(rstd[..rows].par_iter_mut()))
            .for_each(|((y, x), (mu, rs))| {
                let (m, r) = row_statistics(x, norm.kind, norm.eps);
                *mu = m;
                *rs = r;
                for c in 0..cols {
                    y[c] = (x[c] - m) * r * weight[c] + bias.map_or(0.0, |b| b[c]);
                }
            });
    }

    /// Under `CRAM_FP8` (`normed`) and for a shape the GPU runs in FP8,
    /// the product takes the norm's output rounded to E4M3 by the bound
    /// that the norm's parameters give, as the GPU's norm kernel writes it.
    fn norm_matmul_forward(
        &self,
        out: &mut Vec<f32>,
        (norm_out, mean, rstd): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
        x: &Vec<f32>,
        params: &Vec<f32>,
        norm: Norm,
        layer: Linear,
        shape: MatmulShape,
    ) {
        self.norm_forward(norm_out, mean, rstd, x, params, norm, shape.k);
        if !(self.fp8.normed && fp8_shape(shape)) {
            self.matmul_forward(out, norm_out, params, layer, shape);
            return;
        }
        let bias = norm.bias.map(|b| &params[b.range()]);
        let scale = fp8::norm_output_scale(&params[norm.weight.range()], bias);
        let q = fp8::round_e4m3(&norm_out[..shape.m * shape.k], scale);
        self.project_e4m3(out, &q, params, layer, shape);
    }

    fn norm_backward(
        &self,
        dinp: &mut Vec<f32>,
        grads: &mut Vec<f32>,
        dout: &Vec<f32>,
        inp: &Vec<f32>,
        params: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        norm: Norm,
        cols: usize,
    ) {
        let rows = inp.len() / cols;
        let weight = &params[norm.weight.range()];
        let centred = norm.kind == NormKind::Layernorm;

        dinp[..rows * cols]
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, dx)| {
                let x = &inp[r * cols..(r + 1) * cols];
                let dy = &dout[r * cols..(r + 1) * cols];
                let (m, rs) = (mean[r], rstd[r]);
                // With xhat = (x - m)·rstd and g = dy·w, the input gradient is
                // rstd·(g - mean(g) - xhat·mean(g·xhat)); RMSNorm drops mean(g)
                // because its statistic does not depend on a shift.
                let mut sum_g = 0f32;
                let mut sum_gx = 0f32;
                for c in 0..cols {
                    let g = dy[c] * weight[c];
                    sum_g += g;
                    sum_gx += g * (x[c] - m) * rs;
                }
                let mean_g = if centred { sum_g / cols as f32 } else { 0.0 };
                let mean_gx = sum_gx / cols as f32;
                for c in 0..cols {
                    let xhat = (x[c] - m) * rs;
                    dx[c] += rs * (dy[c] * weight[c] - mean_g - xhat * mean_gx);
                }
            });

        // dw = Σ_rows dy·xhat and db = Σ_rows dy, packed as one [2·cols] partial.
        let mut dparams = vec![0f32; 2 * cols];
        sum_row_blocks(&mut dparams, rows, 2 * cols, |block, partial| {
            let (dw, db) = partial.split_at_mut(cols);
            for r in block {
                let x = &inp[r * cols..(r + 1) * cols];
                let dy = &dout[r * cols..(r + 1) * cols];
                let (m, rs) = (mean[r], rstd[r]);
                for c in 0..cols {
                    dw[c] += dy[c] * (x[c] - m) * rs;
                    db[c] += dy[c];
                }
            }
        });
        add_into(&mut grads[norm.weight.range()], &dparams[..cols]);
        if let Some(bias) = norm.bias {
            add_into(&mut grads[bias.range()], &dparams[cols..]);
        }
    }
}

/// `(mean, rstd)` of one row; RMSNorm's mean is 0 and its rstd is 1/rms.
fn row_statistics(x: &[f32], kind: NormKind, eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = match kind {
        NormKind::Layernorm => math::sum(x) / n,
        NormKind::Rmsnorm => 0.0,
    };
    let var = math::sum_by(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}
