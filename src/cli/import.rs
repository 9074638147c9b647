//! `cram import hf`: a Hugging Face transformers folder as a cram run folder.

use crate::export::{import_hf, ImportOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(subcommand)]
    format: ImportFormat,
}

#[derive(clap::Subcommand, Debug)]
enum ImportFormat {
    /// A BertForMaskedLM or LlamaForCausalLM folder (config.json + safetensors weights).
    Hf(HfArgs),
}

#[derive(clap::Args, Debug)]
struct HfArgs {
    /// The transformers folder.
    dir: PathBuf,
    /// Run folder to write (config.toml, tokenizer.json, checkpoints/step-0).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists and is not empty.
    #[arg(long = "overwrite", alias = "force")]
    force: bool,
}

/// Ignored tensor names shown before the rest are counted.
const SHOW_IGNORED: usize = 8;

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let ImportFormat::Hf(a) = args.format;
    let summary = import_hf(&ImportOptions {
        dir: a.dir.clone(),
        out: a.out.clone(),
        force: a.force,
    })?;
    println!(
        "imported {} ({}, {} parameters) into {}",
        a.dir.display(),
        summary.mapping.class(),
        summary.params,
        summary.checkpoint.display()
    );
    if !summary.ignored.is_empty() {
        let shown = &summary.ignored[..summary.ignored.len().min(SHOW_IGNORED)];
        let more = summary.ignored.len() - shown.len();
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        eprintln!(
            "note: tensors cram's model has no place for, not imported: {}{more}",
            shown.join(", ")
        );
    }
    for note in &summary.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}
