//! `cram data prepare`, `cram data stats` and `cram data stream`: flags, the call into
//! `crate::data`, and the tables printed at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::data::{
    prepare_timed, InputSpec, Manifest, PrepareOptions, Split, StageTiming, TokenStore,
};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum DataCommand {
    /// Clean, deduplicate and filter raw text, train a tokenizer on it and
    /// write it as token shards ready for pretraining.
    Prepare(Box<PrepareArgs>),
    /// Show what a prepared folder holds: every stage and filter that made
    /// it, with the documents it dropped, and its splits.
    Stats(StatsArgs),
    /// Write the masked sequences a run reads (training order and masks, or
    /// the validation split with the evaluation's masks) for a trainer
    /// outside cram, such as the PyTorch reference of bench/quality_ab.py.
    Stream(StreamArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// A file or folder (read recursively) of plain text or JSON Lines
    /// (.jsonl/.ndjson/.json), raw or compressed (.gz, .zst); repeat for
    /// more inputs. PATH:WEIGHT mixes the inputs by these shares of text
    /// (give every input a weight, or none).
    #[arg(long = "input", value_name = "PATH[:WEIGHT]", required = true)]
    pub inputs: Vec<String>,
    /// The folder to write tokenizer.json, manifest.json and the shards into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The preset whose [data] section and train.seed give the defaults.
    #[arg(long, value_name = "NAME", default_value = "crammed-bert")]
    pub preset: String,
    /// Override a config key, e.g. --set data.near_dup_threshold=0.9. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// JSON Lines: the field holding the text (default: data.text_field).
    #[arg(long, value_name = "NAME")]
    pub text_field: Option<String>,
    /// Plain text: documents are separated by blank lines, are single lines,
    /// or are whole files (default: data.text_split).
    #[arg(long, value_name = "HOW", value_parser = ["blank-line", "line", "file"])]
    pub text_split: Option<String>,
    /// Train a WordPiece (encoders) or byte-level BPE (decoders) tokenizer
    /// (default: data.tokenizer).
    #[arg(long, value_name = "KIND", value_parser = ["wordpiece", "bpe"])]
    pub tokenizer_kind: Option<String>,
    /// Vocabulary size to train (default: data.vocab_size).
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<usize>,
    /// Megabytes of cleaned train text to train the tokenizer on (default:
    /// data.tokenizer_sample_mb).
    #[arg(long, value_name = "MB")]
    pub tokenizer_sample_mb: Option<u64>,
    /// Reuse this tokenizer.json instead of training one.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per sequence (default: data.seq_len).
    #[arg(long, value_name = "N")]
    pub seq_len: Option<usize>,
    /// Fraction of documents held out for validation (default: data.val_fraction).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Seed of the split, the mix and the tokenizer sample (default: train.seed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Replace the output folder if it holds something.
    #[arg(long, alias = "force")]
    pub overwrite: bool,
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

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// A folder written by `cram data prepare`.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The folder to write inputs.bin, targets.bin and stream.json into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The preset whose objective, train.seed and data.keep_order decide
    /// the masks and the order, as in `cram pretrain`.
    #[arg(long, value_name = "NAME", default_value = "crammed-bert")]
    pub preset: String,
    #[command(flatten)]
    pub set: super::SetArgs,
    /// `train`: the training stream from its start (epochs wrap);
    /// `val`: the held-out sequences as `cram eval` masks them.
    #[arg(long, value_name = "SPLIT", default_value = "train", value_parser = ["train", "val"])]
    pub split: String,
    /// How many sequences to write (default: the whole split, once).
    #[arg(long, value_name = "N")]
    pub sequences: Option<usize>,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Prepare(args) => run_prepare(&args),
        DataCommand::Stats(args) => run_stats(&args),
        DataCommand::Stream(args) => run_stream(&args),
    }
}

fn run_stream(args: &StreamArgs) -> Result<()> {
    let config = Config::resolve(&args.preset, &args.set.sets)
        .with_context(|| format!("cannot resolve preset '{}'", args.preset))?;
    let store = TokenStore::open(&args.data)
        .with_context(|| format!("cannot open prepared data {}", args.data.display()))?;
    let split = if args.split == "val" {
        Split::Val
    } else {
        Split::Train
    };
    let objective = crate::data::batches::Objective::for_store(&config.objective, &store)?;
    let spec = crate::data::StreamSpec {
        split,
        sequences: args.sequences.unwrap_or(store.len(split)),
        seed: config.train.seed,
        keep_order: config.data.keep_order,
    };
    let start = Instant::now();
    let info = crate::data::write_stream(&store, &objective, spec, &args.out)
        .with_context(|| format!("cannot write the stream into {}", args.out.display()))?;
    println!(
        "{} {} sequences of {} tokens ({} masked each{}) written to {} in {:.1} s",
        info.sequences,
        info.split,
        info.seq_len,
        info.masks_per_sequence,
        if info.keep_order {
            ", stored order"
        } else {
            ""
        },
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_prepare(args: &PrepareArgs) -> Result<()> {
    let opts = prepare_options(args)?;
    let start = Instant::now();
    let prepared = prepare_timed(&opts)
        .with_context(|| format!("cannot prepare data into {}", opts.out.display()))?;
    let manifest = &prepared.manifest;
    print_stages(manifest);
    println!();
    print_splits(manifest);
    println!();
    print_timings(&prepared.timings);
    for warning in &prepared.warnings {
        eprintln!("warning: {warning}");
    }
    print_summary(manifest, &opts.out, start.elapsed());
    Ok(())
}

/// The preset's data settings, with the explicit flags winning.
fn prepare_options(args: &PrepareArgs) -> Result<PrepareOptions> {
    let mut sets = args.sets.clone();
    let flags = [
        ("data.text_split", args.text_split.clone()),
        ("data.tokenizer", args.tokenizer_kind.clone()),
    ];
    sets.extend(
        flags
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| format!("{key}={v}"))),
    );
    let config = Config::resolve(&args.preset, &sets)
        .with_context(|| format!("cannot resolve preset '{}'", args.preset))?;
    let inputs = args
        .inputs
        .iter()
        .map(|text| InputSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = PrepareOptions::from_config(inputs, args.out.clone(), &config);
    if let Some(field) = &args.text_field {
        opts.text_field = field.clone();
    }
    opts.vocab_size = args.vocab_size.unwrap_or(opts.vocab_size);
    if let Some(mb) = args.tokenizer_sample_mb {
        opts.tokenizer_sample_bytes = mb << 20;
    }
    opts.tokenizer = args.tokenizer.clone();
    opts.seq_len = args.seq_len.unwrap_or(opts.seq_len);
    opts.val_fraction = args.val_fraction.unwrap_or(opts.val_fraction);
    opts.seed = args.seed.unwrap_or(opts.seed);
    opts.overwrite = args.overwrite;
    opts.progress = !args.quiet;
    Ok(opts)
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
        "sequences: {} tokens ({}), [CLS] first: {}; train order: {}; seed {}; {}",
        manifest.seq_len,
        manifest.dtype,
        manifest.cls_first,
        manifest.sorted_by.as_deref().unwrap_or("as packed"),
        manifest.seed,
        manifest.created_by
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

/// Every stage with what it dropped; settings and numbers as key=value;
/// per-input lists (the mix) as a table of their own.
fn print_stages(manifest: &Manifest) {
    let rows: Vec<Vec<String>> = manifest
        .stages
        .iter()
        .map(|stage| {
            let details: Vec<String> = stage
                .stats
                .iter()
                .filter(|(k, v)| !v.is_array() && !v.is_object() && k.as_str() != "dropped")
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    serde_json::Value::Number(n) if n.is_f64() => {
                        format!("{k}={}", round_float(n.as_f64().unwrap_or(0.0)))
                    }
                    _ => format!("{k}={v}"),
                })
                .collect();
            let dropped = stage.docs_in.saturating_sub(stage.docs_out);
            let share = if stage.docs_in > 0 {
                format!("{:.2}%", 100.0 * dropped as f64 / stage.docs_in as f64)
            } else {
                "-".into()
            };
            vec![
                stage.name.clone(),
                thousands(stage.docs_in),
                thousands(stage.docs_out),
                thousands(dropped),
                share,
                details.join(" "),
            ]
        })
        .collect();
    print_table(
        &[
            "stage",
            "docs in",
            "docs out",
            "dropped",
            "dropped %",
            "details",
        ],
        &rows,
        true,
    );
    for stage in &manifest.stages {
        if let Some(inputs) = stage.stats.get("inputs").and_then(|v| v.as_array()) {
            println!();
            print_mix(inputs);
        }
    }
}

/// The mix stage's per-input table.
fn print_mix(inputs: &[serde_json::Value]) {
    let field = |v: &serde_json::Value, key: &str| v.get(key).cloned().unwrap_or_default();
    let number = |v: &serde_json::Value, key: &str| field(v, key).as_u64().unwrap_or(0);
    let float = |v: &serde_json::Value, key: &str| field(v, key).as_f64();
    let rows: Vec<Vec<String>> = inputs
        .iter()
        .map(|input| {
            vec![
                field(input, "path").as_str().unwrap_or("").to_string(),
                float(input, "weight").map_or("-".into(), |w| w.to_string()),
                thousands(number(input, "documents")),
                thousands(number(input, "kept_documents")),
                format!("{:.1}", number(input, "kept_bytes") as f64 / 1e6),
                format!("{:.3}", float(input, "share").unwrap_or(0.0)),
            ]
        })
        .collect();
    print_table(
        &["input", "weight", "documents", "kept", "kept MB", "share"],
        &rows,
        false,
    );
}

/// Seconds and throughput of each pass of this run.
fn print_timings(timings: &[StageTiming]) {
    let rows: Vec<Vec<String>> = timings
        .iter()
        .map(|t| {
            vec![
                t.stage.to_string(),
                format!("{:.1}", t.bytes as f64 / 1e6),
                if t.reused {
                    "reused".into()
                } else {
                    format!("{:.2}", t.seconds)
                },
                if t.reused {
                    "-".into()
                } else {
                    format!("{:.1}", t.mb_per_s())
                },
            ]
        })
        .collect();
    print_table(&["pass", "MB", "seconds", "MB/s"], &rows, false);
}

fn round_float(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
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
    use crate::data::{TextSplit, TokenizerKind};

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
            inputs: vec!["a.txt".into(), "b/:3".into()],
            out: "out".into(),
            preset: "tiny".into(),
            sets: vec![
                "data.shard_sequences=100".into(),
                "train.seed=9".into(),
                "data.tokenizer=bpe".into(),
                "data.near_dup=false".into(),
            ],
            text_field: Some("body".into()),
            text_split: Some("line".into()),
            tokenizer_kind: Some("wordpiece".into()),
            vocab_size: Some(1000),
            tokenizer_sample_mb: Some(3),
            tokenizer: None,
            seq_len: None,
            val_fraction: None,
            seed: None,
            overwrite: false,
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
        assert!(opts.cls_first && !opts.progress && opts.unigram_sort);
        assert_eq!(
            opts.tokenizer_kind,
            TokenizerKind::Wordpiece,
            "the flag wins"
        );
        assert_eq!(
            (opts.text_field.as_str(), opts.text_split),
            ("body", TextSplit::Line)
        );
        assert_eq!(
            (opts.near_dup_threshold, opts.tokenizer_sample_bytes),
            (None, 3 << 20)
        );
        assert_eq!(opts.inputs[1].weight, Some(3.0));
        let decoder = PrepareArgs {
            preset: "gpt-small".into(),
            sets: vec![],
            tokenizer_kind: None,
            ..args
        };
        let decoder = prepare_options(&decoder).unwrap();
        assert!(!decoder.cls_first && !decoder.unigram_sort);
        assert_eq!(decoder.tokenizer_kind, TokenizerKind::Bpe);
    }
}
