//! The fine-tuning head, as in Cramming: the [CLS] row of the final hidden
//! states → dense → GELU → dropout → classifier, with one output per class
//! (or one score for regression).
//!
//! The pretrained model's flat buffer is fixed by `model::layout`, so the head
//! keeps its own small flat buffer (weights first, then biases, so AdamW's
//! `decay_len` split applies), with its own gradients and optimizer state.
//! Same accumulation rule as every op: parameter gradients `+=`, activation
//! gradients `=`; the backward writes the gradient of the whole hidden-state
//! buffer (zero off the [CLS] rows) for `Model::backward_hidden`.

use crate::backend::{Activation, Backend, Linear, MatmulShape, Span};
use crate::random::standard_normal;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct Head {
    pub hidden: usize,
    pub outputs: usize,
    /// Dropout on the pooled representation while training.
    pub dropout: f32,
    pub dense: Linear,
    pub classifier: Linear,
    pub len: usize,
    pub decay_len: usize,
}

/// What the head is trained to predict, on the device.
pub enum Targets<B: Backend> {
    /// A class id per row (cross-entropy).
    Classes(B::Ids),
    /// A score per row (squared error).
    Scores(B::Buf),
}

/// The head's activations and gradient scratch for `rows` sequences.
pub struct HeadActs<B: Backend> {
    pub rows: usize,
    cls: B::Buf,
    dense: B::Buf,
    act: B::Buf,
    dropped: B::Buf,
    /// The outputs `[rows, outputs]`; after [`Head::loss`] with a scale, their gradient.
    pub out: B::Buf,
    pub losses: B::Buf,
    d_pooled: B::Buf,
    d_act: B::Buf,
    d_dense: B::Buf,
    d_cls: B::Buf,
}

impl<B: Backend> HeadActs<B> {
    pub fn new(be: &B, head: &Head, rows: usize) -> Self {
        let rc = rows * head.hidden;
        HeadActs {
            rows,
            cls: be.alloc(rc),
            dense: be.alloc(rc),
            act: be.alloc(rc),
            dropped: be.alloc(rc),
            out: be.alloc(rows * head.outputs),
            losses: be.alloc(rows),
            d_pooled: be.alloc(rc),
            d_act: be.alloc(rc),
            d_dense: be.alloc(rc),
            d_cls: be.alloc(rc),
        }
    }
}

/// Seed of the head's dropout mask, apart from the backbone's sites.
fn dropout_seed(seed: u64) -> u64 {
    seed ^ 0x6A09_E667_F3BC_C909
}

impl Head {
    pub fn new(hidden: usize, outputs: usize, dropout: f32) -> Head {
        let (cc, kc) = (hidden * hidden, outputs * hidden);
        let span = |offset, len| Span { offset, len };
        Head {
            hidden,
            outputs,
            dropout,
            dense: Linear {
                weight: span(0, cc),
                bias: Some(span(cc + kc, hidden)),
            },
            classifier: Linear {
                weight: span(cc, kc),
                bias: Some(span(cc + kc + hidden, outputs)),
            },
            len: cc + kc + hidden + outputs,
            decay_len: cc + kc,
        }
    }

    /// Weights normal with standard deviation `std`, biases zero.
    pub fn init_params(&self, std: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![0.0; self.len];
        out[..self.decay_len]
            .iter_mut()
            .for_each(|x| *x = std * standard_normal(&mut rng));
        out
    }

    fn dense_shape(&self, rows: usize) -> MatmulShape {
        MatmulShape {
            m: rows,
            k: self.hidden,
            n: self.hidden,
        }
    }

    fn classifier_shape(&self, rows: usize) -> MatmulShape {
        MatmulShape {
            m: rows,
            k: self.hidden,
            n: self.outputs,
        }
    }

    fn dropping(&self, train: bool) -> bool {
        train && self.dropout > 0.0
    }

    /// Outputs `acts.out` from the rows `cls` of `hidden` (one per sequence).
    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut HeadActs<B>,
        hidden: &B::Buf,
        cls: &B::Ids,
        train: bool,
        seed: u64,
    ) {
        let rows = acts.rows;
        be.gather_rows_forward(&mut acts.cls, hidden, cls, self.hidden);
        be.matmul_forward(
            &mut acts.dense,
            &acts.cls,
            params,
            self.dense,
            self.dense_shape(rows),
        );
        be.activation_forward(&mut acts.act, &acts.dense, Activation::Gelu);
        let pooled = if self.dropping(train) {
            let p = self.dropout;
            be.dropout_forward(&mut acts.dropped, &acts.act, p, dropout_seed(seed));
            &acts.dropped
        } else {
            &acts.act
        };
        be.matmul_forward(
            &mut acts.out,
            pooled,
            params,
            self.classifier,
            self.classifier_shape(rows),
        );
    }

    /// Per-row losses in `acts.losses`; with `dscale`, the outputs are
    /// replaced by the gradient of `dscale · Σ losses`.
    pub fn loss<B: Backend>(
        &self,
        be: &B,
        acts: &mut HeadActs<B>,
        targets: &Targets<B>,
        dscale: Option<f32>,
    ) {
        match targets {
            Targets::Classes(ids) => {
                be.cross_entropy(&mut acts.losses, &mut acts.out, ids, self.outputs, dscale)
            }
            Targets::Scores(scores) => be.mse_loss(&mut acts.losses, &mut acts.out, scores, dscale),
        }
    }

    /// Backward from the output gradients left by [`Head::loss`]: accumulates
    /// into `grads` and writes `d_hidden` (the gradient of the whole hidden
    /// state buffer the forward read).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut HeadActs<B>,
        cls: &B::Ids,
        d_hidden: &mut B::Buf,
        train: bool,
        seed: u64,
    ) {
        let rows = acts.rows;
        let dropping = self.dropping(train);
        let pooled = if dropping { &acts.dropped } else { &acts.act };
        be.matmul_backward(
            Some(&mut acts.d_pooled),
            false,
            grads,
            &acts.out,
            pooled,
            params,
            self.classifier,
            self.classifier_shape(rows),
        );
        let d_act = if dropping {
            let p = self.dropout;
            be.dropout_backward(&mut acts.d_act, &acts.d_pooled, p, dropout_seed(seed));
            &acts.d_act
        } else {
            &acts.d_pooled
        };
        be.activation_backward(&mut acts.d_dense, d_act, &acts.dense, Activation::Gelu);
        be.matmul_backward(
            Some(&mut acts.d_cls),
            false,
            grads,
            &acts.d_dense,
            &acts.cls,
            params,
            self.dense,
            self.dense_shape(rows),
        );
        be.gather_rows_backward(d_hidden, &acts.d_cls, cls, self.hidden);
    }
}
