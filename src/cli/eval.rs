//! `cram eval`: held-out loss and accuracy of a run's checkpoint.

use crate::backend::cpu::Cpu;
use crate::data::batches::Objective;
use crate::data::TokenStore;
use crate::eval::{evaluate, unigram_cross_entropy};
use crate::model::Activations;
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
    /// Micro-batches to evaluate (default: the run's train.eval_batches).
    #[arg(long)]
    batches: Option<usize>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let store = TokenStore::open(&args.data)
        .with_context(|| format!("cannot open prepared data {}", args.data.display()))?;
    let be = Cpu::new();
    let run = load_run(&be, &args.run, args.step)?;
    let cfg = &run.config;
    let objective = Objective::for_store(&cfg.objective, &store)?;
    let mut acts = Activations::new(&be, &cfg.model, cfg.train.micro_batch, store.seq_len());
    let batches = args.batches.unwrap_or(cfg.train.eval_batches);
    let r = evaluate(
        &be,
        &run.model,
        &run.params,
        &mut acts,
        &store,
        &objective,
        batches,
        cfg.train.seed,
    );
    println!("checkpoint:              {}", run.checkpoint.display());
    println!(
        "held-out loss:           {:.4} nats/token ({} predictions)",
        r.loss, r.predictions
    );
    println!("held-out accuracy:       {:.4}", r.accuracy);
    println!(
        "unigram cross-entropy:   {:.4} nats/token",
        unigram_cross_entropy(&store)
    );
    Ok(())
}
