//! Row gathers and the losses: cross-entropy (with top-1 hits) and mean
//! squared error (kernels in `kernels/loss.cu`).

use crate::backend::cuda::{f32_arg, vector_aligned, Cuda, CudaBuf, CudaIds};
use crate::backend::{Device, LossOps};

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
        // Values per access (`cross_entropy` in kernels/loss.cu).
        let aligned = vector_aligned(&[logits.ptr()]);
        let width = [8, 4]
            .into_iter()
            .find(|&w| aligned && vocab.is_multiple_of(w))
            .unwrap_or(1);
        // A bf16 row that fits the block's registers is read once
        // (`cross_entropy_held`).
        if logits.bf16 && width == 8 && vocab <= Self::CE_HELD_VOCAB {
            self.timed("cross_entropy", || {
                self.launch(
                    "cross_entropy_held",
                    rows as u32,
                    512,
                    0,
                    &[
                        losses.ptr(),
                        logits.ptr(),
                        targets.ptr(),
                        vocab as u64,
                        dscale.is_some() as u64,
                        f32_arg(dscale.unwrap_or(0.0)),
                    ],
                )
            });
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
                    width as u64,
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
    /// The widest vocabulary `cross_entropy_held` keeps in registers:
    /// CE_HELD_CHUNKS (8) pieces of 8 values for each of 512 threads.
    const CE_HELD_VOCAB: usize = 8 * 8 * 512;

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
