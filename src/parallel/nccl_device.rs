//! Data parallel on CUDA: NCCL straight on the backend's gradient and
//! parameter buffers, no host copies, with the reduction of each gradient
//! bucket overlapped with the rest of the backward pass.
//!
//! Two streams. The backend issues every op on its compute stream; NCCL runs
//! on the communicator's own stream. When the backward of the step's last
//! micro-batch finishes a bucket ([`BucketSchedule`]), an event recorded on
//! the compute stream makes the communication stream wait for exactly that
//! work, and the bucket's collective is queued behind it while the compute
//! stream goes on with the earlier layers. Before the optimizer the compute
//! stream waits for the communication stream. A bucket's ranges are final
//! when it is launched, so the two streams never write the same memory.
//!
//! Plain data parallel: `ncclAllReduce` in place on each bucket's ranges,
//! then the backend's optimizer step over the whole buffer.
//!
//! ZeRO-1: each bucket's ranges are cut at the shard boundaries and each
//! piece is summed onto the rank that owns it (`ncclReduce` in place): a
//! reduce-scatter that leaves every shard where it lives in the flat buffer,
//! so nothing is padded or copied and the shards can be reduced bucket by
//! bucket during the backward. The owner's squared norm is all-reduced (one
//! value, on the device), AdamW runs on the shard's range
//! ([`Cuda::adamw_step_range`]), and every shard is broadcast in place from
//! its owner (an all-gather), after which the other shards' part of the bf16
//! weight copy is rewritten from the new f32 values.
//!
//! Every step ends with [`NcclComm::wait_done`], so a peer that died or hangs
//! ends the run after `--dist-timeout` with an error naming the operation.

use super::buckets::{BucketPlan, BucketSchedule};
use super::comm::CommError;
use super::data_parallel::{DataParallel, StepReducer};
use super::nccl::NcclComm;
use crate::backend::cuda::{Cuda, CudaBuf};
use crate::backend::AdamW;
use crate::model::{GradSync, Model};
use crate::optim::{optimizer_step, Weights, STAT_NORM_SQ};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaStream;
use std::ops::Range;

/// How many buckets went out during the backward and after it, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchCounts {
    pub steps: u64,
    pub during_backward: u64,
    pub after_backward: u64,
}

/// The device [`StepReducer`] of one rank.
pub struct NcclDevice<'c> {
    comm: &'c NcclComm,
    schedule: BucketSchedule,
    /// Each rank's part of the flat buffer under ZeRO-1 (`None`: plain).
    owners: Option<Vec<Range<usize>>>,
    /// A launch that failed during the backward, reported at the optimizer step.
    failed: Option<CommError>,
    counts: LaunchCounts,
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> CommError {
    CommError::Other(format!("{what} failed: {e:?}"))
}

/// `waiter` runs nothing queued after this call before `producer`'s work so far is done.
fn wait_for(waiter: &CudaStream, producer: &CudaStream) -> Result<(), CommError> {
    let event = producer
        .record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
        .map_err(|e| cuda_err("recording a CUDA event", e))?;
    waiter
        .wait(&event)
        .map_err(|e| cuda_err("making a stream wait for another", e))
}

impl<'c> NcclDevice<'c> {
    /// The reducer of `model`'s gradients over `comm`, in buckets of about
    /// `bucket_bytes` (f32), sharding the optimizer when `zero1`.
    pub fn new(comm: &'c NcclComm, model: &Model, zero1: bool, bucket_bytes: usize) -> Self {
        let plan = BucketPlan::new(&model.layout.grad_stages(), bucket_bytes / 4);
        let world = super::comm::Communicator::world_size(comm);
        let owners = zero1.then(|| {
            (0..world)
                .map(|r| {
                    let s = super::data_parallel::Shard::of(model.layout.len, r, world);
                    s.start..s.start + s.valid
                })
                .collect()
        });
        NcclDevice {
            comm,
            schedule: BucketSchedule::new(plan),
            owners,
            failed: None,
            counts: LaunchCounts::default(),
        }
    }

    pub fn launch_counts(&self) -> LaunchCounts {
        self.counts
    }

    pub fn buckets(&self) -> usize {
        self.schedule.plan().buckets().len()
    }

    /// Queues the collectives of `buckets` on the communication stream,
    /// behind the compute stream's work so far.
    fn launch(&self, be: &Cuda, grads: &CudaBuf, buckets: Range<usize>) -> Result<(), CommError> {
        if buckets.is_empty() {
            return Ok(());
        }
        wait_for(self.comm.stream(), be.stream())?;
        for bucket in &self.schedule.plan().buckets()[buckets] {
            // SAFETY: the ranges lie in the gradient buffer (the plan covers
            // the layout it was made from), and they are final: the compute
            // stream does not write them again before it waits for the
            // communication stream at the optimizer step.
            unsafe {
                match &self.owners {
                    None => self.comm.all_reduce_ranges(grads.ptr(), &bucket.ranges)?,
                    Some(owners) => self
                        .comm
                        .reduce_ranges(grads.ptr(), &bucket.ranges, owners)?,
                }
            }
        }
        Ok(())
    }

    /// ZeRO-1's step once the shards' gradients are summed on their owners.
    fn zero1_step(
        &self,
        be: &Cuda,
        owners: &[Range<usize>],
        w: &mut Weights<Cuda>,
        stats: &mut CudaBuf,
        hp: AdamW,
    ) -> Result<(), CommError> {
        let rank = super::comm::Communicator::rank(self.comm);
        let own = owners[rank].clone();
        let (comm_stream, compute) = (self.comm.stream(), be.stream());
        be.grad_norm_squared_range(stats, STAT_NORM_SQ, &w.grads, own.clone());
        wait_for(comm_stream, compute)?;
        let norm = STAT_NORM_SQ..STAT_NORM_SQ + 1;
        // SAFETY: one value of the statistics buffer, which the compute
        // stream leaves alone until it waits below.
        unsafe { self.comm.all_reduce_ranges(stats.ptr(), &[norm])? };
        wait_for(compute, comm_stream)?;
        let hp_shard = AdamW {
            decay_len: w.decay_len.saturating_sub(own.start),
            ..hp
        };
        be.adamw_step_range(
            &mut w.params,
            &w.grads,
            own,
            &mut w.m,
            &mut w.v,
            stats,
            STAT_NORM_SQ,
            hp_shard,
        );
        wait_for(comm_stream, compute)?;
        // SAFETY: the shards lie in the parameter buffer; the compute stream
        // reads them again only after it waits below.
        unsafe { self.comm.broadcast_ranges(w.params.ptr(), owners)? };
        wait_for(compute, comm_stream)?;
        for (r, range) in owners.iter().enumerate() {
            if r != rank && !range.is_empty() {
                be.refresh_weight_copy(&w.params, range.clone());
            }
        }
        Ok(())
    }
}

impl GradSync<Cuda> for NcclDevice<'_> {
    fn stage_done(&mut self, be: &Cuda, grads: &CudaBuf, stage: usize) {
        if self.failed.is_some() {
            return;
        }
        let ready = self.schedule.stage_done(stage);
        self.counts.during_backward += ready.len() as u64;
        if let Err(e) = self.launch(be, grads, ready) {
            self.failed = Some(e);
        }
    }
}

impl StepReducer<Cuda> for NcclDevice<'_> {
    fn backward_sync(&mut self) -> &mut dyn GradSync<Cuda> {
        self
    }

    fn optimizer_step(
        &mut self,
        be: &Cuda,
        _dp: &DataParallel,
        w: &mut Weights<Cuda>,
        stats: &mut CudaBuf,
        hp: AdamW,
    ) -> Result<(), CommError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let rest = self.schedule.rest();
        self.counts.after_backward += rest.len() as u64;
        self.launch(be, &w.grads, rest)?;
        self.schedule.start_step();
        self.counts.steps += 1;
        wait_for(be.stream(), self.comm.stream())?;
        match self.owners.clone() {
            None => optimizer_step(be, w, stats, hp),
            Some(owners) => self.zero1_step(be, &owners, w, stats, hp)?,
        }
        self.comm.wait_done("gradient reduction")
    }
}
