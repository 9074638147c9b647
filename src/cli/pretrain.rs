//! `cram pretrain`: train a preset on prepared data under a budget.

use super::{DistArgs, SetArgs};
use crate::backend::cuda::visible_gpus;
use crate::backend::DeviceChoice;
use crate::config::Config;
use crate::data::TokenStore;
use crate::launch::{self, launch_local_workers, Mode};
use crate::parallel::DistEnv;
use crate::train::{fit_to_data, Progress, RunOptions};
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Preset to start from (see `cram config list`); a resumed run uses its saved config.
    #[arg(long)]
    preset: Option<String>,
    /// Folder written by `cram data prepare`.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: config.toml, metrics.jsonl, checkpoints/.
    #[arg(long)]
    out: PathBuf,
    /// Budget: a time (90s, 30m, 24h), tokens (50M tokens), FLOPs (1e18 flops) or steps (500 steps).
    // A leading '-' is taken as the value, so that `--budget -5s` gets the
    // budget's own error rather than "unexpected argument".
    #[arg(long, allow_hyphen_values = true)]
    budget: Option<String>,
    /// Seed of the initial weights, the data order, the masks and dropout
    /// (the same as --set train.seed=N).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    set: SetArgs,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many optimizer steps with a checkpoint, as if preempted; --resume continues.
    #[arg(long, value_name = "STEPS")]
    stop_after_steps: Option<u64>,
    /// No progress: neither the bar (on a terminal) nor the plain line printed
    /// every 30 s when the output is a file or a pipe.
    #[arg(long)]
    quiet: bool,
    /// Where to train: the GPU when one is usable (auto), or the one named.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Log the gradient noise scale B_simple (critical batch size estimate) in metrics.jsonl.
    #[arg(long)]
    measure_noise_scale: bool,
    #[command(flatten)]
    dist: DistArgs,
    /// Data parallel over this many ranks as threads of this process, on the
    /// CPU (the CPU twin of --gpus, for checking the data-parallel path).
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    let launched = DistEnv::from_env()?;
    if let Some(gpus) = args.dist.gpus {
        if launched.is_some() {
            bail!("--gpus starts its own workers; under a launcher that sets RANK and WORLD_SIZE, leave it out");
        }
        if args.ranks.is_some() {
            bail!("--gpus and --ranks exclude each other");
        }
        return launch_local_workers(gpus, || {
            visible_gpus().context("--gpus trains one worker per GPU")
        });
    }
    let mode = match (launched, args.ranks) {
        (Some(_), Some(_)) => bail!(
            "--ranks runs the ranks as threads of one process; under a launcher, leave it out"
        ),
        (Some(_), None) if args.device == DeviceChoice::Cpu => bail!(
            "a launched rank trains on its GPU (LOCAL_RANK); --device cpu has no collectives between processes (use --ranks)"
        ),
        (Some(env), None) => Mode::Rank(env),
        (None, Some(_)) if args.device != DeviceChoice::Cpu => {
            bail!("--ranks runs on the CPU; pass --device cpu (for GPUs use --gpus)")
        }
        (None, Some(ranks)) => Mode::Threads(ranks),
        (None, None) => Mode::Single(args.device),
    };
    let mut sets = args.set.sets.clone();
    if let Some(b) = &args.budget {
        sets.push(format!("train.budget={b}"));
    }
    if let Some(seed) = args.seed {
        sets.push(format!("train.seed={seed}"));
    }
    let mut cfg = match (&args.preset, args.resume) {
        (Some(p), _) => Config::resolve(p, &sets)?,
        (None, true) => {
            let path = args.out.join("config.toml");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot resume: no config at {}", path.display()))?;
            Config::from_toml_with_overrides(&text, &sets)?
        }
        (None, false) => bail!(
            "name a preset with --preset (one of: {})",
            crate::config::preset_names().join(", ")
        ),
    };
    let store = TokenStore::open(&args.data)
        .with_context(|| format!("cannot open prepared data {}", args.data.display()))?;
    for note in fit_to_data(&mut cfg, &store)? {
        eprintln!("note: {note}");
    }
    let opts = RunOptions {
        resume: args.resume,
        stop_after_steps: args.stop_after_steps,
        // The trainer shows it on rank 0 only.
        progress: Progress::for_stderr(args.quiet),
        measure_noise_scale: args.measure_noise_scale,
        ..RunOptions::new(&args.out)
    };
    let Some(summary) = launch::pretrain(&cfg, &store, &opts, &mode, args.dist.group()?)? else {
        return Ok(());
    };
    println!(
        "{} after {} steps, {} tokens, {:.1}s; last training loss {:.4}",
        if summary.finished {
            "budget spent"
        } else {
            "stopped"
        },
        summary.steps,
        summary.tokens,
        summary.seconds,
        summary.final_loss
    );
    if let Some(e) = summary.eval {
        println!(
            "held-out loss {:.4}, accuracy {:.4} ({} predictions)",
            e.loss, e.accuracy, e.predictions
        );
    }
    println!("checkpoint: {}", summary.checkpoint.display());
    Ok(())
}
