//! The embedding layer of the transformer, forward and backward: token
//! embeddings, the position scheme (learned, sinusoidal, or none for
//! rotary), the optional embedding norm and dropout.

use super::activations::Activations;
use super::transformer::{site_seed, Site};
use super::Model;
use crate::backend::Backend;
use crate::config::Positions;

impl Model {
    pub(super) fn embed_forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        ids: &B::Ids,
        train: bool,
    ) {
        let (c, t) = (self.cfg.hidden, acts.seq);
        let lay = &self.layout;
        be.embedding_forward(&mut acts.emb, ids, params, lay.word_embeddings, c);
        match self.cfg.positions {
            Positions::Learned => {
                let table = lay.learned_positions.expect("learned table in layout");
                be.learned_positions_forward(&mut acts.emb, params, table, t, c);
            }
            Positions::ScaledSinusoidal => {
                let scale = lay.position_scale.expect("position scale in layout");
                be.sinusoidal_positions_forward(&mut acts.emb, params, scale, t, c);
            }
            Positions::Rotary => {}
        }
        let src = match lay.embedding_norm {
            Some(norm) => {
                let s = &mut acts.emb_stats;
                be.norm_forward(
                    &mut acts.emb_norm_out,
                    &mut s.mean,
                    &mut s.rstd,
                    &acts.emb,
                    params,
                    norm,
                    c,
                );
                &acts.emb_norm_out
            }
            None => &acts.emb,
        };
        let p = self.dropout(train);
        if p > 0.0 {
            be.dropout_forward(
                &mut acts.resid[0],
                src,
                p,
                site_seed(acts.dropout_seed, Site::Embedding),
            );
        } else {
            be.copy(&mut acts.resid[0], src);
        }
    }

    pub(super) fn embed_backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        acts: &mut Activations<B>,
        ids: &B::Ids,
        train: bool,
    ) {
        let (c, t) = (self.cfg.hidden, acts.seq);
        let lay = &self.layout;
        let p = self.dropout(train);
        let mut d: &B::Buf = &acts.d_resid;
        if p > 0.0 {
            be.dropout_backward(
                &mut acts.d_tmp,
                d,
                p,
                site_seed(acts.dropout_seed, Site::Embedding),
            );
            d = &acts.d_tmp;
        }
        if let Some(norm) = lay.embedding_norm {
            be.zero(&mut acts.d_sum);
            let s = &acts.emb_stats;
            be.norm_backward(
                &mut acts.d_sum,
                grads,
                d,
                &acts.emb,
                params,
                &s.mean,
                &s.rstd,
                norm,
                c,
            );
            d = &acts.d_sum;
        }
        match self.cfg.positions {
            Positions::Learned => {
                let table = lay.learned_positions.expect("learned table in layout");
                be.learned_positions_backward(grads, table, d, t, c);
            }
            Positions::ScaledSinusoidal => {
                let scale = lay.position_scale.expect("position scale in layout");
                be.sinusoidal_positions_backward(grads, scale, d, t, c);
            }
            Positions::Rotary => {}
        }
        be.embedding_backward(grads, lay.word_embeddings, d, ids, c);
    }
}
