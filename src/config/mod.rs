//! Typed configuration: model, objective, data and training, resolved from a
//! preset embedded in the binary plus `--set key.path=value` overrides.
//!
//! Resolution is "parse first, resolve later": the preset's TOML is read as a
//! value tree, each override is checked against that tree (an unknown key is
//! an error naming the nearest valid key), and only then is the tree turned
//! into the typed, read-only [`Config`].

mod budget;
mod resume;
mod validate;

pub use budget::{Budget, BudgetSetting, Spent};
pub use resume::{resume_changes, Change, RESUMABLE};

mod data_kinds;
pub use data_kinds::{Normalization, TextSplit, TokenizerKind};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The presets compiled into the binary, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("crammed-bert", include_str!("presets/crammed-bert.toml")),
    ("bert-base", include_str!("presets/bert-base.toml")),
    ("gpt-small", include_str!("presets/gpt-small.toml")),
    ("tiny", include_str!("presets/tiny.toml")),
];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("unknown preset '{name}'; the presets are: {known}")]
    UnknownPreset { name: String, known: String },
    #[error("unknown config key '{key}'{hint}")]
    UnknownKey { key: String, hint: String },
    #[error("override '{0}' is not of the form key.path=value")]
    BadOverride(String),
    #[error("config key '{key}' is a table, not a value; set one of its keys, e.g. '{example}'")]
    NotAValue { key: String, example: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Encoder,
    Decoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FfnKind {
    /// Linear → GELU → linear.
    Gelu,
    /// Linear to 2·h, GELU(gate) × value, linear from h.
    GluGelu,
    /// Linear to 2·h, SiLU(gate) × value, linear from h.
    Swiglu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    Layernorm,
    Rmsnorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormPosition {
    Pre,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    Learned,
    ScaledSinusoidal,
    Rotary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    Mlm,
    Causal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Linear up to the peak at `warmup`, linear down to `final_lr` at the end.
    OneCycle,
    /// Linear warm-up over `warmup`, then linear decay to `final_lr`.
    Linear,
    /// Linear warm-up over `warmup`, then cosine decay to `final_lr`.
    Cosine,
    /// Linear warm-up over `warmup`, then constant.
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    /// Width of the first feed-forward projection; GLU kinds split it in two halves.
    pub ffn: usize,
    pub ffn_kind: FfnKind,
    pub norm: NormKind,
    pub norm_position: NormPosition,
    pub norm_eps: f32,
    pub bias: bool,
    pub positions: Positions,
    pub max_positions: usize,
    pub rope_theta: f32,
    pub embedding_norm: bool,
    pub final_norm: bool,
    pub head_transform: bool,
    pub tie_embeddings: bool,
    pub dropout: f32,
    pub init_std: f32,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Width of the activation entering the second feed-forward projection.
    pub fn ffn_inner(&self) -> usize {
        match self.ffn_kind {
            FfnKind::Gelu => self.ffn,
            FfnKind::GluGelu | FfnKind::Swiglu => self.ffn / 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub kind: ObjectiveKind,
    /// Fraction of (non-special) tokens selected for prediction in MLM.
    pub mask_rate: f32,
    /// Compute logits only at the selected positions (Cramming's sparse prediction).
    pub sparse_prediction: bool,
    /// Select whole words (all their pieces) for masking; the number of
    /// masked positions per sequence stays the same.
    pub whole_word_masking: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub vocab_size: usize,
    pub seq_len: usize,
    pub val_fraction: f64,
    pub shard_sequences: usize,
    /// JSON Lines inputs: the field holding the text.
    pub text_field: String,
    /// Plain-text inputs: how files are cut into documents.
    pub text_split: TextSplit,
    pub normalization: Normalization,
    /// Documents shorter than this many characters are dropped.
    pub min_chars: usize,
    /// Drop exact duplicate documents.
    pub dedup: bool,
    /// Drop near-duplicate documents (MinHash LSH).
    pub near_dup: bool,
    /// Jaccard similarity of word shingles at which documents are near duplicates.
    pub near_dup_threshold: f64,
    /// Drop documents with more than `max_tokens_per_char` tokens per character.
    pub compression_filter: bool,
    pub max_tokens_per_char: f64,
    pub tokenizer: TokenizerKind,
    /// Megabytes of cleaned train text the tokenizer is trained on.
    pub tokenizer_sample_mb: u64,
    /// Sort train sequences by unigram frequency, most common first.
    pub unigram_sort: bool,
    /// Read train sequences in stored order instead of shuffling each epoch.
    pub keep_order: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Checked when the config is read (see [`BudgetSetting`]).
    pub budget: BudgetSetting,
    pub micro_batch: usize,
    pub batch_size: usize,
    pub batch_ramp: f64,
    pub schedule: ScheduleKind,
    pub lr: f64,
    pub warmup: f64,
    pub final_lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub seed: u64,
    pub log_every: usize,
    pub eval_every: usize,
    pub eval_batches: usize,
    pub checkpoint_every: usize,
    /// The newest N checkpoints stay on disk (0: all). Run folders from
    /// before this key keep all, as they did.
    #[serde(default)]
    pub keep_checkpoints: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub objective: ObjectiveConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    /// Run folders from before this section get its defaults.
    #[serde(default)]
    pub guard: GuardConfig,
}

/// What pretraining does about steps whose gradient norm is not finite
/// (`[guard]`). Such a step is always skipped on the device: its update is not
/// applied. Past `skip_limit` of them since the newest checkpoint, the run
/// rolls back to that checkpoint (or to its initialisation when it has none),
/// multiplies the learning rate by `lr_factor`, and goes on past the data it
/// diverged on (the batches between the checkpoint and the failure are not
/// read again, as PaLM skipped the batches around a spike); after
/// `max_rollbacks` it stops with an error. A loss spike (a logged loss above
/// `spike_factor` times the mean of the last `spike_window` logged losses)
/// rolls back the same way: OPT-175B's logbook did this by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    pub skip_limit: u32,
    pub max_rollbacks: u32,
    pub lr_factor: f64,
    /// 0 turns the spike check off. (Run folders from before it get the default.)
    #[serde(default = "default_spike_factor")]
    pub spike_factor: f64,
    #[serde(default = "default_spike_window")]
    pub spike_window: u32,
}

fn default_spike_factor() -> f64 {
    2.0
}

fn default_spike_window() -> u32 {
    20
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            skip_limit: 3,
            max_rollbacks: 3,
            lr_factor: 0.5,
            spike_factor: default_spike_factor(),
            spike_window: default_spike_window(),
        }
    }
}

impl Config {
    /// The named preset with `key.path=value` overrides applied.
    pub fn resolve(preset: &str, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = preset_text(preset)?;
        Self::from_toml_with_overrides(text, overrides)
    }

    /// A config from TOML text (a run's `config.toml`) with overrides applied.
    pub fn from_toml_with_overrides(
        text: &str,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        check_keys(&tree, &reference_tree(), "")?;
        for o in overrides {
            apply_override(&mut tree, o)?;
        }
        let config: Config = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_with_overrides(&text, &[])
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serializes")
    }
}

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

fn preset_text(name: &str) -> Result<&'static str, ConfigError> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| ConfigError::UnknownPreset {
            name: name.to_string(),
            known: preset_names().join(", "),
        })
}

/// The tree of every valid key, taken from a complete preset.
fn reference_tree() -> toml::Table {
    PRESETS[0]
        .1
        .parse()
        .expect("embedded presets are valid TOML")
}

fn all_keys(tree: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in tree {
        let key = join_key(prefix, k);
        match v {
            toml::Value::Table(t) => all_keys(t, &key, out),
            _ => out.push(key),
        }
    }
}

fn join_key(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn unknown_key(key: &str) -> ConfigError {
    let mut keys = Vec::new();
    all_keys(&reference_tree(), "", &mut keys);
    // A key the typed one begins (data.vocab → data.vocab_size) is the best
    // hint; else the nearest key within a third of its length (each
    // candidate judged by its own length, so a short near miss cannot hide
    // a long one).
    let best = keys
        .iter()
        .filter(|k| k.starts_with(key))
        .min_by_key(|k| k.len())
        .map(|k| (0, k))
        .or_else(|| {
            keys.iter()
                .map(|k| (strsim::damerau_levenshtein(key, k), k))
                .filter(|(d, k)| *d <= (k.len() / 3).max(2))
                .min()
        });
    let hint = match best {
        Some((_, k)) => format!("; did you mean '{k}'?"),
        None => {
            // No near miss: list the keys of the section the user meant.
            let section = key.split('.').next().unwrap_or_default();
            let siblings: Vec<&str> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(section).and_then(|r| r.strip_prefix('.')))
                .collect();
            if siblings.is_empty() {
                "; the sections are model, objective, data and train (see `cram config show`)"
                    .to_string()
            } else {
                format!("; the keys of [{section}] are: {}", siblings.join(", "))
            }
        }
    };
    ConfigError::UnknownKey {
        key: key.to_string(),
        hint,
    }
}

fn check_keys(
    tree: &toml::Table,
    reference: &toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (k, v) in tree {
        let key = join_key(prefix, k);
        match (v, reference.get(k)) {
            (_, None) => return Err(unknown_key(&key)),
            (toml::Value::Table(t), Some(toml::Value::Table(r))) => check_keys(t, r, &key)?,
            _ => {}
        }
    }
    Ok(())
}

fn apply_override(tree: &mut toml::Table, text: &str) -> Result<(), ConfigError> {
    let (key, raw) = text
        .split_once('=')
        .ok_or_else(|| ConfigError::BadOverride(text.to_string()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::BadOverride(text.to_string()));
    }
    let parts: Vec<&str> = key.split('.').collect();
    set_path(tree, &parts, key, raw.trim())
}

fn set_path(
    node: &mut toml::Table,
    parts: &[&str],
    key: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let Some(entry) = node.get_mut(parts[0]) else {
        return Err(unknown_key(key));
    };
    match (entry, parts.len() == 1) {
        (toml::Value::Table(t), false) => set_path(t, &parts[1..], key, raw),
        (toml::Value::Table(t), true) => {
            let example = t
                .keys()
                .next()
                .map(|k| format!("{key}.{k}=..."))
                .unwrap_or_default();
            Err(ConfigError::NotAValue {
                key: key.to_string(),
                example,
            })
        }
        (_, false) => Err(unknown_key(key)),
        (slot, true) => {
            let value = parse_value(raw, slot);
            if std::mem::discriminant(&value) != std::mem::discriminant(slot) {
                return Err(ConfigError::Invalid(format!(
                    "{key} takes {}, not '{raw}' (it is {slot} now)",
                    kind_of(slot)
                )));
            }
            *slot = value;
            Ok(())
        }
    }
}

/// A TOML literal when the text is one ("0.5", "true", "[1, 2]"), otherwise a
/// bare string, so that `--set train.budget=2h` needs no quotes. A float slot
/// given an integer stays a float.
/// What a config value is, for an error about a value of the wrong kind.
fn kind_of(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::Float(_) => "a number",
        toml::Value::Integer(_) => "a whole number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::String(_) => "a string",
        toml::Value::Array(_) => "a list",
        _ => "a value of its own kind",
    }
}

fn parse_value(raw: &str, slot: &toml::Value) -> toml::Value {
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match (parsed, slot) {
        (Some(toml::Value::Integer(i)), toml::Value::Float(_)) => toml::Value::Float(i as f64),
        (Some(v), toml::Value::String(_)) if !v.is_str() => toml::Value::String(raw.to_string()),
        (Some(v), _) => v,
        (None, _) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_has_every_key() {
        let mut reference = Vec::new();
        all_keys(&reference_tree(), "", &mut reference);
        for name in preset_names() {
            let tree: toml::Table = preset_text(name).unwrap().parse().unwrap();
            let mut keys = Vec::new();
            all_keys(&tree, "", &mut keys);
            assert_eq!(keys, reference, "preset {name} lists other keys");
            Config::resolve(name, &[]).unwrap();
        }
    }

    #[test]
    fn override_sets_typed_values() {
        let c = Config::resolve(
            "tiny",
            &[
                "train.lr=0.01".into(),
                "model.layers=3".into(),
                "train.budget=2h".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.model.layers, 3);
        assert_eq!(c.train.budget.to_string(), "2h");
        let c = Config::resolve("tiny", &["train.lr=1".into()]).unwrap();
        assert_eq!(c.train.lr, 1.0);
    }

    #[test]
    fn unknown_key_suggests_the_nearest() {
        let e = Config::resolve("tiny", &["train.lrr=0.1".into()]).unwrap_err();
        assert!(e.to_string().contains("'train.lrr'"), "{e}");
        assert!(e.to_string().contains("did you mean 'train.lr'"), "{e}");
        let e = Config::resolve("tiny", &["model.hiden=64".into()]).unwrap_err();
        assert!(e.to_string().contains("model.hidden"), "{e}");
        let e = Config::from_toml_with_overrides("[model]\nlayer = 2\n", &[]).unwrap_err();
        assert!(e.to_string().contains("model.layers"), "{e}");
        let e = Config::resolve("tiny", &["train.learning_rate=0.1".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("the keys of [train] are: batch_ramp,"),
            "{e}"
        );
        assert!(e.to_string().contains(" lr, "), "{e}");
        let e = Config::resolve("tiny", &["optim.lr=0.1".into()]).unwrap_err();
        assert!(e.to_string().contains("the sections are"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::resolve("tiny", &["model.ffn_kind=relu".into()]).unwrap_err();
        assert!(e.to_string().contains("relu"), "{e}");
        let e = Config::resolve("tiny", &["model.heads=3".into()]).unwrap_err();
        assert!(e.to_string().contains("divisible"), "{e}");
        let e = Config::resolve("nope", &[]).unwrap_err();
        assert!(e.to_string().contains("crammed-bert"), "{e}");
        let e = Config::resolve("tiny", &["train".into()]).unwrap_err();
        assert!(matches!(e, ConfigError::BadOverride(_)), "{e}");
        let e = Config::resolve("tiny", &["train=1".into()]).unwrap_err();
        assert!(matches!(e, ConfigError::NotAValue { .. }), "{e}");
    }

    #[test]
    fn config_round_trips_through_toml() {
        for name in preset_names() {
            let c = Config::resolve(name, &[]).unwrap();
            let back = Config::from_toml_with_overrides(&c.to_toml(), &[]).unwrap();
            assert_eq!(c, back);
        }
    }

    #[test]
    fn crammed_bert_is_the_paper_recipe() {
        let c = Config::resolve("crammed-bert", &[]).unwrap();
        let m = &c.model;
        assert_eq!(
            (m.layers, m.hidden, m.heads, m.ffn, m.ffn_inner()),
            (16, 768, 12, 3072, 1536)
        );
        assert_eq!(m.ffn_kind, FfnKind::GluGelu);
        assert_eq!((m.norm_position, m.bias), (NormPosition::Pre, false));
        assert_eq!(m.positions, Positions::ScaledSinusoidal);
        assert!(m.embedding_norm && m.final_norm && !m.head_transform && m.tie_embeddings);
        assert_eq!((m.vocab_size, c.data.seq_len), (32768, 128));
        assert_eq!(
            (c.objective.mask_rate, c.objective.sparse_prediction),
            (0.25, true)
        );
        let t = &c.train;
        assert_eq!(
            (t.beta1, t.beta2, t.eps, t.weight_decay),
            (0.9, 0.98, 1e-12, 0.01)
        );
        assert_eq!((t.grad_clip, t.lr, t.batch_size), (0.5, 1e-3, 4032));
        assert_eq!((t.schedule, t.final_lr), (ScheduleKind::OneCycle, 0.0));
    }
}
