//! How a run's ranks start: one device, ranks as threads of this process
//! (the CPU twin of data parallelism), or one process per GPU that joins an
//! NCCL group (started by `--gpus N` here, or by an external launcher that
//! sets RANK and WORLD_SIZE). `cram pretrain` and `cram bench` parse their
//! flags and call [`pretrain`] or [`bench_group`]; the choice of mode and
//! the group's set-up are made here, once. This layer sits above the
//! trainer (it calls it) and below the CLI.

mod threads;
pub mod workers;

pub use threads::pretrain_threads;
pub use workers::{bucket_bytes, launch_local_workers};

use crate::backend::cuda::Cuda;
use crate::backend::{select_device, Device, DeviceChoice};
use crate::config::Config;
use crate::data::TokenStore;
use crate::model::Model;
use crate::on_device;
use crate::parallel::nccl::NcclComm;
use crate::parallel::nccl_device::NcclDevice;
use crate::parallel::{DataParallel, DistEnv};
use crate::train::bench::{
    bench_cuda, bench_cuda_rank, bench_failed, combine_ranks, gather_ranks, scaling_result,
    BenchResult, GroupSetup, ScalingResult,
};
use crate::train::{pretrain_group, RunOptions, RunSummary};
use anyhow::{bail, Context};
use std::time::Duration;

/// How this process trains.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One rank of a launched group, on its GPU (LOCAL_RANK).
    Rank(DistEnv),
    /// This many ranks as threads of this process, on the CPU.
    Threads(usize),
    /// One device, chosen as `--device` says.
    Single(DeviceChoice),
}

/// The settings of a data-parallel group.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// Shard the optimizer state across ranks (ZeRO stage 1).
    pub zero1: bool,
    /// How long a rank waits for the others before it stops with an error.
    pub timeout: Duration,
    /// Gradient bucket size of the NCCL device path, in bytes of f32.
    pub bucket_bytes: usize,
}

/// Pretrains in `mode`; returns the run's summary on the rank that writes
/// the run folder (rank 0, or the only one), `None` on the others.
pub fn pretrain(
    cfg: &Config,
    store: &TokenStore,
    opts: &RunOptions,
    mode: &Mode,
    group: Group,
) -> anyhow::Result<Option<RunSummary>> {
    match mode {
        Mode::Rank(env) => {
            let be = Cuda::new(env.local_rank)
                .with_context(|| format!("rank {} cannot use GPU {}", env.rank, env.local_rank))?;
            if env.rank == 0 {
                eprintln!("device: {} (rank 0 of {})", be.name(), env.world_size);
            }
            let comm = NcclComm::from_env(env, group.timeout)
                .with_context(|| format!("rank {} cannot join the group", env.rank))?;
            let dp = DataParallel::new(&comm, group.zero1);
            let model = Model::new(&cfg.model);
            let mut reducer = NcclDevice::new(&comm, &model, group.zero1, group.bucket_bytes);
            let summary = pretrain_group(&be, cfg, store, opts, Some((&dp, &mut reducer)))
                .with_context(|| format!("rank {} stopped", env.rank))?;
            Ok((env.rank == 0).then_some(summary))
        }
        Mode::Threads(ranks) => {
            eprintln!("device: CPU, {ranks} ranks as threads");
            let summary = pretrain_threads(cfg, store, opts, *ranks, group.zero1, group.timeout)?;
            Ok(Some(summary))
        }
        Mode::Single(choice) => {
            if group.zero1 {
                bail!(
                    "--zero1 shards the optimizer across ranks; it needs --gpus, --ranks or a launcher"
                );
            }
            let (device, note) = select_device(*choice)?;
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            eprintln!("device: {}", device.name());
            let summary = on_device!(&device, |be| crate::train::pretrain(be, cfg, store, opts))?;
            Ok(Some(summary))
        }
    }
}

/// One rank of a data-parallel bench (`cram bench --gpus N`, or under a
/// launcher): rank 0 first times one GPU alone while the others wait at the
/// rendezvous, then the group times every configuration (one micro-batch
/// per GPU per step). Returns, on rank 0, one line per configuration with
/// both rates and the scaling efficiency; nothing on the others.
pub fn bench_group(
    configs: &[(Config, (usize, usize))],
    env: &DistEnv,
    group: Group,
    steps: (usize, usize),
    name: &str,
) -> anyhow::Result<Vec<ScalingResult>> {
    let lead = env.rank == 0;
    let gpu = Cuda::new(env.local_rank)
        .with_context(|| format!("rank {} cannot use GPU {}", env.rank, env.local_rank))?;
    let mut baselines: Vec<BenchResult> = Vec::new();
    if lead {
        eprintln!("device: {} (rank 0 of {})", gpu.name(), env.world_size);
        eprintln!(
            "global batch: one micro-batch per GPU, {} × --micro-batch sequences per step; the one-GPU baseline steps one micro-batch",
            env.world_size
        );
        let peak = gpu.peak_flops().expect("a GPU reports its matmul peak");
        for (cfg, shape) in configs {
            let (baseline, _) = bench_cuda(&gpu, cfg, *shape, steps, peak, name)
                .map_err(|e| anyhow::anyhow!(bench_failed(e, *shape)))?;
            baselines.push(baseline);
        }
    }
    let comm = NcclComm::from_env(env, group.timeout)
        .with_context(|| format!("rank {} cannot join the group", env.rank))?;
    let dp = DataParallel::new(&comm, group.zero1);
    let setup = GroupSetup {
        gpus: env.world_size,
        zero1: group.zero1,
        bucket_mb: group.bucket_bytes as f64 / (1 << 20) as f64,
    };
    let mut lines = Vec::new();
    for (i, (cfg, shape)) in configs.iter().enumerate() {
        let model = Model::new(&cfg.model);
        let mut reducer = NcclDevice::new(&comm, &model, group.zero1, group.bucket_bytes);
        let (timing, loss) = bench_cuda_rank(&gpu, cfg, *shape, steps, &dp, &mut reducer)
            .map_err(|e| anyhow::anyhow!(bench_failed(e, *shape)))
            .with_context(|| format!("rank {} stopped", env.rank))?;
        let (ranks, loss) = gather_ranks(&dp, timing, loss)
            .with_context(|| format!("rank {} stopped", env.rank))?;
        if lead {
            lines.push(scaling_result(
                &baselines[i],
                &combine_ranks(&ranks),
                setup,
                loss,
            ));
        }
    }
    Ok(lines)
}
