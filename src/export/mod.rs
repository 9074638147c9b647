//! Hugging Face format out (`cram export hf`) and in (`cram import hf`).
//!
//! An export folder holds `config.json`, `model.safetensors` (transformers'
//! names and layouts, f32), the run's `tokenizer.json` with
//! `tokenizer_config.json` and `special_tokens_map.json`, a model card
//! `README.md`, and for crammed-bert the modeling file its `auto_map` names.
//! Which class a model becomes is decided in `mapping`; how its tensors are
//! renamed and split, in one table per class (`bert`, `llama`, `crammed`)
//! that the import reads backwards. Both directions write a staging folder
//! and rename it into place, so an output is whole or absent.

mod bert;
mod card;
mod crammed;
mod error;
mod hf_json;
mod import;
mod llama;
mod mapping;
mod names;
mod tensors;
mod tokenizer;

pub use error::ExportError;
pub use import::{import_hf, ImportOptions, ImportSummary};
pub use mapping::{HfMapping, SpecialIds};
pub use tensors::{
    read_hf_weights, read_safetensors, write_safetensors, Tensor, Tensors, WEIGHTS_FILE,
};

use crate::backend::cpu::Cpu;
use crate::backend::Device;
use crate::data::{check_out_dir, Manifest, StagingDir, MANIFEST_FILE};
use crate::train::checkpoint::write_synced;
use crate::train::{load_run, RUN_DATA_MANIFEST, RUN_TOKENIZER};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Run folder written by `cram pretrain` (or `cram import`).
    pub run: PathBuf,
    /// Checkpoint step; the newest when `None`.
    pub step: Option<u64>,
    pub out: PathBuf,
    /// Prepared data folder to take the tokenizer from, for runs without their own copy.
    pub data: Option<PathBuf>,
    /// Replace a non-empty `out`.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub mapping: HfMapping,
    pub checkpoint: PathBuf,
    pub tensors: usize,
    pub files: Vec<&'static str>,
}

/// Where the tokenizer and the data manifest of a run are.
struct DataFiles {
    tokenizer: PathBuf,
    manifest: Option<PathBuf>,
}

fn data_files(run: &Path, data: Option<&Path>) -> Result<DataFiles, ExportError> {
    if let Some(dir) = data {
        let manifest = Manifest::read(dir)?;
        return Ok(DataFiles {
            tokenizer: dir.join(&manifest.tokenizer.file),
            manifest: Some(dir.join(MANIFEST_FILE)),
        });
    }
    let tokenizer = run.join(RUN_TOKENIZER);
    if !tokenizer.is_file() {
        return Err(ExportError::NoTokenizer {
            run: run.to_path_buf(),
        });
    }
    let manifest = run.join(RUN_DATA_MANIFEST);
    Ok(DataFiles {
        tokenizer,
        manifest: manifest.is_file().then_some(manifest),
    })
}

/// Writes the Hugging Face folder of a run's checkpoint.
pub fn export_hf(opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    check_out_dir(&opts.out, opts.force)?;
    let be = Cpu::new();
    let run = load_run(&be, &opts.run, opts.step)?;
    let cfg = &run.config.model;
    let mapping = HfMapping::for_model(cfg).map_err(|details| ExportError::NoMapping {
        config: opts.run.join("config.toml"),
        details,
    })?;
    let files = data_files(&opts.run, opts.data.as_deref())?;
    let (tok, special) = tokenizer::load(&files.tokenizer)?;
    let tokenizer_vocab = crate::data::vocab_size(&tok);
    if tokenizer_vocab > cfg.vocab_size {
        return Err(ExportError::Tokenizer {
            path: files.tokenizer.clone(),
            cause: format!(
                "it has {tokenizer_vocab} ids but the model only {}; pass --data with the folder the run was trained on",
                cfg.vocab_size
            ),
        });
    }
    let tensors = mapping
        .name_map(cfg)
        .export(&run.model, &be.download(&run.params));

    let staging = StagingDir::create(&opts.out)?;
    let dir = staging.path();
    let mut written = vec![WEIGHTS_FILE, "config.json", "tokenizer.json"];
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    write_json(
        &dir.join("config.json"),
        &mapping.config_json(cfg, &special),
    )?;
    let tokenizer_bytes =
        std::fs::read(&files.tokenizer).map_err(ExportError::read(&files.tokenizer))?;
    write_synced(&dir.join("tokenizer.json"), &tokenizer_bytes)?;
    let (tok_config, specials) = tokenizer::config_files(mapping, &special, cfg.max_positions);
    write_json(&dir.join("tokenizer_config.json"), &tok_config)?;
    write_json(&dir.join("special_tokens_map.json"), &specials)?;
    written.extend(["tokenizer_config.json", "special_tokens_map.json"]);
    if mapping == HfMapping::Crammed {
        write_synced(
            &dir.join(crammed::MODELING_FILE),
            crammed::MODELING_SOURCE.as_bytes(),
        )?;
        written.push(crammed::MODELING_FILE);
    }
    let card = card::model_card(&card::CardFacts::gather(
        &opts.run,
        &run.checkpoint,
        &run.config,
        mapping,
        run.model.num_params(),
        files.manifest.as_deref(),
    ));
    write_synced(&dir.join("README.md"), card.as_bytes())?;
    written.push("README.md");
    staging.commit()?;
    Ok(ExportSummary {
        mapping,
        checkpoint: run.checkpoint,
        tensors: tensors.len(),
        files: written,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ExportError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    text.push('\n');
    Ok(write_synced(path, text.as_bytes())?)
}
