//! `cram bench`: full training steps (forward, backward, gradient norm,
//! clipping, AdamW) on synthetic batches, timed after a warm-up, with the
//! FLOP accounting of `bench/torch_reference.py` and MFU against a matmul
//! peak measured on the same GPU in the same run.

use super::step::{micro_step, Step, StepError};
use super::TrainState;
use crate::backend::cuda::{Cuda, CudaBuf};
use crate::backend::Device;
use crate::config::Config;
use crate::data::batches::{HostBatch, MaskKey, Objective};
use crate::data::SpecialTokens;
use crate::model::{upload_batch, Activations, DeviceBatch, Model};
use crate::optim::{adamw, STATS, STAT_LOSS};
use crate::parallel::{CommError, DataParallel, StepReducer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Special token ids of the synthetic vocabulary (those of a prepared one).
const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

/// A micro-batch of uniformly random tokens with the config's objective
/// applied (masking at its rate, sparse prediction), like the reference's.
pub fn synthetic_batch(cfg: &Config, batch: usize, seq: usize, seed: u64) -> HostBatch {
    let vocab = cfg.model.vocab_size as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<u32> = (0..batch * seq)
        .map(|_| rng.random_range(5..vocab))
        .collect();
    Objective::new(&cfg.objective, SPECIAL, cfg.model.vocab_size).make_batch(
        tokens,
        seq,
        MaskKey::train(seed),
        0,
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub device: String,
    pub seq: usize,
    pub mb: usize,
    pub steps: usize,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub flops_per_token: f64,
    pub mfu: f64,
    pub matmul_peak_tflops: f64,
    pub mem_gb: f64,
    pub loss: f64,
}

/// GPU time per op over some steps, for `--profile`.
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    pub op: &'static str,
    pub ms_per_step: f64,
    pub calls_per_step: f64,
}

/// The state of a timed bench: the model, its weights, the activations of
/// one micro-batch, and four synthetic batches per global micro-batch index
/// this rank computes, cycled step after step.
struct Bench<'c> {
    cfg: &'c Config,
    model: Model,
    state: TrainState<Cuda>,
    acts: Activations<Cuda>,
    stats: CudaBuf,
    /// `batches[i % 4]`: this rank's micro-batches of step `i`.
    batches: Vec<Vec<DeviceBatch<Cuda>>>,
    world: usize,
}

impl<'c> Bench<'c> {
    /// One micro-batch of `micro_batch` sequences per rank of `dist`'s group
    /// (its global index seeds its batch, so one rank gets [`bench_cuda`]'s).
    fn new(
        be: &Cuda,
        cfg: &'c Config,
        (micro_batch, seq): (usize, usize),
        dist: Option<&DataParallel>,
    ) -> Self {
        let model = Model::new(&cfg.model);
        be.reset_peak_memory();
        let mut state = TrainState::fresh(be, &model, cfg.train.seed);
        if let Some(dp) = dist {
            dp.adopt_weights(be, &mut state.weights);
        }
        let acts = Activations::new(be, &model.cfg, micro_batch, seq);
        let world = dist.map_or(1, |dp| dp.world_size());
        let micros = dist.map_or(0..1, |dp| dp.micros(world));
        let batches = (0..4u64)
            .map(|i| {
                micros
                    .clone()
                    .map(|m| {
                        let seed = i * world as u64 + m as u64;
                        upload_batch(be, &synthetic_batch(cfg, micro_batch, seq, seed))
                    })
                    .collect()
            })
            .collect();
        Bench {
            cfg,
            model,
            state,
            acts,
            stats: be.alloc(STATS),
            batches,
            world,
        }
    }

    /// Bench step `i` (0-based) through `step`: a tenth of the peak learning
    /// rate, so that timed steps stay finite without a warm-up schedule.
    fn step(&mut self, be: &Cuda, step: &mut Step<Cuda>, i: usize) -> Result<(), StepError> {
        be.zero(&mut self.stats);
        let local = &self.batches[i % self.batches.len()];
        let hp = adamw(&self.cfg.train, self.cfg.train.lr * 0.1, i as u64 + 1, None);
        let (model, acts, world) = (&self.model, &mut self.acts, self.world);
        let groups = std::slice::from_mut(&mut self.state.weights);
        let micros = 0..local.len();
        step.run(
            be,
            groups,
            &mut self.stats,
            micros,
            hp,
            |(k, groups, stats, sync)| {
                let (w, batch) = (&mut groups[0], &local[k]);
                let scale = 1.0 / (batch.counted.max(1) * world) as f32;
                let step_state = (&w.params, &mut w.grads, &mut *acts);
                micro_step(be, model, step_state, batch, stats, (scale, i as u64), sync);
            },
        )
    }

    /// Seconds for `steps` steps after `warmup` untimed ones; `ready` runs
    /// between them (a barrier of the group).
    fn time(
        &mut self,
        be: &Cuda,
        step: &mut Step<Cuda>,
        (warmup, steps): (usize, usize),
        ready: impl FnOnce() -> Result<(), CommError>,
    ) -> Result<f64, StepError> {
        for i in 0..warmup {
            self.step(be, step, i)?;
        }
        be.synchronize();
        be.check()?;
        ready()?;
        let clock = Instant::now();
        for i in 0..steps {
            self.step(be, step, warmup + i)?;
        }
        be.synchronize();
        be.check()?;
        Ok(clock.elapsed().as_secs_f64())
    }
}

/// A bench that could not run, in one sentence: out of memory names the
/// flags that set the step's memory.
pub fn bench_failed(e: StepError, (micro_batch, seq): (usize, usize)) -> String {
    match e {
        StepError::Device(d) if d.is_size_limit() => {
            format!("{d}; lower --micro-batch (now {micro_batch}) or --seq-len (now {seq})")
        }
        e => e.to_string(),
    }
}

/// Times `steps` training steps of `cfg` at `(micro_batch, seq)` after
/// `warmup` untimed ones; `peak` is the measured matmul rate in FLOP/s.
pub fn bench_cuda(
    be: &Cuda,
    cfg: &Config,
    (micro_batch, seq): (usize, usize),
    (warmup, steps): (usize, usize),
    peak: f64,
    name: &str,
) -> Result<(BenchResult, Vec<OpTime>), StepError> {
    let mut bench = Bench::new(be, cfg, (micro_batch, seq), None);
    let mut step = Step::alone();
    let seconds = bench.time(be, &mut step, (warmup, steps), || Ok(()))? / steps.max(1) as f64;
    be.start_profile();
    let profiled = steps.clamp(1, 5);
    for i in 0..profiled {
        bench.step(be, &mut step, warmup + steps + i)?;
    }
    let ops = be
        .finish_profile()
        .into_iter()
        .map(|(op, ms, calls)| OpTime {
            op,
            ms_per_step: ms / profiled as f64,
            calls_per_step: calls as f64 / profiled as f64,
        })
        .collect();
    let loss = be.read(&bench.stats, STAT_LOSS, 1)[0] as f64;
    let flops_per_token = bench.model.flops_per_token(seq, &cfg.objective);
    let tokens_per_s = (micro_batch * seq) as f64 / seconds;
    let result = BenchResult {
        name: name.to_string(),
        device: be.name(),
        seq,
        mb: micro_batch,
        steps,
        step_ms: seconds * 1e3,
        tokens_per_s,
        flops_per_token,
        mfu: tokens_per_s * flops_per_token / peak,
        matmul_peak_tflops: peak / 1e12,
        mem_gb: be.peak_memory_bytes() as f64 / (1u64 << 30) as f64,
        loss,
    };
    be.check()?;
    Ok((result, ops))
}

/// One rank's share of a data-parallel bench: the tokens it trained in the
/// timed steps, its wall time for them, and its peak GPU memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTiming {
    pub tokens: f64,
    pub seconds: f64,
    pub mem_gb: f64,
}

impl RankTiming {
    /// The values a rank sends to the others (f32: a collective's type;
    /// their rounding, 6e-8 relative, is far below timing noise).
    pub fn to_values(self) -> [f32; 3] {
        [self.tokens as f32, self.seconds as f32, self.mem_gb as f32]
    }

    /// Every rank's timing from the gathered values, rank by rank.
    pub fn from_values(values: &[f32]) -> Vec<RankTiming> {
        values
            .chunks_exact(3)
            .map(|v| RankTiming {
                tokens: v[0] as f64,
                seconds: v[1] as f64,
                mem_gb: v[2] as f64,
            })
            .collect()
    }
}

/// The group's throughput: all ranks' tokens over the slowest rank's time
/// (the step is not over until the last rank is), and the largest memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupTiming {
    pub tokens: f64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub mem_gb: f64,
}

pub fn combine_ranks(ranks: &[RankTiming]) -> GroupTiming {
    let tokens: f64 = ranks.iter().map(|r| r.tokens).sum();
    let seconds = ranks.iter().map(|r| r.seconds).fold(0.0, f64::max);
    GroupTiming {
        tokens,
        seconds,
        tokens_per_s: tokens / seconds.max(1e-12),
        mem_gb: ranks.iter().map(|r| r.mem_gb).fold(0.0, f64::max),
    }
}

/// Weak-scaling efficiency: N GPUs' tokens/s over N times one GPU's, each
/// GPU doing the same work per step in both runs.
pub fn scaling_efficiency(group_tokens_per_s: f64, one_gpu_tokens_per_s: f64, gpus: usize) -> f64 {
    group_tokens_per_s / (gpus as f64 * one_gpu_tokens_per_s)
}

/// One configuration of `cram bench --gpus N`: the group against the
/// one-GPU baseline measured by the same command.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingResult {
    pub name: String,
    pub device: String,
    pub gpus: usize,
    pub zero1: bool,
    pub bucket_mb: f64,
    pub seq: usize,
    pub mb: usize,
    /// Sequences per optimizer step over all GPUs: one micro-batch of `mb`
    /// per GPU (the baseline's step is one micro-batch on one GPU).
    pub global_batch: usize,
    pub steps: usize,
    /// The slowest rank's wall time per step.
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub one_gpu_step_ms: f64,
    pub one_gpu_tokens_per_s: f64,
    pub scaling_efficiency: f64,
    /// Per GPU, against the matmul peak of rank 0's GPU.
    pub mfu: f64,
    pub matmul_peak_tflops: f64,
    /// The largest peak memory over the ranks.
    pub mem_gb: f64,
    /// Mean loss of the last step's global batch.
    pub loss: f64,
}

/// How the group was run, for [`scaling_result`].
#[derive(Debug, Clone, Copy)]
pub struct GroupSetup {
    pub gpus: usize,
    pub zero1: bool,
    pub bucket_mb: f64,
}

/// The JSON line of one configuration from the one-GPU `baseline` and the
/// group's combined timing (`loss`: the group's last step).
pub fn scaling_result(
    baseline: &BenchResult,
    group: &GroupTiming,
    setup: GroupSetup,
    loss: f64,
) -> ScalingResult {
    let steps = baseline.steps;
    let peak = baseline.matmul_peak_tflops * 1e12;
    ScalingResult {
        name: baseline.name.clone(),
        device: baseline.device.clone(),
        gpus: setup.gpus,
        zero1: setup.zero1,
        bucket_mb: setup.bucket_mb,
        seq: baseline.seq,
        mb: baseline.mb,
        global_batch: setup.gpus * baseline.mb,
        steps,
        step_ms: group.seconds * 1e3 / steps.max(1) as f64,
        tokens_per_s: group.tokens_per_s,
        one_gpu_step_ms: baseline.step_ms,
        one_gpu_tokens_per_s: baseline.tokens_per_s,
        scaling_efficiency: scaling_efficiency(
            group.tokens_per_s,
            baseline.tokens_per_s,
            setup.gpus,
        ),
        mfu: group.tokens_per_s * baseline.flops_per_token / (peak * setup.gpus as f64),
        matmul_peak_tflops: baseline.matmul_peak_tflops,
        mem_gb: group.mem_gb,
        loss,
    }
}

/// The timed steps of [`bench_cuda`] as one rank of a data-parallel group:
/// every step's global batch has one micro-batch of `micro_batch` per rank
/// (each rank computes its share, [`DataParallel::micros`]), and `reducer`
/// sums the gradients and steps the optimizer, as in `cram pretrain`. The
/// clocks start after a barrier. Returns this rank's timing and its part of
/// the last step's loss (the ranks' parts sum to the global batch's loss).
pub fn bench_cuda_rank(
    be: &Cuda,
    cfg: &Config,
    (micro_batch, seq): (usize, usize),
    (warmup, steps): (usize, usize),
    dp: &DataParallel,
    reducer: &mut dyn StepReducer<Cuda>,
) -> Result<(RankTiming, f64), StepError> {
    let mut bench = Bench::new(be, cfg, (micro_batch, seq), Some(dp));
    let mut step = Step::new(Some((dp, reducer)));
    let seconds = bench.time(be, &mut step, (warmup, steps), || dp.comm.barrier())?;
    let loss = be.read(&bench.stats, STAT_LOSS, 1)[0] as f64;
    let local = bench.batches[0].len();
    let timing = RankTiming {
        tokens: (local * micro_batch * seq * steps) as f64,
        seconds,
        mem_gb: be.peak_memory_bytes() as f64 / (1u64 << 30) as f64,
    };
    Ok((timing, loss))
}

/// Every rank's timing on every rank (a collective), and the global loss.
pub fn gather_ranks(
    dp: &DataParallel,
    timing: RankTiming,
    loss: f64,
) -> Result<(Vec<RankTiming>, f64), CommError> {
    let mut all = vec![0f32; 3 * dp.world_size()];
    dp.comm.all_gather(&timing.to_values(), &mut all)?;
    let mut total = [loss as f32];
    dp.sum(&mut total)?;
    Ok((RankTiming::from_values(&all), total[0] as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(tokens: f64, seconds: f64, mem_gb: f64) -> RankTiming {
        RankTiming {
            tokens,
            seconds,
            mem_gb,
        }
    }

    #[test]
    fn the_group_rate_is_all_tokens_over_the_slowest_rank() {
        let g = combine_ranks(&[rank(1000.0, 2.0, 5.0), rank(1000.0, 2.5, 7.0)]);
        assert_eq!(g.tokens, 2000.0);
        assert_eq!(g.seconds, 2.5);
        assert_eq!(g.tokens_per_s, 800.0);
        assert_eq!(g.mem_gb, 7.0);
    }

    #[test]
    fn timings_survive_the_gather() {
        let ranks = [rank(4096.0, 1.25, 3.5), rank(8192.0, 0.5, 2.0)];
        let values: Vec<f32> = ranks.iter().flat_map(|r| r.to_values()).collect();
        assert_eq!(RankTiming::from_values(&values), ranks);
    }

    #[test]
    fn efficiency_compares_with_n_single_gpus() {
        assert_eq!(scaling_efficiency(3600.0, 1000.0, 4), 0.9);
        assert_eq!(scaling_efficiency(1000.0, 1000.0, 1), 1.0);
    }

    fn baseline() -> BenchResult {
        BenchResult {
            name: "crammed-bert".into(),
            device: "cuda:0 H200".into(),
            seq: 128,
            mb: 256,
            steps: 10,
            step_ms: 100.0,
            tokens_per_s: 256.0 * 128.0 / 0.1,
            flops_per_token: 1e9,
            mfu: 0.4,
            matmul_peak_tflops: 800.0,
            mem_gb: 20.0,
            loss: 9.0,
        }
    }

    #[test]
    fn a_scaling_line_holds_both_rates_and_the_global_batch() {
        let base = baseline();
        let tokens = 256.0 * 128.0 * 10.0;
        // Two ranks, the slower one at 1.1 s for 10 steps (110 ms a step).
        let group = combine_ranks(&[rank(tokens, 1.0, 20.0), rank(tokens, 1.1, 21.0)]);
        let setup = GroupSetup {
            gpus: 2,
            zero1: true,
            bucket_mb: 25.0,
        };
        let line = scaling_result(&base, &group, setup, 8.5);
        assert_eq!(line.global_batch, 512);
        assert!((line.step_ms - 110.0).abs() < 1e-9);
        assert!((line.scaling_efficiency - 100.0 / 110.0).abs() < 1e-12);
        assert_eq!(line.one_gpu_tokens_per_s, base.tokens_per_s);
        assert!((line.mfu - line.tokens_per_s * 1e9 / (2.0 * 800e12)).abs() < 1e-15);
        assert_eq!(line.mem_gb, 21.0);
        let json: serde_json::Value = serde_json::to_value(&line).unwrap();
        for field in [
            "gpus",
            "zero1",
            "global_batch",
            "tokens_per_s",
            "one_gpu_tokens_per_s",
            "scaling_efficiency",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
    }
}
