//! `cram bench`: full training steps (forward, backward, gradient norm,
//! clipping, AdamW) on synthetic batches, timed after a warm-up, with the
//! FLOP accounting of `bench/torch_reference.py` and MFU against a matmul
//! peak measured on the same GPU in the same run.

use super::trainer::{micro_step, optimizer_step, upload_batch, STATS, STAT_LOSS};
use super::TrainState;
use crate::backend::cuda::Cuda;
use crate::backend::{AdamW, Device};
use crate::config::Config;
use crate::data::batches::{HostBatch, Objective};
use crate::data::SpecialTokens;
use crate::model::{Activations, Model};
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
    Objective::new(&cfg.objective, SPECIAL, cfg.model.vocab_size).make_batch(tokens, seq, &mut rng)
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

/// Times `steps` training steps of `cfg` at `(micro_batch, seq)` after
/// `warmup` untimed ones; `peak` is the measured matmul rate in FLOP/s.
pub fn bench_cuda(
    be: &Cuda,
    cfg: &Config,
    (micro_batch, seq): (usize, usize),
    (warmup, steps): (usize, usize),
    peak: f64,
    name: &str,
) -> (BenchResult, Vec<OpTime>) {
    let model = Model::new(&cfg.model);
    be.reset_peak_memory();
    let mut state = TrainState::fresh(be, &model, cfg.train.seed);
    let mut acts = Activations::new(be, &model.cfg, micro_batch, seq);
    let mut stats = be.alloc(STATS);
    let batches: Vec<_> = (0..4)
        .map(|i| upload_batch(be, &synthetic_batch(cfg, micro_batch, seq, i)))
        .collect();
    let t = &cfg.train;
    let mut step = |i: usize| {
        let batch = &batches[i % batches.len()];
        be.zero(&mut state.grads);
        be.zero(&mut stats);
        let scale = 1.0 / batch.counted.max(1) as f32;
        let step_state = (&state.params, &mut state.grads, &mut acts);
        micro_step(be, &model, step_state, batch, &mut stats, scale, i as u64);
        let hp = AdamW {
            lr: t.lr as f32 * 0.1,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
            step: i as u64 + 1,
            decay_len: model.layout.decay_len,
            max_norm: t.grad_clip,
        };
        optimizer_step(be, &mut state, &mut stats, hp);
    };
    for i in 0..warmup {
        step(i);
    }
    be.synchronize();
    let clock = Instant::now();
    for i in 0..steps {
        step(warmup + i);
    }
    be.synchronize();
    let seconds = clock.elapsed().as_secs_f64() / steps.max(1) as f64;
    be.start_profile();
    let profiled = steps.clamp(1, 5);
    for i in 0..profiled {
        step(warmup + steps + i);
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
    let loss = be.read(&stats, STAT_LOSS, 1)[0] as f64;
    let flops_per_token = model.flops_per_token(seq, &cfg.objective);
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
    (result, ops)
}
