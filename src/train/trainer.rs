//! The pretraining loop: schedule → data → [`Step`] → hooks. Each step takes
//! the batch size and learning rate for the budget's progress, reads its
//! micro-batches and runs the one training step of [`super::step`]; the
//! hooks log (reading the device statistics back only then), evaluate,
//! checkpoint and guard against divergence.

use super::checkpoint::{self, CheckpointError, TrainState};
use super::guard::{Guard, Scene};
use super::metrics::{EvalRecord, MetricsWriter, NoiseRecord, Record, TrainRecord};
use super::noise::{NoiseMeter, NormPair};
pub use super::options::{RunOptions, RunSummary};
use super::progress::{duration_text, eta, Progress, Reporter};
use super::run_dir::{lock_run, prepare_run_dir, resume_from_start, resume_record};
use super::schedule;
use super::step::{micro_step, Step, StepError};
use crate::backend::{Backend, DeviceError};
use crate::config::Config;
use crate::data::batches::{read_sequences, MaskKey, Objective, Order};
use crate::data::{Split, TokenStore};
use crate::eval::evaluate;
use crate::model::{upload_batch, Activations, Model};
use crate::optim::{
    adamw, STATS, STAT_LOSS, STAT_NORM_SQ, STAT_PARAM_NORM_SQ, STAT_SKIPPED, STAT_SMALL_NORM_SQ,
};
use crate::parallel::{CommError, DataParallel, HostStaged, StepReducer};
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("data-parallel training stopped: {0}")]
    Comm(#[from] CommError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Run(String),
    /// The device failed (out of memory, a failed launch or kernel): what
    /// happened and, for memory, which settings to lower.
    #[error("{0}")]
    Device(String),
    #[error("the {what} became {value} at step {step}, so no checkpoint was written for it; resume from the last checkpoint with a lower learning rate (cram pretrain --resume --out RUN --set train.lr=...)")]
    Diverged {
        step: u64,
        what: &'static str,
        value: f64,
    },
}

/// A device failure as the user's error. Out of memory names the settings
/// that set a step's activation memory: the micro-batch (the batch stays
/// `train.batch_size` through gradient accumulation) and the sequence length.
fn device_error(e: DeviceError, cfg: &Config, seq: usize) -> TrainError {
    if e.is_size_limit() {
        return TrainError::Device(format!(
            "{e}; lower train.micro_batch (now {}: the batch stays train.batch_size = {} \
             through gradient accumulation) or the sequence length (now {seq}; \
             `cram data prepare --seq-len`), or train a smaller model",
            cfg.train.micro_batch, cfg.train.batch_size
        ));
    }
    TrainError::Device(format!(
        "{e}; the run stops here (its newest checkpoint is intact: resume it with \
         --resume once the cause is fixed; CRAM_CUDA_DEBUG=1 names the failing kernel)"
    ))
}

/// Whether the device carried out everything so far, as a [`TrainError`].
fn device_ok<B: Backend>(be: &B, cfg: &Config, seq: usize) -> Result<(), TrainError> {
    be.check().map_err(|e| device_error(e, cfg, seq))
}

fn step_failed(e: StepError, cfg: &Config, seq: usize) -> TrainError {
    match e {
        StepError::Comm(c) => TrainError::Comm(c),
        StepError::Device(d) => device_error(d, cfg, seq),
    }
}

pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends `record` to the run's metrics (rank 0 only: the other ranks have
/// no writer).
pub(super) fn log_record(
    metrics: Option<&mut MetricsWriter>,
    record: &Record,
) -> Result<(), TrainError> {
    match metrics {
        Some(m) => m.write(record).map_err(io_err(m.path())),
        None => Ok(()),
    }
}

/// Pretrains `cfg` on `store` until the budget is spent, writing the run
/// folder `opts.out`.
pub fn pretrain<B: Backend>(
    be: &B,
    cfg: &Config,
    store: &TokenStore,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    be.run_job(|| pretrain_parallel(be, cfg, store, opts, None))
}

fn finite(step: u64, what: &'static str, value: f64) -> Result<(), TrainError> {
    if value.is_finite() {
        return Ok(());
    }
    Err(TrainError::Diverged { step, what, value })
}

/// No checkpoint of a diverged state: the parameters' squared norm (one
/// pass over them, once per checkpoint) must be finite. A loss checked only
/// at logging steps would let a checkpoint between them save NaN weights.
/// The gradient norm may be NaN here: the device skipped that step (the
/// guard), so the parameters and moments are those of the step before.
/// Returns the steps skipped since the last read-back (in the same read),
/// which the guard must see before the checkpoint is written.
fn ensure_finite<B: Backend>(
    be: &B,
    state: &TrainState<B>,
    stats: &mut B::Buf,
    (cfg, seq): (&Config, usize),
) -> Result<u64, TrainError> {
    be.grad_norm_squared(stats, STAT_PARAM_NORM_SQ, &state.weights.params);
    // One read-back for both: the slots are adjacent.
    let host = be.read(
        stats,
        STAT_PARAM_NORM_SQ,
        STAT_SKIPPED - STAT_PARAM_NORM_SQ + 1,
    );
    // A failed device reads as NaN: say that, not "diverged".
    device_ok(be, cfg, seq)?;
    finite(state.progress.step, "parameters' norm", host[0] as f64)?;
    Ok(host[STAT_SKIPPED - STAT_PARAM_NORM_SQ] as u64)
}

/// Writes a checkpoint of the group's state: rank 0 writes it, after the
/// sharded moments are gathered (a collective: every rank calls this).
fn save_checkpoint<B: Backend>(
    be: &B,
    (run, keep): (&Path, usize),
    model: &Model,
    state: &TrainState<B>,
    dist: Option<&DataParallel>,
) -> Result<PathBuf, TrainError> {
    let Some(dp) = dist else {
        let dir = checkpoint::save(be, run, model, state)?;
        checkpoint::prune(run, keep)?;
        return Ok(dir);
    };
    let (m, v) = dp.gather_moments(be, &state.weights)?;
    if dp.rank() == 0 {
        let params = be.download(&state.weights.params);
        checkpoint::save_host(run, model, (&params, &m, &v), &state.progress)?;
        checkpoint::prune(run, keep)?;
    }
    // No rank goes on (or returns) before the checkpoint is complete.
    dp.comm.barrier()?;
    Ok(checkpoint::step_dir(run, state.progress.step))
}

/// [`pretrain`] as one rank of a data-parallel group (`dist`), or alone
/// (`None`), with the collectives on host copies ([`HostStaged`]).
pub fn pretrain_parallel<B: Backend>(
    be: &B,
    cfg: &Config,
    store: &TokenStore,
    opts: &RunOptions,
    dist: Option<&DataParallel>,
) -> Result<RunSummary, TrainError> {
    let mut host = HostStaged;
    let group = dist.map(|dp| (dp, &mut host as &mut dyn StepReducer<B>));
    pretrain_group(be, cfg, store, opts, group)
}

/// [`pretrain`] as one rank of a data-parallel group whose gradients
/// `reducer` sums (on the host or on the device), or alone (`None`). Every
/// rank computes its share of each global batch (see
/// [`crate::parallel::data_parallel`]); rank 0 alone writes the run folder, metrics,
/// evaluations and checkpoints, and the budget clock is rank 0's.
pub fn pretrain_group<'g, B: Backend>(
    be: &B,
    cfg: &Config,
    store: &TokenStore,
    opts: &RunOptions,
    group: Option<(&'g DataParallel<'g>, &'g mut dyn StepReducer<B>)>,
) -> Result<RunSummary, TrainError> {
    let mut step_fn = Step::new(group);
    let dist = step_fn.dist();
    let lead = dist.is_none_or(|d| d.rank() == 0);
    let budget = cfg.train.budget.get();
    let t = &cfg.train;
    let model = Model::new(&cfg.model);
    let seq = store.seq_len();
    if store.len(Split::Train) == 0 {
        return Err(TrainError::Run(
            "the data holds no training sequences".into(),
        ));
    }
    if store.len(Split::Val) == 0 {
        return Err(TrainError::Run(
            "the data holds no held-out sequences, which the run evaluates on; prepare it again \
             with --val-fraction above 0 from more than one document"
                .into(),
        ));
    }
    if opts.measure_noise_scale && t.batch_size < 2 * t.micro_batch {
        return Err(TrainError::Run(format!(
            "--measure-noise-scale compares one micro-batch with the whole batch, so train.batch_size ({}) \
             must be at least twice train.micro_batch ({})",
            t.batch_size, t.micro_batch
        )));
    }
    if opts.measure_noise_scale && dist.is_some_and(|d| d.world_size() > 1) {
        return Err(TrainError::Run(
            "--measure-noise-scale needs one rank: its small batch is one rank's micro-batch"
                .into(),
        ));
    }
    if lead {
        // Every shard against its manifest checksum, in parallel (a few
        // tenths of a second per GB on 16 cores): a damaged shard would
        // otherwise be trained on, or index past the embedding table.
        store.verify().map_err(|e| TrainError::Run(e.to_string()))?;
    }
    // Held until the run returns: a second process on the same folder stops here.
    let _lock = if lead {
        Some(lock_run(&opts.out)?)
    } else {
        None
    };
    let changes = if lead {
        let changes = prepare_run_dir(cfg, opts)?;
        super::run_files::record_data(store, &opts.out)?;
        changes
    } else {
        Vec::new()
    };
    if let Some(dp) = dist {
        // The other ranks read the run folder only once rank 0 has checked it.
        dp.comm.barrier()?;
    }
    let mut state = if opts.resume && !resume_from_start(opts, lead) {
        let (state, warnings) = checkpoint::load_newest_intact(be, &opts.out, &model)?;
        for w in warnings.iter().filter(|_| lead) {
            eprintln!("warning: {w}");
        }
        state
    } else {
        TrainState::fresh(be, &model, t.seed)
    };
    if let Some(dp) = dist {
        dp.adopt_weights(be, &mut state.weights);
    }
    let resumed_at = opts.resume.then_some(state.progress.step);
    let mut metrics = if lead {
        Some(MetricsWriter::open(&opts.out, resumed_at).map_err(io_err(&opts.out))?)
    } else {
        None
    };
    let start_progress = budget.progress(&state.progress.spent);
    if opts.resume && start_progress >= 1.0 && opts.stop_after_steps.is_none() {
        return Err(TrainError::Run(format!(
            "the run in {} has spent its budget ({}) at step {}; to train on, resume with a larger one, e.g. --budget {}",
            opts.out.display(),
            t.budget,
            state.progress.step,
            budget.doubled()
        )));
    }
    let mut reporter = Reporter::new(if lead { opts.progress } else { Progress::Off });
    if !changes.is_empty() {
        let (record, text) = resume_record(state.progress.step, start_progress, &changes);
        log_record(metrics.as_mut(), &record)?;
        reporter.event(&text);
    }
    let objective =
        Objective::for_store(&cfg.objective, store).map_err(|e| TrainError::Run(e.to_string()))?;
    let mut acts = Activations::new(be, &model.cfg, t.micro_batch, seq);
    let mut stats = be.alloc(STATS);
    // The weights, moments and activations are the bulk of the memory.
    device_ok(be, cfg, seq)?;
    let mut noise = opts.measure_noise_scale.then(NoiseMeter::default);
    let mut order = Order::for_training(t.seed, store.len(Split::Train), cfg.data.keep_order);
    let flops_per_token = model.flops_per_token(seq, &cfg.objective);
    // MFU per device: every rank's device is counted in the denominator.
    let devices = dist.map_or(1, |d| d.world_size()) as f64;
    let peak_flops = be.peak_flops().map(|p| p * devices);
    let clock = Instant::now();
    let seconds_before = state.progress.spent.seconds;
    let (mut interval_steps, mut interval_tokens, mut interval_start) = (0u64, 0u64, 0f64);
    let mut last_loss = f64::NAN;
    let mut last_eval = None;
    let mut finished = true;
    let mut estimated = false;
    let mut guard = Guard::new(&cfg.guard);
    // What the guard acts on, built where it acts: it borrows the state.
    macro_rules! scene {
        () => {
            Scene {
                be,
                run: (opts.out.as_path(), &model, t.seed),
                state: &mut state,
                dist,
                metrics: metrics.as_mut(),
                reporter: &mut reporter,
            }
        };
    }

    loop {
        let p = budget.progress(&state.progress.spent);
        if p >= 1.0 {
            break;
        }
        if opts
            .stop_after_steps
            .is_some_and(|s| state.progress.step >= s)
        {
            finished = false;
            break;
        }
        let step = state.progress.step;
        let batch_size = schedule::batch_size(t, p);
        let lr = schedule::learning_rate(t, p) * state.progress.lr_scale;
        let micro_steps = batch_size / t.micro_batch;
        let start = state.progress.position;
        let micros = step_fn.micros(micro_steps);
        let last_micro = micros.end.checked_sub(1);
        let poison = opts
            .nan_gradient_at
            .contains(&(state.progress.spent.steps + 1));
        let measure_small = micro_steps > 1 && noise.is_some();
        let hp = adamw(t, lr, step + 1, Some(STAT_SKIPPED));
        let groups = std::slice::from_mut(&mut state.weights);
        step_fn
            .run(
                be,
                groups,
                &mut stats,
                micros,
                hp,
                |(micro, groups, stats, sync)| {
                    let w = &mut groups[0];
                    // Global micro-batch `micro` reads the same sequences, masks and
                    // dropout on any number of ranks.
                    let pos = start + (micro * t.micro_batch) as u64;
                    let indices: Vec<usize> = (0..t.micro_batch as u64)
                        .map(|i| order.at(pos + i))
                        .collect();
                    let tokens = read_sequences(store, Split::Train, indices.into_iter());
                    let hb = objective.make_batch(tokens, seq, MaskKey::train(t.seed), pos);
                    let batch = upload_batch(be, &hb);
                    // Each micro-batch's mean loss, averaged over the accumulation.
                    let scale = 1.0 / (hb.counted.max(1) * micro_steps) as f32;
                    let dropout_seed = t.seed ^ (step << 20) ^ micro as u64;
                    let step_state = (&w.params, &mut w.grads, &mut acts);
                    micro_step(
                        be,
                        &model,
                        step_state,
                        &batch,
                        stats,
                        (scale, dropout_seed),
                        sync,
                    );
                    if micro == 0 && measure_small {
                        be.grad_norm_squared(stats, STAT_SMALL_NORM_SQ, &w.grads);
                    }
                    if poison && Some(micro) == last_micro {
                        // The test hook of the divergence guard: a NaN gradient.
                        be.write(&mut w.grads, 0, &[f32::NAN]);
                    }
                },
            )
            .map_err(|e| step_failed(e, cfg, seq))?;
        state.progress.position = start + (micro_steps * t.micro_batch) as u64;
        if opts
            .perturb_weights_at
            .contains(&(state.progress.spent.steps + 1))
        {
            // The test hook of the spike check: weights scaled far from the
            // trained ones, the loss jumps but stays finite.
            let mut w = be.download(&state.weights.params);
            w.iter_mut().for_each(|x| *x *= 25.0);
            be.write(&mut state.weights.params, 0, &w);
        }
        if let (Some(meter), true) = (noise.as_mut(), micro_steps > 1) {
            // The first micro-batch's gradient was scaled by 1/micro_steps.
            let norms = be.read(&stats, STAT_NORM_SQ, 2);
            meter.add(NormPair {
                small_batch: t.micro_batch as f64,
                small_norm_sq: norms[1] as f64 * (micro_steps * micro_steps) as f64,
                big_batch: batch_size as f64,
                big_norm_sq: norms[0] as f64,
            });
        }

        let tokens = (batch_size * seq) as u64;
        let spent = &mut state.progress.spent;
        spent.steps += 1;
        spent.tokens += tokens;
        spent.flops += tokens as f64 * flops_per_token;
        spent.seconds = seconds_before + clock.elapsed().as_secs_f64();
        if let Some(dp) = dist {
            // One clock for the group, so that every rank stops at the same step.
            spent.seconds = crate::parallel::comm::broadcast_f64(dp.comm, spent.seconds, 0)?;
        }
        state.progress.step += 1;
        interval_steps += 1;
        interval_tokens += tokens;
        let step = state.progress.step;
        let p = budget.progress(&state.progress.spent);
        let done = p >= 1.0;
        if step == 1 && budget.is_wall_clock() && budget.used(&state.progress.spent) > 1.5 {
            // A time budget is checked between optimizer steps, so a step
            // longer than the budget (a large preset on the CPU) overruns it
            // by that step: say so, and what to lower, before the run ends late.
            reporter.event(&format!(
                "the first optimizer step alone took {:.1} s ({batch_size} sequences of {seq} \
                 tokens), more than the whole budget ({}); a time budget is checked between \
                 steps, so lower train.batch_size or pick a smaller preset",
                state.progress.spent.seconds, t.budget
            ));
        }

        if step % t.log_every as u64 == 0 || done {
            let mut host = be.read(&stats, 0, STATS);
            device_ok(be, cfg, seq)?;
            if let Some(dp) = dist {
                dp.sum(&mut host[STAT_LOSS..STAT_LOSS + 1])?;
            }
            last_loss = host[STAT_LOSS] as f64 / interval_steps as f64;
            let skipped = host[STAT_SKIPPED] as u64;
            if skipped == 0 {
                finite(step, "loss", last_loss)?;
                finite(step, "gradient norm", host[STAT_NORM_SQ] as f64)?;
            }
            let spent = state.progress.spent;
            let tokens_per_s = interval_tokens as f64 / (spent.seconds - interval_start).max(1e-9);
            let record = TrainRecord {
                step,
                tokens: spent.tokens,
                flops: spent.flops,
                progress: p,
                loss: last_loss,
                lr,
                batch_size: batch_size as u64,
                grad_norm: (host[STAT_NORM_SQ] as f64).sqrt(),
                tokens_per_s,
                mfu: peak_flops.map(|peak| tokens_per_s * flops_per_token / peak),
                noise: noise
                    .as_mut()
                    .and_then(NoiseMeter::take)
                    .map(|ns| NoiseRecord {
                        noise_grad_sq: ns.grad_sq,
                        noise_trace: ns.trace,
                        noise_scale: ns.b_simple(),
                    }),
                elapsed: spent.seconds,
            };
            log_record(metrics.as_mut(), &Record::Train(record))?;
            reporter.step(
                p,
                &format!(
                    "step {step} loss {last_loss:.3} lr {lr:.2e} bs {batch_size} {:.0} tok/s left {}",
                    tokens_per_s,
                    eta(p, spent.seconds)
                ),
            );
            if !estimated && !budget.is_wall_clock() && p < 1.0 {
                // A token, FLOP or step budget says nothing about time: say it
                // once, from the first interval's rate.
                estimated = true;
                let total = duration_text(spent.seconds / p.max(f64::MIN_POSITIVE));
                let total = if total.starts_with("more") {
                    total
                } else {
                    format!("about {total}")
                };
                reporter.event(&format!(
                    "at this rate the budget ({}) takes {total} in all",
                    t.budget
                ));
            }
            be.zero(&mut stats);
            (interval_steps, interval_tokens, interval_start) = (0, 0, spent.seconds);
            let scene = scene!();
            if skipped > 0 && guard.handle((skipped, step), scene)? {
                continue;
            }
            // Every rank has the same summed loss, so every rank decides alike.
            if let Some(mean) = (skipped == 0).then(|| guard.spike(last_loss)).flatten() {
                let scene = scene!();
                if guard.handle_spike((last_loss, mean, step), scene)? {
                    continue;
                }
            }
        }
        if lead && (step % t.eval_every as u64 == 0 || done) {
            let eval_clock = Instant::now();
            let r = evaluate(
                be,
                &model,
                &state.weights.params,
                &mut acts,
                store,
                &objective,
                t.eval_batches,
                t.seed,
            );
            device_ok(be, cfg, seq)?;
            let record = EvalRecord {
                step,
                tokens: state.progress.spent.tokens,
                val_loss: r.loss,
                val_accuracy: r.accuracy,
                elapsed: state.progress.spent.seconds,
                // Outside the budget's clock, but a sweep pays it every run.
                eval_seconds: Some(eval_clock.elapsed().as_secs_f64()),
            };
            log_record(metrics.as_mut(), &Record::Eval(record))?;
            reporter.event(&format!(
                "step {step:>6}  held-out loss {:.4}  accuracy {:.3}",
                r.loss, r.accuracy
            ));
            last_eval = Some(r);
        }
        if step % t.checkpoint_every as u64 == 0 && !done {
            let skipped = ensure_finite(be, &state, &mut stats, (cfg, seq))?;
            if skipped > 0 {
                // Counted here, so not again at the next logging read-back.
                be.write(&mut stats, STAT_SKIPPED, &[0.0]);
                let scene = scene!();
                guard.handle((skipped, step), scene)?;
                // No checkpoint of a state that has just failed: the newest one
                // stays the last good one, which a rollback returns to.
                continue;
            }
            save_checkpoint(be, (&opts.out, t.keep_checkpoints), &model, &state, dist)?;
            guard.reset();
        }
    }
    reporter.finish();
    ensure_finite(be, &state, &mut stats, (cfg, seq))?;
    let dir = save_checkpoint(be, (&opts.out, t.keep_checkpoints), &model, &state, dist)?;
    let spent = state.progress.spent;
    Ok(RunSummary {
        steps: spent.steps,
        tokens: spent.tokens,
        seconds: spent.seconds,
        final_loss: last_loss,
        eval: last_eval,
        checkpoint: dir,
        finished,
    })
}
