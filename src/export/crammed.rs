//! cram's `crammed-bert` architecture (and `tiny`, the same at demo size with
//! rotary positions): no stock transformers class computes it (scaled
//! sinusoidal or rotary positions, pre-LN without biases, GELU-gated
//! feed-forward), so the export ships a
//! short modeling file of our own, `hf/modeling_crammed.py`, and names it in
//! `auto_map`; `trust_remote_code=True` loads it.
//!
//! The file mirrors cram's modules, so tensor names are cram's own except
//! `ffn.in`/`ffn.out`, which become `ffn.up`/`ffn.down` because Python
//! cannot name an attribute `in`.

use super::hf_json::decimal;
use super::mapping::SpecialIds;
use super::names::NameMap;
use crate::config::{ModelConfig, Positions};
use serde_json::{json, Value};

pub const CLASS: &str = "CrammedForMaskedLM";
pub const MODELING_FILE: &str = "modeling_crammed.py";
pub const MODELING_SOURCE: &str = include_str!("hf/modeling_crammed.py");

pub fn name_map(cfg: &ModelConfig) -> NameMap {
    let mut m = NameMap::default();
    m.whole("embeddings.word.weight", "embeddings.word.weight");
    if cfg.positions == Positions::ScaledSinusoidal {
        m.whole("embeddings.position.scale", "embeddings.position.scale");
    }
    m.layer("embeddings.norm", "embeddings.norm", false);
    for i in 0..cfg.layers {
        let c = format!("layers.{i}");
        for (hf, cram) in [
            ("attn_norm", "attn_norm"),
            ("attn.qkv", "attn.qkv"),
            ("attn.out", "attn.out"),
            ("ffn_norm", "ffn_norm"),
            ("ffn.up", "ffn.in"),
            ("ffn.down", "ffn.out"),
        ] {
            m.layer(&format!("{c}.{hf}"), &format!("{c}.{cram}"), false);
        }
    }
    m.layer("final_norm", "final_norm", false);
    m
}

pub fn config_json(cfg: &ModelConfig, special: &SpecialIds) -> Value {
    let module = MODELING_FILE.trim_end_matches(".py");
    json!({
        "architectures": [CLASS],
        "model_type": "crammed-bert",
        "auto_map": {
            "AutoConfig": format!("{module}.CrammedConfig"),
            "AutoModelForMaskedLM": format!("{module}.{CLASS}"),
        },
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn,
        "layer_norm_eps": decimal(cfg.norm_eps),
        "max_position_embeddings": cfg.max_positions,
        "position_embedding_type": match cfg.positions {
            Positions::Rotary => "rotary",
            _ => "scaled-sinusoidal",
        },
        "rope_theta": decimal(cfg.rope_theta),
        "initializer_range": decimal(cfg.init_std),
        "pad_token_id": special.pad.unwrap_or(0),
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
    })
}
