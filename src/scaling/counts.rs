//! What a point of a sweep is measured in. N is Kaplan et al.'s
//! non-embedding parameter count (every parameter except the word and
//! position tables; the tied output matrix is the word table); the total
//! count is kept too, for fits in Hoffmann et al.'s convention.
//!
//! Training compute follows Kaplan et al. (2020), table 1: a forward pass
//! costs 2N + 2·n_layer·n_ctx·d_model FLOPs per token (the weight matmuls
//! plus the attention scores and their weighted sum), and training costs
//! three forward passes, so
//!
//! ```text
//! C = 6·N·D + 6·n_layer·n_ctx·d_model·D
//! ```
//!
//! with D the training tokens and n_ctx the sequence length. The trainer's
//! own FLOP counter (`Model::flops_per_token`) also counts the output head;
//! this convention leaves it out, as the papers do.

use crate::config::Config;
use crate::model::Model;

/// Parameter counts and per-token training compute of one configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Non-embedding parameters (Kaplan's N).
    pub n_params: f64,
    /// Every parameter, embeddings included (Chinchilla's N).
    pub n_total: f64,
    /// Training FLOPs per token: 6N + 6·n_layer·n_ctx·d_model.
    pub flops_per_token: f64,
}

impl Counts {
    pub fn of(cfg: &Config) -> Counts {
        let model = Model::new(&cfg.model);
        let n_params = model.layout.non_embedding_count() as f64;
        let attention =
            6.0 * cfg.model.layers as f64 * cfg.data.seq_len as f64 * cfg.model.hidden as f64;
        Counts {
            n_params,
            n_total: model.num_params() as f64,
            flops_per_token: 6.0 * n_params + attention,
        }
    }

    /// C for `tokens` training tokens.
    pub fn compute(&self, tokens: f64) -> f64 {
        self.flops_per_token * tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// crammed-bert: N = 16 layers × (2·768 norms + 768·2304 + 768·768 +
    /// 768·3072 + 1536·768) + 1 (sinusoid scale) + 768 (embedding norm) + 768
    /// (final norm); attention term 6·16·128·768 per token.
    #[test]
    fn crammed_bert_counts_by_hand() {
        let cfg = Config::resolve("crammed-bert", &[]).unwrap();
        let c = Counts::of(&cfg);
        let per_layer = 2 * 768 + 768 * 2304 + 768 * 768 + 768 * 3072 + 1536 * 768;
        let n = (16 * per_layer + 1 + 768 + 768) as f64;
        assert_eq!(c.n_params, n);
        assert_eq!(c.n_total, n + 32768.0 * 768.0);
        assert_eq!(c.flops_per_token, 6.0 * n + 6.0 * 16.0 * 128.0 * 768.0);
        assert_eq!(c.compute(1e9), c.flops_per_token * 1e9);
    }
}
