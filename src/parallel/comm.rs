//! Collective communication between the ranks of a data-parallel run.
//!
//! [`Communicator`] is the small set of collectives the trainer needs, over
//! host f32 slices. [`ThreadComm`] implements it for ranks that are threads of
//! one process (tests, and the single-process multi-rank mode): every
//! collective sums in rank order, so results do not depend on thread timing.
//! `NcclComm` implements it too (through a GPU staging buffer) for the small
//! values a multi-GPU run exchanges; its gradients go through NCCL on the
//! device buffers instead (`nccl_device`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CommError {
    #[error("{} never reached the {op} collective within {timeout:?} (rank {rank} gave up waiting)", ranks_list(.missing))]
    Timeout {
        op: &'static str,
        rank: usize,
        missing: Vec<usize>,
        timeout: Duration,
    },
    #[error("{} left the group before the {op} collective (rank {rank} was waiting for it)", ranks_list(.missing))]
    PeerGone {
        op: &'static str,
        rank: usize,
        missing: Vec<usize>,
    },
    #[error("rank {rank} called {op} while rank {other} called {other_op}: the ranks ran different programs")]
    Mismatch {
        rank: usize,
        op: &'static str,
        other: usize,
        other_op: &'static str,
    },
    #[error("rank {rank} passed {got} values to {op}, but rank {other} passed {expected}")]
    Length {
        rank: usize,
        op: &'static str,
        got: usize,
        other: usize,
        expected: usize,
    },
    #[error("{op} needs {expected} values on rank {rank}, got {got}")]
    Shape {
        rank: usize,
        op: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the {op} collective of rank {rank} did not finish within {timeout:?}: another rank died or hung (NCCL cannot say which)")]
    Stalled {
        op: &'static str,
        rank: usize,
        timeout: Duration,
    },
    #[error("rank {rank} waited {timeout:?} for the NCCL group of {world} ranks to form (ncclCommInitRankConfig): another rank died or hung after the rendezvous (NCCL cannot say which)")]
    InitStalled {
        rank: usize,
        world: usize,
        timeout: Duration,
    },
    #[error("the group failed earlier ({0}); its ranks cannot communicate any more")]
    Failed(String),
    #[error("{0}")]
    Other(String),
}

fn ranks_list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    if ranks.len() == 1 {
        format!("rank {}", names[0])
    } else {
        format!("ranks {}", names.join(", "))
    }
}

/// The collectives of a data-parallel group. Every rank calls the same
/// collectives in the same order; each call returns an error naming the
/// missing ranks if they do not arrive within the communicator's timeout.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// `buf ← Σ_ranks buf`, summed in rank order.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError>;
    /// `out ← Σ_ranks input[rank·c .. (rank+1)·c]` with `c = out.len()` and
    /// `input.len() = c · world_size`.
    fn reduce_scatter_sum(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError>;
    /// `out[r·c .. (r+1)·c] ← input of rank r` with `c = input.len()`.
    fn all_gather(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError>;
    /// `buf ← buf of rank root`.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CommError>;
    fn barrier(&self) -> Result<(), CommError>;
}

/// The group of one process: `world_size() == 1`, every collective is the identity.
pub struct SingleComm;

impl Communicator for SingleComm {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn reduce_scatter_sum(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_len(0, "reduce_scatter", input.len(), out.len())?;
        out.copy_from_slice(input);
        Ok(())
    }
    fn all_gather(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        check_len(0, "all_gather", out.len(), input.len())?;
        out.copy_from_slice(input);
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<(), CommError> {
        check_root(0, root, 1)
    }
    fn barrier(&self) -> Result<(), CommError> {
        Ok(())
    }
}

fn check_len(rank: usize, op: &'static str, expected: usize, got: usize) -> Result<(), CommError> {
    if expected == got {
        Ok(())
    } else {
        Err(CommError::Shape {
            rank,
            op,
            expected,
            got,
        })
    }
}

fn check_root(rank: usize, root: usize, world: usize) -> Result<(), CommError> {
    if root < world {
        Ok(())
    } else {
        Err(CommError::Other(format!(
            "rank {rank} asked for a broadcast from rank {root}, but the group has {world} ranks"
        )))
    }
}

/// One collective in progress: what each rank deposited.
struct Round {
    /// Number of completed rounds.
    generation: u64,
    op: Option<&'static str>,
    deposits: Vec<Option<Vec<f32>>>,
    /// The deposits of the last completed round, in rank order.
    published: Arc<Vec<Vec<f32>>>,
    /// Ranks whose communicator was dropped.
    gone: Vec<bool>,
    failed: Option<String>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    round: Mutex<Round>,
    cv: Condvar,
}

/// A rank of an in-process group (ranks as threads). Dropping it tells the
/// others that the rank left, so they fail at once instead of waiting out
/// the timeout.
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadComm {
    /// `n` communicators of one group, with a 60 s timeout per collective.
    pub fn group(n: usize) -> Vec<ThreadComm> {
        Self::group_with_timeout(n, Duration::from_secs(60))
    }

    pub fn group_with_timeout(n: usize, timeout: Duration) -> Vec<ThreadComm> {
        assert!(n > 0, "a group has at least one rank");
        let shared = Arc::new(Shared {
            world: n,
            timeout,
            round: Mutex::new(Round {
                generation: 0,
                op: None,
                deposits: vec![None; n],
                published: Arc::new(Vec::new()),
                gone: vec![false; n],
                failed: None,
            }),
            cv: Condvar::new(),
        });
        (0..n)
            .map(|rank| ThreadComm {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A rank that panicked while holding the lock left consistent data
        // behind (every update is a single assignment), so keep going.
        self.shared
            .round
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deposits `data` for collective `op` and returns every rank's deposit,
    /// in rank order, once all have arrived.
    fn exchange(&self, op: &'static str, data: Vec<f32>) -> Result<Arc<Vec<Vec<f32>>>, CommError> {
        let sh = &*self.shared;
        let mut round = self.lock();
        if let Some(why) = &round.failed {
            return Err(CommError::Failed(why.clone()));
        }
        if let Some(other_op) = round.op {
            let other = (0..sh.world)
                .find(|&r| round.deposits[r].is_some())
                .expect("a round with an op has a deposit");
            let fail = if other_op != op {
                Some(CommError::Mismatch {
                    rank: self.rank,
                    op,
                    other,
                    other_op,
                })
            } else {
                let expected = round.deposits[other].as_ref().map_or(0, Vec::len);
                (expected != data.len()).then_some(CommError::Length {
                    rank: self.rank,
                    op,
                    got: data.len(),
                    other,
                    expected,
                })
            };
            if let Some(e) = fail {
                round.failed = Some(e.to_string());
                sh.cv.notify_all();
                return Err(e);
            }
        }
        round.op = Some(op);
        round.deposits[self.rank] = Some(data);
        let generation = round.generation;
        if round.deposits.iter().all(Option::is_some) {
            let all: Vec<Vec<f32>> = round
                .deposits
                .iter_mut()
                .map(|d| d.take().expect("all deposited"))
                .collect();
            round.published = Arc::new(all);
            round.op = None;
            round.generation += 1;
            sh.cv.notify_all();
            return Ok(round.published.clone());
        }
        let deadline = Instant::now() + sh.timeout;
        loop {
            if round.generation != generation {
                return Ok(round.published.clone());
            }
            if let Some(why) = &round.failed {
                return Err(CommError::Failed(why.clone()));
            }
            let missing: Vec<usize> = (0..sh.world)
                .filter(|&r| round.deposits[r].is_none())
                .collect();
            let gone: Vec<usize> = missing.iter().copied().filter(|&r| round.gone[r]).collect();
            if !gone.is_empty() {
                let e = CommError::PeerGone {
                    op,
                    rank: self.rank,
                    missing: gone,
                };
                round.failed = Some(e.to_string());
                sh.cv.notify_all();
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                let e = CommError::Timeout {
                    op,
                    rank: self.rank,
                    missing,
                    timeout: sh.timeout,
                };
                round.failed = Some(e.to_string());
                sh.cv.notify_all();
                return Err(e);
            }
            round = sh
                .cv
                .wait_timeout(round, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Drop for ThreadComm {
    fn drop(&mut self) {
        let mut round = self.lock();
        round.gone[self.rank] = true;
        self.shared.cv.notify_all();
    }
}

/// `out[i] = Σ_r parts[r][offset + i]`, accumulated in rank order.
fn sum_in_rank_order(parts: &[Vec<f32>], offset: usize, out: &mut [f32]) {
    let len = out.len();
    out.copy_from_slice(&parts[0][offset..offset + len]);
    for part in &parts[1..] {
        for (o, p) in out.iter_mut().zip(&part[offset..offset + len]) {
            *o += p;
        }
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError> {
        let parts = self.exchange("all_reduce", buf.to_vec())?;
        sum_in_rank_order(&parts, 0, buf);
        Ok(())
    }
    fn reduce_scatter_sum(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        let op = "reduce_scatter";
        check_len(self.rank, op, out.len() * self.shared.world, input.len())?;
        let parts = self.exchange(op, input.to_vec())?;
        sum_in_rank_order(&parts, self.rank * out.len(), out);
        Ok(())
    }
    fn all_gather(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        let op = "all_gather";
        check_len(self.rank, op, input.len() * self.shared.world, out.len())?;
        let parts = self.exchange(op, input.to_vec())?;
        for (chunk, part) in out.chunks_mut(input.len().max(1)).zip(parts.iter()) {
            chunk.copy_from_slice(part);
        }
        Ok(())
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        check_root(self.rank, root, self.shared.world)?;
        let parts = self.exchange("broadcast", buf.to_vec())?;
        buf.copy_from_slice(&parts[root]);
        Ok(())
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.exchange("barrier", Vec::new()).map(|_| ())
    }
}

/// Broadcasts an f64 from `root` without losing precision (as two f32: the
/// value rounded, and the rounding error).
pub fn broadcast_f64(comm: &dyn Communicator, value: f64, root: usize) -> Result<f64, CommError> {
    let hi = value as f32;
    let lo = (value - hi as f64) as f32;
    let mut buf = [hi, lo];
    comm.broadcast(&mut buf, root)?;
    Ok(buf[0] as f64 + buf[1] as f64)
}
