//! Which transformers class a cram model becomes. A run's `config.toml` is
//! fully resolved and does not name its preset, so the mapping is chosen by
//! architecture: the structural keys must equal those of the mapping's
//! preset; sizes, epsilons, dropout and the vocabulary are free.

use super::{bert, crammed, llama, names::NameMap};
use crate::config::{Config, ModelConfig, Positions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfMapping {
    Bert,
    Llama,
    Crammed,
}

/// Keys that decide the architecture; every mapping fixes them.
const STRUCTURE: &[&str] = &[
    "arch",
    "ffn_kind",
    "norm",
    "norm_position",
    "bias",
    "positions",
    "embedding_norm",
    "final_norm",
    "head_transform",
];

impl HfMapping {
    pub const ALL: [HfMapping; 3] = [HfMapping::Bert, HfMapping::Llama, HfMapping::Crammed];

    /// The transformers class the export loads as.
    pub fn class(self) -> &'static str {
        match self {
            HfMapping::Bert => "BertForMaskedLM",
            HfMapping::Llama => "LlamaForCausalLM",
            HfMapping::Crammed => crammed::CLASS,
        }
    }

    /// The presets of this architecture; the first one defines it.
    pub fn presets(self) -> &'static [&'static str] {
        match self {
            HfMapping::Bert => &["bert-base"],
            HfMapping::Llama => &["gpt-small"],
            HfMapping::Crammed => &["crammed-bert", "tiny"],
        }
    }

    /// The keys under `model.` whose values must equal the preset's.
    fn fixed_keys(self) -> Vec<&'static str> {
        let mut keys = STRUCTURE.to_vec();
        // The custom modeling file always ties the decoder to the embeddings;
        // BERT and Llama have a switch for it. It takes either fixed kind of
        // positions (checked in `mismatches`).
        if self == HfMapping::Crammed {
            keys.push("tie_embeddings");
            keys.retain(|k| *k != "positions");
        }
        keys
    }

    /// One line per fixed key where `cfg` differs from the mapping's preset.
    pub fn mismatches(self, cfg: &ModelConfig) -> Vec<String> {
        let preset = preset_model(self.presets()[0]);
        let (want, have) = (model_table(&preset), model_table(cfg));
        let show = |t: &toml::Table, k: &str| t.get(k).map_or("?".into(), |v| v.to_string());
        let mut out: Vec<String> = self
            .fixed_keys()
            .into_iter()
            .filter(|k| want.get(*k) != have.get(*k))
            .map(|k| {
                format!(
                    "model.{k} = {} (this model has {})",
                    show(&want, k),
                    show(&have, k)
                )
            })
            .collect();
        // The crammed modeling file computes both of cram's fixed position kinds.
        if self == HfMapping::Crammed && cfg.positions == Positions::Learned {
            out.push(format!(
                "model.positions = \"scaled-sinusoidal\" or \"rotary\" (this model has {})",
                show(&have, "positions")
            ));
        }
        out
    }

    /// The mapping of `cfg`, or the reason none fits: for each mapping, the
    /// keys that differ.
    pub fn for_model(cfg: &ModelConfig) -> Result<HfMapping, String> {
        let mut reasons = Vec::new();
        for m in HfMapping::ALL {
            let miss = m.mismatches(cfg);
            if miss.is_empty() {
                return Ok(m);
            }
            reasons.push(format!(
                "{} → {} needs {}",
                m.presets().join(" / "),
                m.class(),
                miss.join(", ")
            ));
        }
        Err(format!("Presets with a mapping: {}.", reasons.join("; ")))
    }

    pub fn name_map(self, cfg: &ModelConfig) -> NameMap {
        match self {
            HfMapping::Bert => bert::name_map(cfg),
            HfMapping::Llama => llama::name_map(cfg),
            HfMapping::Crammed => crammed::name_map(cfg),
        }
    }

    pub fn config_json(self, cfg: &ModelConfig, special: &SpecialIds) -> serde_json::Value {
        match self {
            HfMapping::Bert => bert::config_json(cfg, special),
            HfMapping::Llama => llama::config_json(cfg, special),
            HfMapping::Crammed => crammed::config_json(cfg, special),
        }
    }

    /// The preset of this architecture nearest to `cfg` (a resolved config
    /// does not name its own) and the keys `cfg` changes, `model.vocab_size`
    /// aside (the data sets it), as `key = value (preset: value)`, for the card.
    pub fn changes_from_preset(self, cfg: &ModelConfig) -> (&'static str, Vec<String>) {
        self.presets()
            .iter()
            .map(|p| (*p, differences(&preset_model(p), cfg)))
            .min_by_key(|(_, d)| d.len())
            .expect("every mapping has a preset")
    }
}

/// The special-token ids a tokenizer has (any may be missing in an imported one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    pub cls: Option<u32>,
    pub sep: Option<u32>,
    pub mask: Option<u32>,
}

pub fn preset_model(name: &str) -> ModelConfig {
    Config::resolve(name, &[])
        .expect("embedded presets resolve")
        .model
}

fn model_table(cfg: &ModelConfig) -> toml::Table {
    toml::Table::try_from(cfg).expect("a model config serializes")
}

fn differences(preset: &ModelConfig, cfg: &ModelConfig) -> Vec<String> {
    let (want, have) = (model_table(preset), model_table(cfg));
    have.iter()
        .filter(|(k, v)| k.as_str() != "vocab_size" && want.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let was = want.get(k).map_or("?".into(), |w| w.to_string());
            format!("model.{k} = {v} (preset: {was})")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_has_its_mapping() {
        for m in HfMapping::ALL {
            for p in m.presets() {
                assert_eq!(HfMapping::for_model(&preset_model(p)), Ok(m), "{p}");
            }
        }
        for p in crate::config::preset_names() {
            assert!(
                HfMapping::ALL.iter().any(|m| m.presets().contains(&p)),
                "preset {p} has no mapping"
            );
        }
    }

    #[test]
    fn sizes_are_free_and_structure_is_not() {
        let mut cfg = preset_model("gpt-small");
        cfg.hidden = 64;
        cfg.layers = 2;
        cfg.tie_embeddings = false;
        assert_eq!(HfMapping::for_model(&cfg), Ok(HfMapping::Llama));
        let (preset, changes) = HfMapping::Llama.changes_from_preset(&cfg);
        assert_eq!(preset, "gpt-small");
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes
            .iter()
            .any(|c| c == "model.hidden = 64 (preset: 768)"));

        cfg.norm = crate::config::NormKind::Layernorm;
        let err = HfMapping::for_model(&cfg).unwrap_err();
        assert!(
            err.contains(
                "LlamaForCausalLM needs model.norm = \"rmsnorm\" (this model has \"layernorm\")"
            ),
            "{err}"
        );
        assert!(err.contains("bert-base → BertForMaskedLM"), "{err}");
        assert!(err.contains("crammed-bert / tiny"), "{err}");
    }

    #[test]
    fn crammed_takes_either_fixed_position_kind_but_not_learned_ones() {
        let mut cfg = preset_model("crammed-bert");
        for kind in [Positions::ScaledSinusoidal, Positions::Rotary] {
            cfg.positions = kind;
            assert_eq!(HfMapping::for_model(&cfg), Ok(HfMapping::Crammed));
        }
        cfg.positions = Positions::Learned;
        let err = HfMapping::for_model(&cfg).unwrap_err();
        assert!(
            err.contains(
                "CrammedForMaskedLM needs model.positions = \"scaled-sinusoidal\" or \"rotary\" \
                 (this model has \"learned\")"
            ),
            "{err}"
        );
        // Only the sinusoidal kind has a tensor of its own.
        cfg.positions = Positions::Rotary;
        let rotary = HfMapping::Crammed.name_map(&cfg);
        cfg.positions = Positions::ScaledSinusoidal;
        let sinusoidal = HfMapping::Crammed.name_map(&cfg);
        let has_scale = |m: &NameMap| {
            m.entries
                .iter()
                .any(|(hf, _)| hf.contains("position.scale"))
        };
        assert!(!has_scale(&rotary) && has_scale(&sinusoidal));
    }

    #[test]
    fn crammed_needs_a_tied_decoder() {
        let mut cfg = preset_model("tiny");
        cfg.tie_embeddings = false;
        let err = HfMapping::for_model(&cfg).unwrap_err();
        assert!(err.contains("model.tie_embeddings = true"), "{err}");
    }
}
