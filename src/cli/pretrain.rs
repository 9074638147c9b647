//! `cram pretrain`: train a preset on prepared data under a budget.

use super::SetArgs;
use crate::backend::{select_device, DeviceChoice};
use crate::config::Config;
use crate::data::TokenStore;
use crate::on_device;
use crate::train::{fit_to_data, pretrain, RunOptions};
use anyhow::{bail, Context};
use std::io::IsTerminal;
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
    #[arg(long)]
    budget: Option<String>,
    #[command(flatten)]
    set: SetArgs,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many optimizer steps with a checkpoint, as if preempted; --resume continues.
    #[arg(long, value_name = "STEPS")]
    stop_after_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Where to train: the GPU when one is usable (auto), or the one named.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Log the gradient noise scale B_simple (critical batch size estimate) in metrics.jsonl.
    #[arg(long)]
    measure_noise_scale: bool,
}

pub fn run(args: PretrainArgs) -> anyhow::Result<()> {
    let mut sets = args.set.sets.clone();
    if let Some(b) = &args.budget {
        sets.push(format!("train.budget={b}"));
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
    let (device, note) = select_device(args.device)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!("device: {}", device.name());
    let opts = RunOptions {
        out: args.out.clone(),
        resume: args.resume,
        stop_after_steps: args.stop_after_steps,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        measure_noise_scale: args.measure_noise_scale,
    };
    let summary = on_device!(&device, |be| pretrain(be, &cfg, &store, &opts))?;
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
