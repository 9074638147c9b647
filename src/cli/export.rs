//! `cram export hf`: a run's checkpoint as a Hugging Face transformers folder.

use crate::export::{export_hf, ExportOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    format: ExportFormat,
}

#[derive(clap::Subcommand, Debug)]
enum ExportFormat {
    /// Hugging Face transformers: config.json, model.safetensors, tokenizer files, model card.
    Hf(HfArgs),
}

#[derive(clap::Args, Debug)]
struct HfArgs {
    /// Run folder written by `cram pretrain` or `cram import hf`.
    #[arg(long)]
    run: PathBuf,
    /// Checkpoint step (default: the newest).
    #[arg(long)]
    step: Option<u64>,
    /// Folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Prepared data folder to take the tokenizer from (for runs that hold no tokenizer.json).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace --out if it exists and is not empty.
    #[arg(long = "overwrite", alias = "force")]
    force: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Hf(a) = args.format;
    let summary = export_hf(&ExportOptions {
        run: a.run,
        step: a.step,
        out: a.out.clone(),
        data: a.data,
        force: a.force,
    })?;
    println!(
        "exported {} as {} ({} tensors) to {}: {}",
        summary.checkpoint.display(),
        summary.mapping.class(),
        summary.tensors,
        a.out.display(),
        summary.files.join(", ")
    );
    Ok(())
}
