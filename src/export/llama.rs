//! cram's `gpt-small` architecture as transformers' `LlamaForCausalLM`.
//!
//! Both are pre-RMSNorm causal decoders without biases, with rotary
//! positions in the rotate-half convention (dimension i pairs with
//! i + head_dim/2, frequency theta^(-2i/head_dim)), SwiGLU and a final norm.
//! The bookkeeping that differs:
//! - cram packs q|k|v in one `[3C, C]` projection; Llama has three `[C, C]`.
//! - cram's SwiGLU projection `ffn.in` is `[2h, C]`, value rows then gate
//!   rows, and computes value · SiLU(gate); Llama computes
//!   down(SiLU(gate_proj x) · up_proj x), so value → `up_proj`, gate →
//!   `gate_proj`, and Llama's `intermediate_size` is cram's `ffn / 2`.
//! - Llama has no residual dropout; cram's is off at inference anyway.

use super::hf_json::{decimal, HfConfig};
use super::mapping::{preset_model, SpecialIds};
use super::names::NameMap;
use super::ExportError;
use crate::config::ModelConfig;
use serde_json::{json, Value};

pub fn name_map(cfg: &ModelConfig) -> NameMap {
    let mut m = NameMap::default();
    m.whole("model.embed_tokens.weight", "embeddings.word.weight");
    for i in 0..cfg.layers {
        let (hf, c) = (format!("model.layers.{i}"), format!("layers.{i}"));
        m.whole(
            format!("{hf}.input_layernorm.weight"),
            format!("{c}.attn_norm.weight"),
        );
        for (index, part) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
            m.rows(
                format!("{hf}.self_attn.{part}.weight"),
                format!("{c}.attn.qkv.weight"),
                index,
                3,
            );
        }
        m.whole(
            format!("{hf}.self_attn.o_proj.weight"),
            format!("{c}.attn.out.weight"),
        );
        m.whole(
            format!("{hf}.post_attention_layernorm.weight"),
            format!("{c}.ffn_norm.weight"),
        );
        m.rows(
            format!("{hf}.mlp.up_proj.weight"),
            format!("{c}.ffn.in.weight"),
            0,
            2,
        );
        m.rows(
            format!("{hf}.mlp.gate_proj.weight"),
            format!("{c}.ffn.in.weight"),
            1,
            2,
        );
        m.whole(
            format!("{hf}.mlp.down_proj.weight"),
            format!("{c}.ffn.out.weight"),
        );
    }
    m.whole("model.norm.weight", "final_norm.weight");
    if !cfg.tie_embeddings {
        m.whole("lm_head.weight", "head.decoder.weight");
    }
    m
}

pub fn config_json(cfg: &ModelConfig, special: &SpecialIds) -> Value {
    let theta = decimal(cfg.rope_theta);
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.ffn_inner(),
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.heads,
        "head_dim": cfg.head_dim(),
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_positions,
        "rms_norm_eps": decimal(cfg.norm_eps),
        // transformers 4 reads `rope_theta`, 5 reads `rope_parameters` (and
        // still accepts the former); both say the same.
        "rope_theta": theta,
        "rope_scaling": null,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "pretraining_tp": 1,
        "initializer_range": decimal(cfg.init_std),
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": special.cls,
        "eos_token_id": special.sep,
        "pad_token_id": special.pad,
        "use_cache": true,
        "torch_dtype": "float32",
    })
}

/// The cram model config of a `LlamaForCausalLM` config.json: the gpt-small
/// preset with the sizes of the file.
pub fn model_config(hf: &HfConfig) -> Result<ModelConfig, ExportError> {
    let unsupported = |reason: String| ExportError::config(&hf.path, reason);
    hf.require(
        "hidden_act",
        &[json!("silu")],
        "cram's SwiGLU uses SiLU (\"silu\")",
    )?;
    hf.require(
        "attention_bias",
        &[json!(false)],
        "cram's decoder has no biases",
    )?;
    hf.require("mlp_bias", &[json!(false)], "cram's decoder has no biases")?;
    hf.require(
        "rope_scaling",
        &[],
        "cram implements plain rotary positions only",
    )?;
    hf.require(
        "pretraining_tp",
        &[json!(1)],
        "cram needs the unsplit projections",
    )?;
    let mut cfg = preset_model("gpt-small");
    cfg.vocab_size = hf.usize("vocab_size")?;
    cfg.hidden = hf.usize("hidden_size")?;
    cfg.layers = hf.usize("num_hidden_layers")?;
    cfg.heads = hf.usize("num_attention_heads")?;
    cfg.ffn = 2 * hf.usize("intermediate_size")?;
    cfg.max_positions = hf.usize("max_position_embeddings")?;
    cfg.norm_eps = hf.f32_or("rms_norm_eps", 1e-6)?;
    cfg.init_std = hf.f32_or("initializer_range", cfg.init_std)?;
    cfg.tie_embeddings = hf.bool_or("tie_word_embeddings", false)?;
    cfg.rope_theta = rope_theta(hf)?;
    if cfg.heads == 0 || !cfg.hidden.is_multiple_of(cfg.heads) {
        return Err(unsupported(format!(
            "\"hidden_size\" ({}) is not a multiple of \"num_attention_heads\" ({})",
            cfg.hidden, cfg.heads
        )));
    }
    let kv_heads = hf.json.get("num_key_value_heads").and_then(Value::as_u64);
    if kv_heads.is_some_and(|k| k as usize != cfg.heads) {
        return Err(unsupported(format!(
            "\"num_key_value_heads\" is {}, but cram has no grouped-query attention (it needs {})",
            kv_heads.unwrap_or(0),
            cfg.heads
        )));
    }
    let head_dim = hf.json.get("head_dim").and_then(Value::as_u64);
    if head_dim.is_some_and(|d| d as usize != cfg.head_dim()) {
        return Err(unsupported(format!(
            "\"head_dim\" is {}, but cram's is hidden_size / num_attention_heads = {}",
            head_dim.unwrap_or(0),
            cfg.head_dim()
        )));
    }
    Ok(cfg)
}

/// The rotary base from `rope_parameters` (transformers 5) or `rope_theta` (4).
fn rope_theta(hf: &HfConfig) -> Result<f32, ExportError> {
    let Some(params) = hf.json.get("rope_parameters").filter(|v| !v.is_null()) else {
        return hf.f32_or("rope_theta", 10000.0);
    };
    let kind = params
        .get("rope_type")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind != "default" {
        return Err(ExportError::config(
            &hf.path,
            format!("\"rope_parameters.rope_type\" is \"{kind}\"; cram implements plain rotary positions (\"default\") only"),
        ));
    }
    params
        .get("rope_theta")
        .and_then(Value::as_f64)
        .map(|t| t as f32)
        .ok_or_else(|| {
            ExportError::config(
                &hf.path,
                "\"rope_parameters\" has no numeric \"rope_theta\"",
            )
        })
}
