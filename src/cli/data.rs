//! `cram data prepare` and `cram data stats`: flags, the call into
//! `crate::data`, and the tables printed at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Arch, Config};
use crate::data::{prepare, Manifest, PrepareOptions, Split, TokenStore};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Train a WordPiece tokenizer on raw text and write it as token shards
    /// ready for pretraining.
    Prepare(PrepareArgs),
    /// Show what a prepared folder holds: its splits and the stages that made it.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// A UTF-8 text file, or a folder of them (read recursively); documents
    /// are separated by blank lines. Repeat for more inputs.
    #[arg(long = "input", value_name = "PATH", required = true)]
    pub inputs: Vec<PathBuf>,
    /// The folder to write tokenizer.json, manifest.json and the shards into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The preset whose [data] section and train.seed give the defaults.
    #[arg(long, value_name = "NAME", default_value = "crammed-bert")]
    pub preset: String,
    /// Override a config key, e.g. --set data.shard_sequences=4096. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Vocabulary size to train (default: data.vocab_size).
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<usize>,
    /// Tokens per sequence (default: data.seq_len).
    #[arg(long, value_name = "N")]
    pub seq_len: Option<usize>,
    /// Fraction of documents held out for validation (default: data.val_fraction).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Reuse this tokenizer.json instead of training one.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Seed of the train/validation split (default: train.seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Overwrite the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// No progress bars and no sample sequence.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// A folder written by `cram data prepare`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Also recompute every shard's sha256 and compare it with the manifest.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Prepare(args) => run_prepare(&args),
        DataCommand::Stats(args) => run_stats(&args),
    }
}

fn run_prepare(args: &PrepareArgs) -> Result<()> {
    let opts = prepare_options(args)?;
    let start = Instant::now();
    let manifest = prepare(&opts)
        .with_context(|| format!("cannot prepare data into {}", opts.out.display()))?;
    print_splits(&manifest);
    print_summary(&manifest, &opts.out, start.elapsed());
    Ok(())
}

/// The preset's data settings, with the explicit flags winning.
fn prepare_options(args: &PrepareArgs) -> Result<PrepareOptions> {
    let config = Config::resolve(&args.preset, &args.sets)
        .with_context(|| format!("cannot resolve preset '{}'", args.preset))?;
    let data = &config.data;
    Ok(PrepareOptions {
        inputs: args.inputs.clone(),
        out: args.out.clone(),
        vocab_size: args.vocab_size.unwrap_or(data.vocab_size),
        seq_len: args.seq_len.unwrap_or(data.seq_len),
        val_fraction: args.val_fraction.unwrap_or(data.val_fraction),
        shard_sequences: data.shard_sequences,
        seed: args.seed.unwrap_or(config.train.seed),
        tokenizer: args.tokenizer.clone(),
        cls_first: config.model.arch == Arch::Encoder,
        force: args.force,
        progress: !args.quiet,
    })
}

fn run_stats(args: &StatsArgs) -> Result<()> {
    let store = TokenStore::open(&args.dir)
        .with_context(|| format!("cannot open prepared data {}", args.dir.display()))?;
    if args.verify {
        store
            .verify()
            .with_context(|| format!("verifying {}", args.dir.display()))?;
    }
    let manifest = store.manifest();
    print_stages(manifest);
    println!();
    print_splits(manifest);
    let t = &manifest.tokenizer;
    println!(
        "\ntokenizer: {} {}, {} ids, lowercase {}, sha256 {}",
        t.file, t.kind, t.vocab_size, t.lowercase, t.sha256
    );
    println!(
        "sequences: {} tokens ({}), [CLS] first: {}; seed {}; {}",
        manifest.seq_len, manifest.dtype, manifest.cls_first, manifest.seed, manifest.created_by
    );
    if args.verify {
        println!("every shard matches its sha256");
    }
    Ok(())
}

fn print_splits(manifest: &Manifest) {
    let rows: Vec<Vec<String>> = Split::ALL
        .iter()
        .map(|&split| {
            let s = manifest.splits.get(split);
            vec![
                split.name().to_string(),
                thousands(s.documents),
                thousands(s.sequences),
                thousands(s.tokens),
                thousands(s.padding),
                s.shards.len().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "split",
            "documents",
            "sequences",
            "tokens",
            "padding",
            "shards",
        ],
        &rows,
        false,
    );
}

fn print_stages(manifest: &Manifest) {
    let rows: Vec<Vec<String>> = manifest
        .stages
        .iter()
        .map(|stage| {
            let details: Vec<String> = stage
                .stats
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            vec![
                stage.name.clone(),
                thousands(stage.docs_in),
                thousands(stage.docs_out),
                details.join(" "),
            ]
        })
        .collect();
    print_table(&["stage", "docs in", "docs out", "details"], &rows, true);
}

fn print_summary(manifest: &Manifest, out: &Path, took: Duration) {
    let t = &manifest.tokenizer;
    println!(
        "vocab size {} ({} shards), seq_len {}, [CLS] first: {}; took {:.1} s; wrote {}",
        t.vocab_size,
        manifest.dtype,
        manifest.seq_len,
        manifest.cls_first,
        took.as_secs_f64(),
        out.display()
    );
}

/// Prints rows under a header: the first column left-aligned (names), the
/// others right-aligned (numbers), except a last column of free text.
fn print_table(header: &[&str], rows: &[Vec<String>], last_is_text: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = header.len() - 1;
    let line = |cells: Vec<&str>| {
        let formatted: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| match i {
                0 => format!("{cell:<w$}"),
                i if i == last && last_is_text => cell.to_string(),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        println!("{}", formatted.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn flags_win_over_the_preset() {
        let args = PrepareArgs {
            inputs: vec!["a.txt".into()],
            out: "out".into(),
            preset: "tiny".into(),
            sets: vec!["data.shard_sequences=100".into(), "train.seed=9".into()],
            vocab_size: Some(1000),
            seq_len: None,
            val_fraction: None,
            tokenizer: None,
            seed: None,
            force: false,
            quiet: true,
        };
        let opts = prepare_options(&args).unwrap();
        assert_eq!(
            (
                opts.vocab_size,
                opts.seq_len,
                opts.shard_sequences,
                opts.seed
            ),
            (1000, 32, 100, 9)
        );
        assert!(opts.cls_first && !opts.progress);
        let decoder = PrepareArgs {
            preset: "gpt-small".into(),
            sets: vec![],
            ..args
        };
        assert!(!prepare_options(&decoder).unwrap().cls_first);
    }
}
