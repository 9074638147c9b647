//! `cram bench`: training-step throughput on the GPU, one JSON line per
//! configuration, in the format of `bench/torch_reference.py`.

use super::launch::{bucket_bytes, launch_local_workers, DistArgs};
use super::SetArgs;
use crate::backend::cuda::{visible_gpus, Cuda};
use crate::backend::Device;
use crate::config::Config;
use crate::dist::nccl::NcclComm;
use crate::dist::nccl_device::NcclDevice;
use crate::dist::{DataParallel, DistEnv};
use crate::model::Model;
use crate::train::bench::{
    bench_cuda, bench_cuda_rank, combine_ranks, gather_ranks, scaling_result, GroupSetup,
};
use anyhow::{bail, Context};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Preset to time (see `cram config list`).
    #[arg(long, default_value = "crammed-bert")]
    preset: String,
    /// Micro-batch sizes, comma-separated; each is one configuration.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    micro_batch: Vec<usize>,
    /// Sequence lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    seq_len: Vec<usize>,
    /// Timed steps per configuration.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Untimed steps first (kernel loading, cuBLASLt plans, memory pools).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Also print GPU milliseconds per op and step (measured in extra steps with events).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    set: SetArgs,
    /// Data-parallel scaling (`--gpus N`, or under a launcher): rank 0 first
    /// times one GPU as without --gpus, then every rank times the same steps
    /// with one micro-batch per GPU, and rank 0 prints one line per
    /// configuration with both rates and the scaling efficiency.
    #[command(flatten)]
    dist: DistArgs,
}

/// The configurations, in the order of their lines: each sequence length
/// with each micro-batch, with room for the positions.
fn configurations(cfg: &Config, args: &BenchArgs) -> Vec<(Config, (usize, usize))> {
    let mut out = Vec::new();
    for &seq in &args.seq_len {
        for &mb in &args.micro_batch {
            let mut cfg = cfg.clone();
            cfg.model.max_positions = cfg.model.max_positions.max(seq);
            out.push((cfg, (mb, seq)));
        }
    }
    out
}

/// The flags that only a data-parallel bench takes, checked before any GPU is touched.
fn check_group_flags(args: &BenchArgs, launched: bool) -> anyhow::Result<()> {
    if args.dist.gpus.is_some() && launched {
        bail!("--gpus starts its own workers; under a launcher that sets RANK and WORLD_SIZE, leave it out");
    }
    let group = args.dist.gpus.is_some() || launched;
    if group && args.profile {
        bail!("--profile times the ops of one GPU; leave it out with --gpus or under a launcher");
    }
    if args.dist.zero1 && !group {
        bail!("--zero1 shards the optimizer across ranks; it needs --gpus or a launcher");
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let launched = DistEnv::from_env()?;
    check_group_flags(&args, launched.is_some())?;
    if let Some(gpus) = args.dist.gpus {
        Config::resolve(&args.preset, &args.set.sets)?;
        return launch_local_workers(gpus, || {
            visible_gpus().context("cram bench times the CUDA backend")
        });
    }
    if let Some(env) = &launched {
        return run_rank(&args, env);
    }
    let cfg = Config::resolve(&args.preset, &args.set.sets)?;
    let gpu = Cuda::new(0).context("cram bench times the CUDA backend")?;
    eprintln!("device: {}", gpu.name());
    let peak = gpu.peak_flops().expect("a GPU reports its matmul peak");
    for (cfg, shape) in configurations(&cfg, &args) {
        let steps = (args.warmup, args.steps);
        let (result, ops) = bench_cuda(&gpu, &cfg, shape, steps, peak, &args.preset);
        println!("{}", serde_json::to_string(&result)?);
        if args.profile {
            for op in ops {
                println!("{}", serde_json::to_string(&op)?);
            }
        }
    }
    Ok(())
}

/// One rank of `cram bench --gpus N` (or of an external launch): rank 0
/// times one GPU alone while the others wait at the rendezvous, then the
/// group times every configuration and rank 0 prints one line for each.
fn run_rank(args: &BenchArgs, env: &DistEnv) -> anyhow::Result<()> {
    let cfg = Config::resolve(&args.preset, &args.set.sets)?;
    let bucket_bytes = bucket_bytes(args.dist.bucket_mb)?;
    let lead = env.rank == 0;
    let gpu = Cuda::new(env.local_rank)
        .with_context(|| format!("rank {} cannot use GPU {}", env.rank, env.local_rank))?;
    let configs = configurations(&cfg, args);
    let mut baselines = Vec::new();
    if lead {
        eprintln!("device: {} (rank 0 of {})", gpu.name(), env.world_size);
        eprintln!(
            "global batch: one micro-batch per GPU, {} × --micro-batch sequences per step; the one-GPU baseline steps one micro-batch",
            env.world_size
        );
        let peak = gpu.peak_flops().expect("a GPU reports its matmul peak");
        for (cfg, shape) in &configs {
            let steps = (args.warmup, args.steps);
            baselines.push(bench_cuda(&gpu, cfg, *shape, steps, peak, &args.preset).0);
        }
    }
    let timeout = Duration::from_secs(args.dist.dist_timeout);
    let comm = NcclComm::from_env(env, timeout)
        .with_context(|| format!("rank {} cannot join the group", env.rank))?;
    let dp = DataParallel::new(&comm, args.dist.zero1);
    let setup = GroupSetup {
        gpus: env.world_size,
        zero1: args.dist.zero1,
        bucket_mb: args.dist.bucket_mb,
    };
    for (i, (cfg, shape)) in configs.iter().enumerate() {
        let model = Model::new(&cfg.model);
        let mut reducer = NcclDevice::new(&comm, &model, args.dist.zero1, bucket_bytes);
        let steps = (args.warmup, args.steps);
        let (timing, loss) = bench_cuda_rank(&gpu, cfg, *shape, steps, &dp, &mut reducer)
            .with_context(|| format!("rank {} stopped", env.rank))?;
        let (ranks, loss) = gather_ranks(&dp, timing, loss)
            .with_context(|| format!("rank {} stopped", env.rank))?;
        if lead {
            let line = scaling_result(&baselines[i], &combine_ranks(&ranks), setup, loss);
            println!("{}", serde_json::to_string(&line)?);
        }
    }
    Ok(())
}
