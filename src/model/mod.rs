//! The model: its configuration, the layout of its flat parameter buffer, and
//! the forward and backward passes written once over [`Backend`] ops.

mod activations;
mod embed;
mod head;
mod layout;
mod logits;
mod transformer;

pub use activations::Activations;
pub use layout::{Init, Layout, ParamInfo};
pub use logits::{LogitChunks, LossPass};

use crate::backend::{AttentionShape, Backend, Device};
use crate::config::{Arch, ModelConfig, ObjectiveConfig, ObjectiveKind};
use crate::data::batches::HostBatch;
use crate::random::standard_normal;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct Model {
    pub cfg: ModelConfig,
    pub layout: Layout,
}

/// Told by [`Model::backward_synced`] as soon as a stage of
/// [`Layout::grad_stages`] holds its final gradient for the micro-batch, so
/// that data parallelism can reduce it while the backward goes on with the
/// earlier layers. Stages are reported in order, each once.
pub trait GradSync<B: Device> {
    fn stage_done(&mut self, be: &B, grads: &B::Buf, stage: usize);
}

/// The backward pass of a micro-batch whose gradients are not final (or of
/// a single process): nobody listens.
pub struct NoSync;

impl<B: Device> GradSync<B> for NoSync {
    fn stage_done(&mut self, _be: &B, _grads: &B::Buf, _stage: usize) {}
}

/// One micro-batch on the device.
pub struct DeviceBatch<B: Backend> {
    pub batch: usize,
    pub seq: usize,
    /// Input token ids `[batch·seq]`.
    pub ids: B::Ids,
    /// Target id per predicted row, [`crate::backend::IGNORE`] where none.
    pub targets: B::Ids,
    /// Rows of the hidden states that get logits (sparse prediction); `None`
    /// means every row.
    pub predict: Option<B::Ids>,
    /// Number of predicted rows (`targets` length).
    pub predicted: usize,
    /// Number of targets that are not ignored: the loss is their mean.
    pub counted: usize,
}

/// A host batch (ids, targets, predicted rows) copied to the device.
pub fn upload_batch<B: Backend>(be: &B, hb: &HostBatch) -> DeviceBatch<B> {
    DeviceBatch {
        batch: hb.batch,
        seq: hb.seq,
        ids: be.upload_ids(&hb.ids),
        targets: be.upload_ids(&hb.targets),
        predict: hb.predict.as_ref().map(|p| be.upload_ids(p)),
        predicted: hb.targets.len(),
        counted: hb.counted,
    }
}

impl Model {
    pub fn new(cfg: &ModelConfig) -> Model {
        Model {
            cfg: cfg.clone(),
            layout: Layout::new(cfg),
        }
    }

    pub fn num_params(&self) -> usize {
        self.layout.len
    }

    pub fn attention_shape(&self, batch: usize, seq: usize) -> AttentionShape {
        AttentionShape {
            batch,
            seq,
            heads: self.cfg.heads,
            head_dim: self.cfg.head_dim(),
            causal: self.cfg.arch == Arch::Decoder,
        }
    }

    /// Initial parameters, drawn from ChaCha seeded by `seed`, in layout order.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![0.0f32; self.layout.len];
        for p in &self.layout.params {
            let dst = &mut out[p.span.range()];
            match p.init {
                Init::Normal(std) => dst
                    .iter_mut()
                    .for_each(|x| *x = std * standard_normal(&mut rng)),
                Init::Ones => dst.fill(1.0),
                Init::Zeros => dst.fill(0.0),
                Init::Constant(c) => dst.fill(c),
            }
        }
        out
    }

    /// Training FLOPs per token (forward + backward = 3 × forward), counting
    /// matmuls (2 per multiply-add), the two attention products, and the head
    /// over the fraction of positions that get logits: the accounting of
    /// `bench/torch_reference.py`.
    pub fn flops_per_token(&self, seq: usize, objective: &ObjectiveConfig) -> f64 {
        let c = self.cfg.hidden as f64;
        let matmul_weights =
            3.0 * c * c + c * c + c * self.cfg.ffn as f64 + self.cfg.ffn_inner() as f64 * c;
        let per_layer = 2.0 * matmul_weights + 2.0 * 2.0 * seq as f64 * c;
        let predicted = match objective.kind {
            ObjectiveKind::Mlm if objective.sparse_prediction => objective.mask_rate as f64,
            _ => 1.0,
        };
        let transform = if self.cfg.head_transform { c * c } else { 0.0 };
        let head = 2.0 * (transform + c * self.cfg.vocab_size as f64) * predicted;
        3.0 * (self.cfg.layers as f64 * per_layer + head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// crammed-bert by hand: embeddings 32768·768 + a 768 scale-free sinusoid
    /// scale (1) + embedding LayerNorm (768, no bias); per layer: two norms
    /// (2·768), qkv 768·2304, out 768·768, ffn in 768·3072, ffn out 1536·768;
    /// final norm 768; the decoder is tied and has no bias.
    #[test]
    fn crammed_bert_parameter_count_matches_hand_count() {
        let cfg = Config::resolve("crammed-bert", &[]).unwrap();
        let model = Model::new(&cfg.model);
        let per_layer = 2 * 768 + 768 * 2304 + 768 * 768 + 768 * 3072 + 1536 * 768;
        let expected = 32768 * 768 + 1 + 768 + 16 * per_layer + 768;
        assert_eq!(model.num_params(), expected);
        assert_eq!(expected, 119_563_777);
        assert_eq!(model.layout.non_embedding_count(), expected - 32768 * 768);
    }

    /// bert-base (with our 32768 vocabulary): learned positions 512·768, biases
    /// everywhere, LayerNorm with bias, head transform 768·768 + bias + norm, decoder bias.
    #[test]
    fn bert_base_parameter_count_matches_hand_count() {
        let cfg = Config::resolve("bert-base", &[]).unwrap();
        let model = Model::new(&cfg.model);
        let per_layer = 2 * 2 * 768
            + (768 * 2304 + 2304)
            + (768 * 768 + 768)
            + (768 * 3072 + 3072)
            + (3072 * 768 + 768);
        let expected = 32768 * 768
            + 512 * 768
            + 2 * 768
            + 12 * per_layer
            + (768 * 768 + 768)
            + 2 * 768
            + 32768;
        assert_eq!(model.num_params(), expected);
    }

    #[test]
    fn decayed_tensors_come_first() {
        for preset in crate::config::preset_names() {
            let cfg = Config::resolve(preset, &[]).unwrap();
            let layout = Model::new(&cfg.model).layout;
            for p in &layout.params {
                assert_eq!(p.decay, p.span.offset < layout.decay_len, "{}", p.name);
                let numel: usize = p.shape.iter().product();
                assert_eq!(numel, p.span.len);
            }
            let total: usize = layout.params.iter().map(|p| p.span.len).sum();
            assert_eq!(total, layout.len);
        }
    }

    /// Gradient stages cover the flat buffer exactly once, in every preset.
    #[test]
    fn grad_stages_partition_the_buffer() {
        for preset in crate::config::preset_names() {
            let cfg = Config::resolve(preset, &[]).unwrap();
            let layout = Model::new(&cfg.model).layout;
            let stages = layout.grad_stages();
            assert_eq!(stages.len(), cfg.model.layers + 2, "{preset}");
            let mut spans: Vec<_> = stages.into_iter().flatten().collect();
            spans.sort_by_key(|s| s.offset);
            let mut next = 0;
            for s in spans {
                assert_eq!(s.offset, next, "{preset}: a gap or an overlap at {next}");
                next += s.len;
            }
            assert_eq!(next, layout.len, "{preset}");
        }
    }

    #[test]
    fn init_is_deterministic_and_scaled() {
        let cfg = Config::resolve("tiny", &[]).unwrap();
        let model = Model::new(&cfg.model);
        let a = model.init_params(7);
        assert_eq!(a, model.init_params(7));
        assert_ne!(a, model.init_params(8));
        let w = &a[model.layout.word_embeddings.range()];
        let var = w.iter().map(|x| (x * x) as f64).sum::<f64>() / w.len() as f64;
        let std = cfg.model.init_std as f64;
        assert!(
            (var.sqrt() - std).abs() < 0.05 * std,
            "std {} instead of {std}",
            var.sqrt()
        );
    }
}
