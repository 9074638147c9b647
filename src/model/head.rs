//! The top of the transformer, forward and backward: the final norm, the
//! rows that get logits (sparse prediction) and the optional head transform.
//! The tied or untied decoder and the loss are `logits.rs`.

use super::activations::{Activations, NormStats};
use super::{DeviceBatch, Model};
use crate::backend::{Activation, Backend, MatmulShape};

impl Model {
    /// Applies the final norm, when the model has one, to the last residual.
    pub(super) fn final_norm_forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
    ) {
        if let Some(norm) = self.layout.final_norm {
            let s = &mut acts.final_stats;
            be.norm_forward(
                &mut acts.final_out,
                &mut s.mean,
                &mut s.rstd,
                &acts.resid[2 * self.cfg.layers],
                params,
                norm,
                self.cfg.hidden,
            );
        }
    }

    /// The hidden states entering a head: the final norm's output or the last residual.
    pub(super) fn hidden<'a, B: Backend>(&self, acts: &'a Activations<B>) -> &'a B::Buf {
        match self.layout.final_norm {
            Some(_) => &acts.final_out,
            None => &acts.resid[2 * self.cfg.layers],
        }
    }

    /// `d_resid` = the gradient of the last residual, from `d_hidden`, the
    /// gradient of the hidden states (through the final norm when there is
    /// one); `d_copy` the same in the activation type (see
    /// [`Activations::d_resid_copy`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn final_norm_backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        (d_resid, d_copy): (&mut B::Buf, Option<&mut B::Buf>),
        d_hidden: &B::Buf,
        last: &B::Buf,
        stats: &NormStats<B>,
    ) {
        match self.layout.final_norm {
            Some(norm) => {
                be.zero(d_resid);
                let io = (d_hidden, last, params);
                let width = self.cfg.hidden;
                super::transformer::norm_backward_to_copy(
                    be,
                    (d_resid, d_copy),
                    grads,
                    io,
                    stats,
                    norm,
                    width,
                );
            }
            None => {
                be.copy(d_resid, d_hidden);
                // Only a pre-LN block's output projection reads the copy.
                if let Some(copy) = d_copy.filter(|_| super::layout::is_pre_norm(&self.cfg)) {
                    be.copy(copy, d_hidden);
                }
            }
        }
    }

    /// The language-model head over the hidden states up to the decoder's
    /// input: the predicted rows, the optional transform. The decoder and
    /// the loss follow in [`Model::decoder_loss`], in row chunks.
    pub(super) fn head_forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
    ) {
        let c = self.cfg.hidden;
        let lay = &self.layout;
        let hidden = match lay.final_norm {
            Some(_) => &acts.final_out,
            None => &acts.resid[2 * self.cfg.layers],
        };
        let h = &mut acts.head;
        let rows: &B::Buf = match &batch.predict {
            Some(idx) => {
                be.gather_rows_forward(&mut h.gathered, hidden, idx, c);
                &h.gathered
            }
            None => hidden,
        };
        let m = batch.predicted;
        if let Some((linear, norm)) = lay.head_transform {
            be.matmul_forward(
                &mut h.transform_pre,
                rows,
                params,
                linear,
                MatmulShape { m, k: c, n: c },
            );
            be.activation_forward(&mut h.transform_act, &h.transform_pre, Activation::Gelu);
            let s = &mut h.transform_stats;
            be.norm_forward(
                &mut h.transform_out,
                &mut s.mean,
                &mut s.rstd,
                &h.transform_act,
                params,
                norm,
                c,
            );
        }
    }

    pub(super) fn head_backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
    ) {
        let c = self.cfg.hidden;
        let lay = &self.layout;
        let m = batch.predicted;
        let last = &acts.resid[2 * self.cfg.layers];
        let hidden: &B::Buf = if lay.final_norm.is_some() {
            &acts.final_out
        } else {
            last
        };
        let h = &mut acts.head;
        let rows: &B::Buf = if batch.predict.is_some() {
            &h.gathered
        } else {
            hidden
        };
        // `h.d_hidden`, the gradient of the decoder's input, was made with
        // the loss (`decoder_loss`), chunk by chunk.
        let d_rows: &B::Buf = match lay.head_transform {
            Some((linear, norm)) => {
                be.zero(&mut h.d_transform_act);
                let s = &h.transform_stats;
                let (da, dh) = (&mut h.d_transform_act, &h.d_hidden);
                be.norm_backward(
                    da,
                    grads,
                    dh,
                    &h.transform_act,
                    params,
                    &s.mean,
                    &s.rstd,
                    norm,
                    c,
                );
                be.activation_backward(
                    &mut h.d_transform_pre,
                    &h.d_transform_act,
                    &h.transform_pre,
                    Activation::Gelu,
                );
                let mm = MatmulShape { m, k: c, n: c };
                be.matmul_backward(
                    Some(&mut h.d_gathered),
                    false,
                    grads,
                    &h.d_transform_pre,
                    rows,
                    params,
                    linear,
                    mm,
                );
                &h.d_gathered
            }
            None => &h.d_hidden,
        };
        let d_hidden: &B::Buf = match &batch.predict {
            Some(idx) => {
                be.gather_rows_backward(&mut acts.d_hidden, d_rows, idx, c);
                &acts.d_hidden
            }
            None => d_rows,
        };
        self.final_norm_backward(
            be,
            params,
            grads,
            (&mut acts.d_resid, acts.d_resid_copy.as_mut()),
            d_hidden,
            last,
            &acts.final_stats,
        );
    }
}
