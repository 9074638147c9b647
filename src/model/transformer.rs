//! Forward and backward of the transformer, layer by layer over Backend ops.
//! Pre-LN and post-LN blocks, every FFN kind and position scheme are config
//! switches here, not copies of the model.

use super::activations::{Activations, BlockActs, NormStats};
use super::layout::{is_pre_norm, BlockParams};
use super::logits::LossPass;
use super::{DeviceBatch, GradSync, Model, NoSync};
use crate::backend::{Activation, Backend, Linear, MatmulShape, Norm};
use crate::config::{FfnKind, Positions};

/// Which dropout site a mask belongs to, mixed into the seed.
#[derive(Clone, Copy)]
pub(super) enum Site {
    Embedding,
    Attention(usize),
    Ffn(usize),
}

pub(super) fn site_seed(base: u64, site: Site) -> u64 {
    let k = match site {
        Site::Embedding => 0,
        Site::Attention(l) => 2 * l as u64 + 1,
        Site::Ffn(l) => 2 * l as u64 + 2,
    };
    base ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

impl Model {
    pub(super) fn dropout(&self, train: bool) -> f32 {
        if train {
            self.cfg.dropout
        } else {
            0.0
        }
    }

    fn ffn_activation(&self) -> Activation {
        match self.cfg.ffn_kind {
            FfnKind::Gelu | FfnKind::GluGelu => Activation::Gelu,
            FfnKind::Swiglu => Activation::Silu,
        }
    }

    /// Forward to the logits of the predicted rows (left in `acts.head.logits`),
    /// every row's at once: `acts` must have been told
    /// [`Activations::set_logit_chunk_rows`]`(usize::MAX)` (inference on a
    /// few rows; training and evaluation use [`Model::forward_loss`]).
    /// `dropout_seed` picks the dropout masks when `train` is set.
    pub fn forward_logits<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        train: bool,
        dropout_seed: u64,
    ) {
        self.forward_head_input(be, params, acts, batch, train, dropout_seed);
        assert_eq!(
            acts.head.chunks.count, 1,
            "forward_logits keeps every row's logits: set_logit_chunk_rows(usize::MAX) first"
        );
        let shape = MatmulShape {
            m: batch.predicted,
            k: self.cfg.hidden,
            n: self.cfg.vocab_size,
        };
        let io = self.decoder_io(acts, batch);
        be.matmul_forward(io.logits, io.z, params, self.layout.decoder, shape);
    }

    /// The forward up to the decoder's input (the head's rows, transformed).
    fn forward_head_input<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        train: bool,
        dropout_seed: u64,
    ) {
        assert_eq!(
            (acts.batch, acts.seq),
            (batch.batch, batch.seq),
            "activations sized for another shape"
        );
        acts.dropout_seed = dropout_seed;
        acts.ensure_head_rows(be, &self.cfg, batch.predicted);
        self.embed_forward(be, params, acts, &batch.ids, train);
        for l in 0..self.cfg.layers {
            self.block_forward(be, params, acts, l, train);
        }
        self.final_norm_forward(be, params, acts);
        self.head_forward(be, params, acts, batch);
    }

    /// Forward to the final hidden states `[batch·seq, hidden]` (the final
    /// norm's output, or the last residual when the model has none), for heads
    /// other than the language-model head (GLUE classifiers). `ids` holds
    /// `acts.batch` sequences of `acts.seq` tokens.
    pub fn forward_hidden<'a, B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &'a mut Activations<B>,
        ids: &B::Ids,
        train: bool,
        dropout_seed: u64,
    ) -> &'a B::Buf {
        acts.dropout_seed = dropout_seed;
        self.embed_forward(be, params, acts, ids, train);
        for l in 0..self.cfg.layers {
            self.block_forward(be, params, acts, l, train);
        }
        self.final_norm_forward(be, params, acts);
        self.hidden(acts)
    }

    /// Backward from `acts.d_hidden`, the gradient of the hidden states that
    /// [`Model::forward_hidden`] returned; accumulates into `grads`.
    pub fn backward_hidden<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        ids: &B::Ids,
        train: bool,
    ) {
        self.final_norm_backward(
            be,
            params,
            grads,
            (&mut acts.d_resid, acts.d_resid_copy.as_mut()),
            &acts.d_hidden,
            &acts.resid[2 * self.cfg.layers],
            &acts.final_stats,
        );
        for l in (0..self.cfg.layers).rev() {
            self.block_backward(be, params, grads, acts, l, train);
        }
        self.embed_backward(be, params, grads, acts, ids, train);
    }

    /// Forward with the loss: per-row losses in `acts.head.losses`, and what
    /// `pass` asks for. [`LossPass::Gradients`] makes the decoder's
    /// gradients with the loss (the logits exist a chunk of rows at a time),
    /// ready for [`Model::backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_loss<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        train: bool,
        dropout_seed: u64,
        pass: LossPass<B>,
    ) {
        self.forward_head_input(be, params, acts, batch, train, dropout_seed);
        self.decoder_loss(be, params, acts, batch, pass);
    }

    /// Backward from the gradient of the decoder's input that `forward_loss`
    /// left with [`LossPass::Gradients`]; accumulates into `grads`.
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        train: bool,
    ) {
        self.backward_synced(be, params, grads, acts, batch, train, &mut NoSync);
    }

    /// [`Model::backward`], telling `sync` after each stage of
    /// [`Layout::grad_stages`](super::Layout::grad_stages) (head, blocks from
    /// the last, embeddings) that its gradient is complete.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_synced<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        batch: &DeviceBatch<B>,
        train: bool,
        sync: &mut dyn GradSync<B>,
    ) {
        self.head_backward(be, params, grads, acts, batch);
        sync.stage_done(be, grads, 0);
        for l in (0..self.cfg.layers).rev() {
            self.block_backward(be, params, grads, acts, l, train);
            sync.stage_done(be, grads, self.cfg.layers - l);
        }
        self.embed_backward(be, params, grads, acts, &batch.ids, train);
        sync.stage_done(be, grads, self.cfg.layers + 1);
    }

    /// `out = linear(inp)`, optionally dropped out, added to `resid` into `sum`.
    #[allow(clippy::too_many_arguments)]
    fn project_add<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        (tmp, tmp2): (&mut B::Buf, &mut B::Buf),
        sum: &mut B::Buf,
        resid: &B::Buf,
        inp: &B::Buf,
        layer: Linear,
        shape: MatmulShape,
        dropout: Option<(f32, u64)>,
    ) {
        match dropout {
            Some((p, seed)) => {
                be.matmul_forward(tmp, inp, params, layer, shape);
                be.dropout_forward(tmp2, tmp, p, seed);
                be.add(sum, resid, tmp2);
            }
            None => be.matmul_forward_add(sum, resid, tmp, inp, params, layer, shape),
        }
    }

    fn block_forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        l: usize,
        train: bool,
    ) {
        let c = self.cfg.hidden;
        let n = acts.rows();
        let bp: BlockParams = self.layout.blocks[l];
        let shape = self.attention_shape(acts.batch, acts.seq);
        let p = self.dropout(train);
        let drop = |site| (p > 0.0).then(|| (p, site_seed(acts.dropout_seed, site)));
        let (drop_attn, drop_ffn) = (drop(Site::Attention(l)), drop(Site::Ffn(l)));
        let pre = is_pre_norm(&self.cfg);
        let (lo, hi) = acts.resid.split_at_mut(2 * l + 1);
        let x = &lo[2 * l];
        let (mid, out) = hi.split_at_mut(1);
        let (mid, out) = (&mut mid[0], &mut out[0]);
        let a: &mut BlockActs<B> = &mut acts.blocks[l];
        let scratch = (&mut acts.tmp, &mut acts.tmp2);

        // Attention half.
        let norm = (bp.attn_norm, c);
        sublayer_input(
            be,
            pre,
            params,
            x,
            (&mut a.attn_norm_io, &mut a.attn_stats),
            bp.attn_norm,
            (&mut a.qkv, bp.qkv),
            MatmulShape {
                m: n,
                k: c,
                n: 3 * c,
            },
        );
        if self.cfg.positions == Positions::Rotary {
            be.rotary_forward(&mut a.qkv, shape, self.cfg.rope_theta);
        }
        be.attention_forward(&mut a.att, &mut a.att_saved, &a.qkv, shape);
        let cc = MatmulShape { m: n, k: c, n: c };
        self.sublayer_output(
            be,
            params,
            scratch,
            (mid, x),
            (&mut a.attn_norm_io, &mut a.attn_stats),
            (&a.att, bp.attn_out, cc, drop_attn),
            norm,
        );

        // Feed-forward half.
        let norm = (bp.ffn_norm, c);
        let f = self.cfg.ffn;
        let inner = self.cfg.ffn_inner();
        sublayer_input(
            be,
            pre,
            params,
            mid,
            (&mut a.ffn_norm_io, &mut a.ffn_stats),
            bp.ffn_norm,
            (&mut a.ffn_h, bp.ffn_in),
            MatmulShape { m: n, k: c, n: f },
        );
        match self.cfg.ffn_kind {
            FfnKind::Gelu => be.activation_forward(&mut a.ffn_g, &a.ffn_h, Activation::Gelu),
            _ => be.glu_forward(&mut a.ffn_g, &a.ffn_h, self.ffn_activation(), inner),
        }
        let down = MatmulShape {
            m: n,
            k: inner,
            n: c,
        };
        let scratch = (&mut acts.tmp, &mut acts.tmp2);
        self.sublayer_output(
            be,
            params,
            scratch,
            (out, mid),
            (&mut a.ffn_norm_io, &mut a.ffn_stats),
            (&a.ffn_g, bp.ffn_out, down, drop_ffn),
            norm,
        );
    }

    /// The end of a block half: `out = x + proj(branch)` (pre-LN), or
    /// `out = norm(x + proj(branch))` with the sum kept in `norm_io` for the
    /// backward (post-LN); dropout on the projection when given.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn sublayer_output<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        scratch: (&mut B::Buf, &mut B::Buf),
        (out, x): (&mut B::Buf, &B::Buf),
        (norm_io, stats): (&mut B::Buf, &mut NormStats<B>),
        (branch, proj, shape, dropout): (&B::Buf, Linear, MatmulShape, Option<(f32, u64)>),
        (norm, width): (Norm, usize),
    ) {
        if is_pre_norm(&self.cfg) {
            self.project_add(be, params, scratch, out, x, branch, proj, shape, dropout);
        } else {
            self.project_add(
                be, params, scratch, norm_io, x, branch, proj, shape, dropout,
            );
            be.norm_forward(
                out,
                &mut stats.mean,
                &mut stats.rstd,
                norm_io,
                params,
                norm,
                width,
            );
        }
    }

    fn block_backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        l: usize,
        train: bool,
    ) {
        let c = self.cfg.hidden;
        let n = acts.rows();
        let bp: BlockParams = self.layout.blocks[l];
        let shape = self.attention_shape(acts.batch, acts.seq);
        let p = self.dropout(train);
        let seed = acts.dropout_seed;
        let pre = is_pre_norm(&self.cfg);
        let x = &acts.resid[2 * l];
        let mid = &acts.resid[2 * l + 1];
        let a = &acts.blocks[l];
        let (d, mut d_copy) = (&mut acts.d_resid, acts.d_resid_copy.as_mut());
        let (d_sum, d_tmp) = (&mut acts.d_sum, &mut acts.d_tmp);
        let f = self.cfg.ffn;
        let inner = self.cfg.ffn_inner();

        // Feed-forward half: `d` holds the gradient of the block's output.
        let scratch = (&mut *d_sum, &mut *d_tmp);
        let post_norm = (!pre).then_some((bp.ffn_norm, &a.ffn_norm_io, &a.ffn_stats));
        let drop = (p > 0.0).then(|| (p, site_seed(seed, Site::Ffn(l))));
        let dc = d_copy.as_deref();
        let d_proj = projection_grad(be, params, grads, (d, dc), scratch, post_norm, drop, c);
        let down = MatmulShape {
            m: n,
            k: inner,
            n: c,
        };
        be.matmul_backward(
            Some(&mut acts.d_ffn_g),
            false,
            grads,
            d_proj,
            &a.ffn_g,
            params,
            bp.ffn_out,
            down,
        );
        match self.cfg.ffn_kind {
            FfnKind::Gelu => {
                be.activation_backward(&mut acts.d_ffn_h, &acts.d_ffn_g, &a.ffn_h, Activation::Gelu)
            }
            _ => be.glu_backward(
                &mut acts.d_ffn_h,
                &acts.d_ffn_g,
                &a.ffn_h,
                self.ffn_activation(),
                inner,
            ),
        }
        let up = MatmulShape { m: n, k: c, n: f };
        sublayer_input_backward(
            be,
            pre,
            (params, grads),
            (d, d_copy.as_deref_mut(), &mut acts.d_norm),
            (&acts.d_ffn_h, bp.ffn_in, up),
            (mid, &a.ffn_norm_io, &a.ffn_stats),
            (bp.ffn_norm, c),
        );

        // Attention half: `d` holds the gradient of `mid`.
        let scratch = (&mut *d_sum, &mut *d_tmp);
        let post_norm = (!pre).then_some((bp.attn_norm, &a.attn_norm_io, &a.attn_stats));
        let drop = (p > 0.0).then(|| (p, site_seed(seed, Site::Attention(l))));
        let dc = d_copy.as_deref();
        let d_proj = projection_grad(be, params, grads, (d, dc), scratch, post_norm, drop, c);
        let cc = MatmulShape { m: n, k: c, n: c };
        be.matmul_backward(
            Some(&mut acts.d_att),
            false,
            grads,
            d_proj,
            &a.att,
            params,
            bp.attn_out,
            cc,
        );
        let (d_qkv, d_att) = (&mut acts.d_qkv, &acts.d_att);
        if self.cfg.positions == Positions::Rotary {
            let theta = self.cfg.rope_theta;
            be.attention_backward_rotary(d_qkv, d_att, &a.att, &a.qkv, &a.att_saved, shape, theta);
        } else {
            be.attention_backward(d_qkv, d_att, &a.att, &a.qkv, &a.att_saved, shape);
        }
        let qkv = MatmulShape {
            m: n,
            k: c,
            n: 3 * c,
        };
        sublayer_input_backward(
            be,
            pre,
            (params, grads),
            (d, d_copy, &mut acts.d_norm),
            (&acts.d_qkv, bp.qkv, qkv),
            (x, &a.attn_norm_io, &a.attn_stats),
            (bp.attn_norm, c),
        );
    }
}

/// The backward of [`sublayer_input`] and the half's first projection,
/// given `d_branch`, the gradient of that projection's output. Pre-LN: the
/// projection's input gradient goes through the norm into `d`, the
/// residual-stream gradient (`d_norm` is scratch). Post-LN: it is added to
/// `d` directly.
#[allow(clippy::type_complexity)]
fn sublayer_input_backward<B: Backend>(
    be: &B,
    pre: bool,
    (params, grads): (&B::Buf, &mut B::Buf),
    (d, d_copy, d_norm): (&mut B::Buf, Option<&mut B::Buf>, &mut B::Buf),
    (d_branch, proj, shape): (&B::Buf, Linear, MatmulShape),
    (x, norm_io, stats): (&B::Buf, &B::Buf, &NormStats<B>),
    (norm, width): (Norm, usize),
) {
    if !pre {
        be.matmul_backward(Some(d), true, grads, d_branch, x, params, proj, shape);
        return;
    }
    be.matmul_backward(
        Some(d_norm),
        false,
        grads,
        d_branch,
        norm_io,
        params,
        proj,
        shape,
    );
    let io = (&*d_norm, x, params);
    norm_backward_to_copy(be, (d, d_copy), grads, io, stats, norm, width);
}

/// The norm backward into `d`, and into `d_copy` too where the model keeps
/// one ([`Activations::d_resid_copy`]).
pub(super) fn norm_backward_to_copy<B: Backend>(
    be: &B,
    (d, d_copy): (&mut B::Buf, Option<&mut B::Buf>),
    grads: &mut B::Buf,
    (dout, inp, params): (&B::Buf, &B::Buf, &B::Buf),
    stats: &NormStats<B>,
    norm: Norm,
    width: usize,
) {
    let (mean, rstd) = (&stats.mean, &stats.rstd);
    match d_copy {
        Some(copy) => be.norm_backward_copy(
            (d, copy),
            grads,
            dout,
            inp,
            params,
            (mean, rstd),
            norm,
            width,
        ),
        None => be.norm_backward(d, grads, dout, inp, params, mean, rstd, norm, width),
    }
}

/// The first projection of a block half, `out = proj(input)`, whose input
/// is `norm(x)`, written to `norm_io` with its statistics (pre-LN: one
/// [`NormOps::norm_matmul_forward`]), or `x` itself (post-LN normalises
/// after the sum).
#[allow(clippy::too_many_arguments)]
fn sublayer_input<B: Backend>(
    be: &B,
    pre: bool,
    params: &B::Buf,
    x: &B::Buf,
    (norm_io, stats): (&mut B::Buf, &mut NormStats<B>),
    norm: Norm,
    (out, proj): (&mut B::Buf, Linear),
    shape: MatmulShape,
) {
    if !pre {
        be.matmul_forward(out, x, params, proj, shape);
        return;
    }
    let stats = (norm_io, &mut stats.mean, &mut stats.rstd);
    be.norm_matmul_forward(out, stats, x, params, norm, proj, shape);
}

/// The gradient reaching a sub-layer's output projection from `d`, the
/// gradient of the residual stream after it (pre-LN without dropout:
/// `d_copy`, the same in the activation type). Post-LN (`post_norm` given):
/// back through `norm(residual + projection)`, whose input gradient also
/// flows on along the residual, so it is left in `d` too. Then back through
/// dropout when the sub-layer has it. Returns the buffer holding the result.
#[allow(clippy::too_many_arguments)]
fn projection_grad<'a, B: Backend>(
    be: &B,
    params: &B::Buf,
    grads: &mut B::Buf,
    (d, d_copy): (&'a mut B::Buf, Option<&'a B::Buf>),
    (d_sum, d_tmp): (&'a mut B::Buf, &'a mut B::Buf),
    post_norm: Option<(Norm, &B::Buf, &NormStats<B>)>,
    dropout: Option<(f32, u64)>,
    cols: usize,
) -> &'a B::Buf {
    let through_norm: &B::Buf = match post_norm {
        // Pre-LN without dropout: the product reads `d` as `d_copy`, which
        // the norm backward before wrote in the activation type, where
        // there is one.
        None if dropout.is_none() => return d_copy.unwrap_or(d),
        None => d,
        Some((norm, sum, s)) => {
            be.zero(d_sum);
            be.norm_backward(d_sum, grads, d, sum, params, &s.mean, &s.rstd, norm, cols);
            be.copy(d, d_sum);
            d_sum
        }
    };
    match dropout {
        Some((p, seed)) => {
            be.dropout_backward(d_tmp, through_norm, p, seed);
            d_tmp
        }
        None => through_norm,
    }
}
