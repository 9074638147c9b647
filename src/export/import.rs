//! `cram import hf`: a transformers folder (`BertForMaskedLM`,
//! `LlamaForCausalLM`, or a crammed-bert export of cram's own) into a cram
//! run folder: `config.toml` (the matching preset with the folder's sizes),
//! `tokenizer.json` when the folder has one, and `checkpoints/step-0` with
//! fresh optimizer state, ready for `cram pretrain --resume` or evaluation.

use super::hf_json::HfConfig;
use super::mapping::{preset_model, HfMapping};
use super::tensors::{read_hf_weights, WEIGHTS_FILE};
use super::{bert, llama, ExportError};
use crate::backend::cpu::Cpu;
use crate::config::{Config, ModelConfig, Positions};
use crate::data::{check_out_dir, StagingDir};
use crate::model::Model;
use crate::optim::Weights;
use crate::train::checkpoint::{self, write_synced};
use crate::train::{TrainProgress, TrainState, RUN_TOKENIZER};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The transformers folder (config.json + safetensors weights).
    pub dir: PathBuf,
    /// The run folder to write.
    pub out: PathBuf,
    /// Replace a non-empty `out`.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub mapping: HfMapping,
    pub params: usize,
    pub checkpoint: PathBuf,
    /// Tensors of the folder that cram's model has no place for.
    pub ignored: Vec<String>,
    /// What the user should know about the conversion.
    pub notes: Vec<String>,
}

pub fn import_hf(opts: &ImportOptions) -> Result<ImportSummary, ExportError> {
    let hf = HfConfig::read(&opts.dir)?;
    let (mapping, model_cfg) = model_config(&hf)?;
    let config = run_config(mapping, model_cfg, &hf.path)?;
    let mut tensors = read_hf_weights(&opts.dir)?;
    let mut notes = Vec::new();
    if mapping == HfMapping::Bert && bert::fold_token_types(&mut tensors) {
        notes.push(
            "the token-type-0 embedding was added to every position embedding \
             (cram feeds no token types); rows for types 1 and up were dropped"
                .to_string(),
        );
    }
    let model = Model::new(&config.model);
    let weights = opts.dir.join(WEIGHTS_FILE);
    let (params, ignored) =
        mapping
            .name_map(&config.model)
            .import(&model, &tensors, &weights, mapping.class())?;

    check_out_dir(&opts.out, opts.force)?;
    let staging = StagingDir::create(&opts.out)?;
    let run = staging.path().to_path_buf();
    let run = run.as_path();
    write_synced(&run.join("config.toml"), config.to_toml().as_bytes())?;
    let tokenizer = opts.dir.join("tokenizer.json");
    if tokenizer.is_file() {
        let bytes = std::fs::read(&tokenizer).map_err(ExportError::read(&tokenizer))?;
        write_synced(&run.join(RUN_TOKENIZER), &bytes)?;
    } else {
        notes.push(format!(
            "{} has no tokenizer.json; prepare data with `cram data prepare --tokenizer FILE` \
             using the model's tokenizer before training on",
            opts.dir.display()
        ));
    }
    let be = Cpu::new();
    let n = model.num_params();
    let state = TrainState {
        weights: Weights::new(&be, &params, model.layout.decay_len),
        progress: TrainProgress::default(),
    };
    let staged = checkpoint::save(&be, run, &model, &state)?;
    let checkpoint = opts.out.join(staged.strip_prefix(run).unwrap_or(&staged));
    staging.commit()?;
    Ok(ImportSummary {
        mapping,
        params: n,
        checkpoint,
        ignored,
        notes,
    })
}

/// The mapping named by `model_type` and the cram model config it describes.
fn model_config(hf: &HfConfig) -> Result<(HfMapping, ModelConfig), ExportError> {
    match hf.str("model_type") {
        Some("bert") => Ok((HfMapping::Bert, bert::model_config(hf)?)),
        Some("llama") => Ok((HfMapping::Llama, llama::model_config(hf)?)),
        Some("crammed-bert") => Ok((HfMapping::Crammed, crammed_config(hf)?)),
        other => Err(ExportError::config(
            &hf.path,
            format!(
                "\"model_type\" is {}; cram imports \"bert\" (BertForMaskedLM), \"llama\" \
                 (LlamaForCausalLM) and \"crammed-bert\" (its own export)",
                other.map_or("missing".into(), |t| format!("\"{t}\""))
            ),
        )),
    }
}

fn crammed_config(hf: &HfConfig) -> Result<ModelConfig, ExportError> {
    let mut cfg = preset_model("crammed-bert");
    cfg.vocab_size = hf.usize("vocab_size")?;
    cfg.hidden = hf.usize("hidden_size")?;
    cfg.layers = hf.usize("num_hidden_layers")?;
    cfg.heads = hf.usize("num_attention_heads")?;
    cfg.ffn = hf.usize("intermediate_size")?;
    cfg.max_positions = hf.usize("max_position_embeddings")?;
    cfg.norm_eps = hf.f32_or("layer_norm_eps", cfg.norm_eps)?;
    cfg.init_std = hf.f32_or("initializer_range", cfg.init_std)?;
    cfg.positions = match hf.str("position_embedding_type") {
        None | Some("scaled-sinusoidal") => Positions::ScaledSinusoidal,
        Some("rotary") => Positions::Rotary,
        Some(other) => {
            return Err(ExportError::config(
                &hf.path,
                format!(
                    "\"position_embedding_type\" is \"{other}\"; cram's own export writes \
                     \"scaled-sinusoidal\" or \"rotary\""
                ),
            ))
        }
    };
    cfg.rope_theta = hf.f32_or("rope_theta", cfg.rope_theta)?;
    Ok(cfg)
}

/// The whole run config: the mapping's preset (objective, data, training)
/// around the imported model, with the data shaped to fit it.
fn run_config(mapping: HfMapping, model: ModelConfig, path: &Path) -> Result<Config, ExportError> {
    let mut config = Config::resolve(mapping.presets()[0], &[]).expect("embedded presets resolve");
    config.data.vocab_size = model.vocab_size;
    config.data.seq_len = config.data.seq_len.min(model.max_positions);
    config.model = model;
    config.validate().map_err(|e| {
        ExportError::config(path, format!("describes a model cram cannot build: {e}"))
    })?;
    Ok(config)
}
