//! `cram glue`: fine-tune a run's checkpoint on the GLUE tasks of a folder,
//! print the paper-style table, and write `glue.json` and `glue.md` into the
//! run folder.

use crate::backend::{select_device, DeviceChoice};
use crate::config::ScheduleKind;
use crate::data::{load_tokenizer, special_tokens};
use crate::eval::glue::{plan, run_glue, GlueOptions, Protocol, Recipe, Task};
use crate::on_device;
use crate::train::{load_run, RUN_TOKENIZER};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Learning-rate decay after the warm-up.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Decay {
    /// Half a cosine from the peak to 0.
    Cosine,
    /// A straight line from the peak to 0.
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
    /// The named protocol whose recipe the flags below start from; the table
    /// names it (and any flag that changed it).
    #[arg(long, value_enum, default_value = "cramming-paper")]
    protocol: Protocol,
    /// Epochs of every task (the large tasks' own count of the protocol too).
    #[arg(long)]
    epochs: Option<usize>,
    /// Examples per optimizer step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Fraction of the steps spent warming up.
    #[arg(long)]
    warmup: Option<f64>,
    /// Shape of the learning rate after the warm-up, down to 0 at the last step.
    #[arg(long, value_enum)]
    decay: Option<Decay>,
    /// AdamW's decoupled weight decay, on the tensors pretraining decays.
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Clip the global gradient norm to this value (0: off).
    #[arg(long)]
    max_norm: Option<f32>,
    /// Dropout in the backbone and the head while fine-tuning.
    #[arg(long)]
    dropout: Option<f32>,
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

/// The protocol's recipe with the flags applied, and the protocol's name with
/// the flags that changed it ("cramming-short with --lr 5e-5").
fn recipe_of(args: &GlueArgs) -> (Recipe, String) {
    let mut r = args.protocol.recipe();
    let mut changed = Vec::new();
    let mut note = |flag: &str, value: String| changed.push(format!("{flag} {value}"));
    if let Some(e) = args.epochs {
        (r.epochs, r.large_task_epochs) = (e, None);
        note("--epochs", e.to_string());
    }
    if let Some(b) = args.batch_size {
        r.batch_size = b;
        note("--batch-size", b.to_string());
    }
    if let Some(lr) = args.lr {
        r.lr = lr;
        note("--lr", format!("{lr:e}"));
    }
    if let Some(w) = args.warmup {
        r.warmup = w;
        note("--warmup", w.to_string());
    }
    if let Some(d) = args.decay {
        r.schedule = match d {
            Decay::Cosine => ScheduleKind::Cosine,
            Decay::Linear => ScheduleKind::Linear,
        };
        note("--decay", format!("{d:?}").to_lowercase());
    }
    if let Some(wd) = args.weight_decay {
        r.weight_decay = wd;
        note("--weight-decay", wd.to_string());
    }
    if let Some(m) = args.max_norm {
        r.max_norm = m;
        note("--max-norm", m.to_string());
    }
    if let Some(d) = args.dropout {
        r.dropout = d;
        note("--dropout", d.to_string());
    }
    let name = args.protocol.name();
    let label = if changed.is_empty() {
        name.to_string()
    } else {
        format!("{name} with {}", changed.join(", "))
    };
    (r, label)
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
    let (recipe, protocol) = recipe_of(&args);
    let opts = GlueOptions {
        protocol,
        recipe,
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
