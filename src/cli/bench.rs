//! `cram bench`: training-step throughput on the GPU, one JSON line per
//! configuration, in the format of `bench/torch_reference.py`.

use super::SetArgs;
use crate::backend::cuda::Cuda;
use crate::backend::Device;
use crate::config::Config;
use crate::train::bench::bench_cuda;
use anyhow::Context;

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
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let cfg = Config::resolve(&args.preset, &args.set.sets)?;
    let gpu = Cuda::new(0).context("cram bench times the CUDA backend")?;
    eprintln!("device: {}", gpu.name());
    let peak = gpu.peak_flops().expect("a GPU reports its matmul peak");
    for &seq in &args.seq_len {
        for &mb in &args.micro_batch {
            let mut cfg = cfg.clone();
            cfg.model.max_positions = cfg.model.max_positions.max(seq);
            let (result, ops) = bench_cuda(
                &gpu,
                &cfg,
                (mb, seq),
                (args.warmup, args.steps),
                peak,
                &args.preset,
            );
            println!("{}", serde_json::to_string(&result)?);
            if args.profile {
                for op in ops {
                    println!("{}", serde_json::to_string(&op)?);
                }
            }
        }
    }
    Ok(())
}
