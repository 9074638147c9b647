//! `cram glue`: fine-tune a run's checkpoint on the GLUE tasks of a folder,
//! print the paper-style table, and write `glue.json` and `glue.md` into the
//! run folder.

use crate::backend::{select_device, DeviceChoice};
use crate::config::ScheduleKind;
use crate::data::{load_tokenizer, special_tokens};
use crate::eval::glue::{plan, run_glue, GlueOptions, Recipe, Task};
use crate::on_device;
use crate::train::{load_run, RUN_TOKENIZER};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Learning-rate decay after the warm-up.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Decay {
    Cosine,
    Linear,
}

#[derive(clap::Args, Debug)]
pub struct GlueArgs {
    /// Where to fine-tune: the GPU when one is usable (auto), or the one named.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Run folder written by `cram pretrain` (or `cram import hf`).
    #[arg(long)]
    run: PathBuf,
    /// Folder in the GLUE layout: CoLA/, SST-2/, MRPC/, QQP/, STS-B/, MNLI/, QNLI/, RTE/, WNLI/.
    #[arg(long)]
    glue_dir: PathBuf,
    /// Tasks to run, comma-separated (cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli); default: every task found.
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Fine-tune each task with seeds 0..N and report the median.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Checkpoint step (default: the newest).
    #[arg(long)]
    step: Option<u64>,
    #[arg(long, default_value_t = Recipe::default().epochs)]
    epochs: usize,
    #[arg(long, default_value_t = Recipe::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = Recipe::default().lr)]
    lr: f64,
    /// Fraction of the steps spent warming up.
    #[arg(long, default_value_t = Recipe::default().warmup)]
    warmup: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    decay: Decay,
    #[arg(long, default_value_t = Recipe::default().weight_decay)]
    weight_decay: f32,
    /// Clip the global gradient norm to this value (0: off).
    #[arg(long, default_value_t = Recipe::default().max_norm)]
    max_norm: f32,
    /// Dropout in the backbone and the head while fine-tuning.
    #[arg(long, default_value_t = Recipe::default().dropout)]
    dropout: f32,
    /// Train on a fixed sample of at most N examples of each task (for MNLI and QQP); reported in the table.
    #[arg(long, value_name = "N")]
    max_train_examples: Option<usize>,
    /// Tokens per example (default: the run's pretraining sequence length; at most model.max_positions).
    #[arg(long)]
    max_len: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: GlueArgs) -> anyhow::Result<()> {
    let requested = args
        .tasks
        .as_ref()
        .map(|names| names.iter().map(|n| Task::from_name(n)).collect())
        .transpose()?;
    let requested: Option<Vec<Task>> = requested;
    let plan = plan(&args.glue_dir, requested.as_deref())?;
    if plan.tasks.is_empty() {
        bail!(
            "no GLUE task in {} has all its files (e.g. {} is missing)",
            args.glue_dir.display(),
            plan.missing[0].file.display()
        );
    }
    let (device, note) = select_device(args.device)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!("device: {}", device.name());
    let tok_path = args.run.join(RUN_TOKENIZER);
    if !tok_path.is_file() {
        bail!(
            "{} holds no tokenizer.json, which GLUE needs to encode the sentences; copy the \
             tokenizer.json of the data the run was trained on into the run folder",
            args.run.display()
        );
    }
    let tokenizer = load_tokenizer(&tok_path)?;
    let special = special_tokens(&tokenizer, Some(&tok_path))?;
    let opts = GlueOptions {
        recipe: Recipe {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            warmup: args.warmup,
            schedule: match args.decay {
                Decay::Cosine => ScheduleKind::Cosine,
                Decay::Linear => ScheduleKind::Linear,
            },
            weight_decay: args.weight_decay,
            max_norm: args.max_norm,
            dropout: args.dropout,
            ..Recipe::default()
        },
        seeds: args.seeds,
        max_train_examples: args.max_train_examples,
        max_len: args.max_len,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let report = on_device!(&device, |be| {
        let run = load_run(be, &args.run, args.step)?;
        run_glue(be, &run, &tokenizer, special, plan, &opts)?
    });
    print!("{}", report.markdown());
    let (json, md) = report
        .write(&args.run)
        .context("cannot write the GLUE report")?;
    println!("\nwrote {} and {}", json.display(), md.display());
    Ok(())
}
