//! `cram eval`: held-out loss and accuracy of a run's checkpoint.

use crate::backend::{select_device, Device, DeviceChoice};
use crate::data::batches::Objective;
use crate::data::{Split, TokenStore};
use crate::eval::{check_data_fits, evaluate, full_eval_batches, unigram_cross_entropy};
use crate::model::Activations;
use crate::on_device;
use crate::train::load_run;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run folder written by `cram pretrain`.
    #[arg(long)]
    run: PathBuf,
    /// Prepared data whose validation split to use.
    #[arg(long)]
    data: PathBuf,
    /// Checkpoint step (default: the newest).
    #[arg(long)]
    step: Option<u64>,
    /// Micro-batches to evaluate (default: the whole held-out split, or its
    /// first 4096 sequences when it is larger; each sequence counts once).
    #[arg(long)]
    batches: Option<usize>,
    /// Where to evaluate: the GPU when one is usable (auto), or the one named.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let store = TokenStore::open(&args.data)
        .with_context(|| format!("cannot open prepared data {}", args.data.display()))?;
    if args.batches == Some(0) {
        anyhow::bail!("--batches 0 evaluates nothing; give at least 1, or leave it out to score the whole held-out split");
    }
    let (device, note) = select_device(args.device)?;
    let (checkpoint, r) = on_device!(&device, |be| {
        let run = load_run(be, &args.run, args.step)?;
        let cfg = &run.config;
        check_data_fits(&store, cfg, &args.data, &args.run).map_err(anyhow::Error::msg)?;
        let objective = Objective::for_store(&cfg.objective, &store)?;
        let mut acts = Activations::new(be, &cfg.model, cfg.train.micro_batch, store.seq_len());
        let batches = args
            .batches
            .unwrap_or_else(|| full_eval_batches(&store, cfg.train.micro_batch));
        let r = evaluate(
            be,
            &run.model,
            &run.params,
            &mut acts,
            &store,
            &objective,
            batches,
            cfg.train.seed,
        );
        // A failed device reads as NaN: say why instead of printing it.
        be.check().map_err(|e| {
            anyhow::anyhow!(
                "{e} (the evaluation runs micro-batches of the run's train.micro_batch, {})",
                cfg.train.micro_batch
            )
        })?;
        (run.checkpoint, r)
    });
    // Said after the evaluation, so that an error is the first line a failed run prints.
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!("device: {}", device.name());
    println!("checkpoint:              {}", checkpoint.display());
    println!(
        "held-out loss:           {:.4} nats/token ({} predictions on {} of {} held-out sequences)",
        r.loss,
        r.predictions,
        r.sequences,
        store.len(Split::Val)
    );
    println!("held-out accuracy:       {:.4}", r.accuracy);
    println!(
        "unigram cross-entropy:   {:.4} nats/token",
        unigram_cross_entropy(&store)
    );
    Ok(())
}
