//! The single-process multi-rank mode: `ranks` threads, each with its own CPU
//! backend and a [`ThreadComm`], train one run together. It is what the tests
//! use to check that N ranks equal one process, and it exercises the whole
//! data-parallel path (sharding, collectives, checkpoints) without GPUs.

use crate::backend::cpu::Cpu;
use crate::config::Config;
use crate::data::TokenStore;
use crate::parallel::DataParallel;
use crate::parallel::{CommError, ThreadComm};
use crate::train::{pretrain_parallel, RunOptions, RunSummary, TrainError};
use std::time::Duration;

/// Runs [`pretrain_parallel`] on `ranks` threads of this process (ZeRO-1
/// when `zero1`, `timeout` per collective) and returns rank 0's summary. When ranks fail, the error
/// returned is the cause (a rank's own failure), not the others' reports
/// that a peer left.
pub fn pretrain_threads(
    cfg: &Config,
    store: &TokenStore,
    opts: &RunOptions,
    ranks: usize,
    zero1: bool,
    timeout: Duration,
) -> Result<RunSummary, TrainError> {
    if ranks == 0 {
        return Err(TrainError::Run("a run needs at least one rank".into()));
    }
    let comms = ThreadComm::group_with_timeout(ranks, timeout);
    let results: Vec<Result<RunSummary, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                scope.spawn(move || {
                    let be = Cpu::new();
                    let dp = DataParallel::new(&comm, zero1);
                    pretrain_parallel(&be, cfg, store, opts, Some(&dp))
                    // `comm` drops here: the others learn that this rank left.
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Run(format!("rank {rank} panicked"))))
            })
            .collect()
    });
    let is_echo = |e: &TrainError| {
        matches!(
            e,
            TrainError::Comm(CommError::PeerGone { .. } | CommError::Failed(_))
        )
    };
    let mut first_err = None;
    let mut summary = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(s) if rank == 0 => summary = Some(s),
            Ok(_) => {}
            Err(e) => match &first_err {
                Some(prev) if !is_echo(prev) || is_echo(&e) => {}
                _ => first_err = Some(e),
            },
        }
    }
    match (first_err, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => unreachable!("rank 0 returned either a summary or an error"),
    }
}
