//! `cram bench`: training-step throughput on the GPU, one JSON line per
//! configuration, in the format of `bench/torch_reference.py`.

use super::{DistArgs, SetArgs};
use crate::backend::cuda::{visible_gpus, Cuda};
use crate::backend::Device;
use crate::config::Config;
use crate::launch::{self, launch_local_workers};
use crate::parallel::DistEnv;
use crate::train::bench::{bench_cuda, bench_failed};
use anyhow::{bail, Context};

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
        let cfg = Config::resolve(&args.preset, &args.set.sets)?;
        let configs = configurations(&cfg, &args);
        let steps = (args.warmup, args.steps);
        let group = args.dist.group()?;
        for line in launch::bench_group(&configs, env, group, steps, &args.preset)? {
            println!("{}", serde_json::to_string(&line)?);
        }
        return Ok(());
    }
    let cfg = Config::resolve(&args.preset, &args.set.sets)?;
    let gpu = Cuda::new(0).context("cram bench times the CUDA backend")?;
    eprintln!("device: {}", gpu.name());
    let peak = gpu.peak_flops().expect("a GPU reports its matmul peak");
    for (cfg, shape) in configurations(&cfg, &args) {
        let steps = (args.warmup, args.steps);
        let (result, ops) = bench_cuda(&gpu, &cfg, shape, steps, peak, &args.preset)
            .map_err(|e| anyhow::anyhow!(bench_failed(e, shape)))?;
        println!("{}", serde_json::to_string(&result)?);
        if args.profile {
            for op in ops {
                println!("{}", serde_json::to_string(&op)?);
            }
        }
    }
    Ok(())
}
