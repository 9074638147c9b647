//! cram's `bert-base` architecture as transformers' `BertForMaskedLM`.
//!
//! The two compute the same function: post-LN blocks with biases, learned
//! positions, a LayerNorm after the embeddings, exact-erf GELU, and a
//! dense + GELU + LayerNorm head transform before the decoder. What differs
//! is only bookkeeping:
//! - cram packs q|k|v in one `[3C, C]` projection; BERT has three `[C, C]`.
//! - BERT adds a token-type embedding; cram has no segments, so the export
//!   writes zeros (type 0 adds nothing). The import folds a checkpoint's
//!   type-0 row into the position table, which computes the same sums.
//! - cram's decoder bias is BERT's `cls.predictions.bias`. transformers 4
//!   ties `cls.predictions.decoder.bias` to it always, transformers 5 only
//!   with tied embeddings, so the export writes both names.
//! - cram's dropout sits on the embeddings and on each residual branch,
//!   BERT's `hidden_dropout_prob`; cram has none on attention probabilities.

use super::hf_json::{decimal, HfConfig};
use super::mapping::{preset_model, SpecialIds};
use super::names::NameMap;
use super::tensors::Tensors;
use super::ExportError;
use crate::config::ModelConfig;
use serde_json::{json, Value};

const TYPE_VOCAB: usize = 2;
const TOKEN_TYPES: &str = "bert.embeddings.token_type_embeddings.weight";
const POSITIONS: &str = "bert.embeddings.position_embeddings.weight";

pub fn name_map(cfg: &ModelConfig) -> NameMap {
    let mut m = NameMap::default();
    m.whole(
        "bert.embeddings.word_embeddings.weight",
        "embeddings.word.weight",
    );
    m.whole(POSITIONS, "embeddings.position.weight");
    m.zeros(TOKEN_TYPES, vec![TYPE_VOCAB, cfg.hidden]);
    m.layer("bert.embeddings.LayerNorm", "embeddings.norm", true);
    for i in 0..cfg.layers {
        let (hf, c) = (format!("bert.encoder.layer.{i}"), format!("layers.{i}"));
        for (index, part) in ["query", "key", "value"].into_iter().enumerate() {
            for t in ["weight", "bias"] {
                let hf = format!("{hf}.attention.self.{part}.{t}");
                m.rows(hf, format!("{c}.attn.qkv.{t}"), index, 3);
            }
        }
        m.layer(
            &format!("{hf}.attention.output.dense"),
            &format!("{c}.attn.out"),
            true,
        );
        m.layer(
            &format!("{hf}.attention.output.LayerNorm"),
            &format!("{c}.attn_norm"),
            true,
        );
        m.layer(
            &format!("{hf}.intermediate.dense"),
            &format!("{c}.ffn.in"),
            true,
        );
        m.layer(&format!("{hf}.output.dense"), &format!("{c}.ffn.out"), true);
        m.layer(
            &format!("{hf}.output.LayerNorm"),
            &format!("{c}.ffn_norm"),
            true,
        );
    }
    m.layer("cls.predictions.transform.dense", "head.transform", true);
    m.layer("cls.predictions.transform.LayerNorm", "head.norm", true);
    m.whole("cls.predictions.bias", "head.decoder.bias");
    m.copy("cls.predictions.decoder.bias", "head.decoder.bias");
    if !cfg.tie_embeddings {
        m.whole("cls.predictions.decoder.weight", "head.decoder.weight");
    }
    m
}

pub fn config_json(cfg: &ModelConfig, special: &SpecialIds) -> Value {
    json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": decimal(cfg.dropout),
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": TYPE_VOCAB,
        "initializer_range": decimal(cfg.init_std),
        "layer_norm_eps": decimal(cfg.norm_eps),
        "position_embedding_type": "absolute",
        "pad_token_id": special.pad.unwrap_or(0),
        "tie_word_embeddings": cfg.tie_embeddings,
        "is_decoder": false,
        "torch_dtype": "float32",
    })
}

/// The cram model config of a `BertForMaskedLM` config.json: the bert-base
/// preset with the sizes of the file.
pub fn model_config(hf: &HfConfig) -> Result<ModelConfig, ExportError> {
    hf.require(
        "hidden_act",
        &[json!("gelu")],
        "cram's BERT uses the exact erf GELU (\"gelu\")",
    )?;
    hf.require(
        "position_embedding_type",
        &[json!("absolute")],
        "cram's BERT has learned absolute positions",
    )?;
    hf.require(
        "is_decoder",
        &[json!(false)],
        "cram imports BERT as a bidirectional encoder",
    )?;
    hf.require(
        "add_cross_attention",
        &[json!(false)],
        "cram's encoder has no cross-attention",
    )?;
    let mut cfg = preset_model("bert-base");
    cfg.vocab_size = hf.usize("vocab_size")?;
    cfg.hidden = hf.usize("hidden_size")?;
    cfg.layers = hf.usize("num_hidden_layers")?;
    cfg.heads = hf.usize("num_attention_heads")?;
    cfg.ffn = hf.usize("intermediate_size")?;
    cfg.max_positions = hf.usize("max_position_embeddings")?;
    cfg.norm_eps = hf.f32_or("layer_norm_eps", 1e-12)?;
    cfg.dropout = hf.f32_or("hidden_dropout_prob", cfg.dropout)?;
    cfg.init_std = hf.f32_or("initializer_range", cfg.init_std)?;
    cfg.tie_embeddings = hf.bool_or("tie_word_embeddings", true)?;
    Ok(cfg)
}

/// Adds the token-type-0 row to every position, since cram feeds no token
/// types and BERT adds that row to every token of a one-segment input.
/// Returns whether the checkpoint had a non-zero row (and dropped types ≥ 1).
pub fn fold_token_types(tensors: &mut Tensors) -> bool {
    let Some(types) = tensors.remove(TOKEN_TYPES) else {
        return false;
    };
    let Some(positions) = tensors.get_mut(POSITIONS) else {
        return false;
    };
    let width = positions.shape.last().copied().unwrap_or(0);
    let row0 = &types.data[..width.min(types.data.len())];
    // An exported cram model has zeros here; skipping the addition keeps its
    // round trip bit for bit (x + 0.0 turns a -0.0 into +0.0).
    if row0.len() != width || row0.iter().all(|&v| v == 0.0) {
        return false;
    }
    for row in positions.data.chunks_exact_mut(width) {
        row.iter_mut().zip(row0).for_each(|(p, t)| *p += t);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tensors::Tensor;

    #[test]
    fn token_type_zero_is_folded_into_the_positions() {
        let mut tensors = Tensors::new();
        tensors.insert(
            POSITIONS.into(),
            Tensor {
                shape: vec![2, 2],
                data: vec![1.0, 2.0, 3.0, 4.0],
            },
        );
        tensors.insert(
            TOKEN_TYPES.into(),
            Tensor {
                shape: vec![2, 2],
                data: vec![0.5, -1.0, 9.0, 9.0],
            },
        );
        assert!(fold_token_types(&mut tensors));
        assert_eq!(tensors[POSITIONS].data, [1.5, 1.0, 3.5, 3.0]);
        assert!(!tensors.contains_key(TOKEN_TYPES));
    }

    #[test]
    fn zero_token_types_leave_the_positions_untouched() {
        let mut tensors = Tensors::new();
        tensors.insert(
            POSITIONS.into(),
            Tensor {
                shape: vec![1, 2],
                data: vec![-0.0, 2.0],
            },
        );
        tensors.insert(
            TOKEN_TYPES.into(),
            Tensor {
                shape: vec![2, 2],
                data: vec![0.0; 4],
            },
        );
        assert!(!fold_token_types(&mut tensors));
        assert_eq!(tensors[POSITIONS].data[0].to_bits(), (-0.0f32).to_bits());
    }
}
