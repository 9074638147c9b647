//! Data parallel on the GPU with NCCL on the device buffers, on ONE GPU: a
//! group of world size 1 (rendezvous on loopback, `RANK=0 WORLD_SIZE=1`)
//! goes through the whole device path (buckets launched during the
//! backward on the communication stream, the stream waits, ZeRO-1's reduce to
//! the shard's owner, AdamW on the shard's range, the broadcast and the bf16
//! weight copy's refresh), and must give the parameters of the plain CUDA
//! step. It cannot show that ranks agree with each other (that needs two
//! GPUs: `cram pretrain --gpus 2`), only that the device path computes the
//! same step as the backend alone.
//!
//! GPU only: `#[ignore]`d here, run on the GPU machine with `--ignored`.
//! With one rank every collective is an identity and every reduction runs
//! the same kernels over the same lengths, so the results should be equal;
//! the tolerance only allows for NCCL copying through its own buffers.

mod common;

use cram::backend::cuda::Cuda;
use cram::backend::Device;
use cram::config::Config;
use cram::model::{upload_batch, Activations, Model};
use cram::optim::STATS;
use cram::parallel::nccl::NcclComm;
use cram::parallel::nccl_device::NcclDevice;
use cram::parallel::{DataParallel, DistEnv, StepReducer};
use cram::train::bench::synthetic_batch;
use cram::train::{micro_step, Step, TrainState};
use std::time::Duration;

const STEPS: u64 = 3;
const MICRO_STEPS: usize = 2;
const TOL: f32 = 1e-6;

fn gpu() -> Cuda {
    Cuda::new(0).expect("these tests need a CUDA GPU")
}

/// A group of one rank, formed the way a launched rank forms it.
fn single_rank_comm() -> NcclComm {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let vars = [
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", port.as_str()),
    ];
    let env = DistEnv::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
    .expect("launch variables set");
    NcclComm::from_env(&env, Duration::from_secs(60)).expect("an NCCL group of one rank")
}

/// The parameters after `STEPS` steps of `MICRO_STEPS` micro-batches, with
/// the gradients reduced by `group` (or by nobody).
fn train(
    be: &Cuda,
    cfg: &Config,
    (batch, seq): (usize, usize),
    group: Option<(&DataParallel, &mut NcclDevice)>,
) -> Vec<f32> {
    let model = Model::new(&cfg.model);
    let mut state = TrainState::fresh(be, &model, 5);
    if let Some((dp, _)) = group.as_ref() {
        dp.adopt_weights(be, &mut state.weights);
    }
    let mut acts = Activations::new(be, &model.cfg, batch, seq);
    let mut stats = be.alloc(STATS);
    let mut step_fn = Step::new(group.map(|(dp, r)| (dp, r as &mut dyn StepReducer<Cuda>)));
    for step in 0..STEPS {
        let hp = common::test_adamw(step, model.layout.decay_len);
        let groups = std::slice::from_mut(&mut state.weights);
        let micros = 0..MICRO_STEPS;
        step_fn
            .run(
                be,
                groups,
                &mut stats,
                micros,
                hp,
                |(micro, groups, stats, sync)| {
                    let w = &mut groups[0];
                    let hb = synthetic_batch(cfg, batch, seq, 9 + micro as u64 + 10 * step);
                    let db = upload_batch(be, &hb);
                    let scale = 1.0 / (hb.counted.max(1) * MICRO_STEPS) as f32;
                    let step_state = (&w.params, &mut w.grads, &mut acts);
                    micro_step(be, &model, step_state, &db, stats, (scale, step), sync);
                },
            )
            .unwrap();
    }
    be.download(&state.weights.params)
}

/// The device path (plain and ZeRO-1, buckets of `bucket_bytes`) against
/// the backend alone.
fn device_path_matches(preset: &str, sets: &[&str], shape: (usize, usize), bucket_bytes: usize) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let cfg = Config::resolve(preset, &sets).unwrap();
    let be = gpu();
    let comm = single_rank_comm();
    let alone = train(&be, &cfg, shape, None);
    // The engine's norm and embedding backward add with atomics, so two plain
    // runs already differ a little, and Adam's first steps (eps = 1e-12) turn
    // tiny gradients into full-size updates; the device path may differ from
    // the plain one by that much, not more.
    let floor = common::max_diff(&train(&be, &cfg, shape, None), &alone);
    let tol = TOL + 4.0 * floor;
    let start = Model::new(&cfg.model).init_params(5);
    let moved = common::max_diff(&alone, &start);
    assert!(
        moved > 1e-4,
        "training moved the parameters by only {moved}"
    );
    let model = Model::new(&cfg.model);
    for zero1 in [false, true] {
        let dp = DataParallel::new(&comm, zero1);
        let mut reducer = NcclDevice::new(&comm, &model, zero1, bucket_bytes);
        let p = train(&be, &cfg, shape, Some((&dp, &mut reducer)));
        let d = common::max_diff(&p, &alone);
        let counts = reducer.launch_counts();
        println!(
            "{preset}, zero1 {zero1}: max |Δparam| {d:.3e} (two plain runs {floor:.3e}, moved {moved:.3e}); {} buckets, launches {counts:?}",
            reducer.buckets()
        );
        assert_eq!(counts.steps, STEPS);
        assert!(
            d <= tol,
            "{preset}, zero1 {zero1}: params differ by {d} (tolerance {tol})"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU and NCCL"]
fn device_path_matches_the_plain_step_tiny() {
    device_path_matches("tiny", &[], (16, 32), 64 << 10);
}

#[test]
#[ignore = "needs a CUDA GPU and NCCL"]
fn device_path_matches_the_plain_step_crammed_bert() {
    device_path_matches("crammed-bert", &["model.layers=4"], (4, 128), 25 << 20);
}

/// With buckets smaller than a block, each block's gradients leave during
/// the backward, and nothing is left for after it.
#[test]
#[ignore = "needs a CUDA GPU and NCCL"]
fn buckets_are_launched_during_the_backward() {
    let cfg = Config::resolve("tiny", &["model.layers=4".to_string()]).unwrap();
    let be = gpu();
    let comm = single_rank_comm();
    let model = Model::new(&cfg.model);
    let dp = DataParallel::new(&comm, false);
    let mut reducer = NcclDevice::new(&comm, &model, false, 4);
    train(&be, &cfg, (8, 32), Some((&dp, &mut reducer)));
    let counts = reducer.launch_counts();
    println!("{counts:?}, {} buckets", reducer.buckets());
    assert_eq!(
        reducer.buckets(),
        cfg.model.layers + 2,
        "one bucket per stage"
    );
    assert_eq!(counts.during_backward, STEPS * reducer.buckets() as u64);
    assert_eq!(counts.after_backward, 0);
}
