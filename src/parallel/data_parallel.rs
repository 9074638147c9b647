//! Data parallelism over the [`Backend`]: every rank holds the whole model,
//! takes a disjoint, deterministic share of each global batch's micro-batches,
//! and the gradients are summed across ranks before the optimizer step.
//!
//! **Exactness.** The trainer scales each micro-batch's gradient by
//! `1 / (predictions of that micro-batch × micro-batches of the global
//! batch)`, and every micro-batch keeps the masking stream and dropout seed of
//! its global index. A *sum* of the ranks' gradients is therefore the gradient
//! one process computes for the same global batch (only the order of the f32
//! additions differs), so `train.batch_size`, the schedules and the budget
//! clock mean the same on any number of ranks.
//!
//! **ZeRO stage 1** ([`DataParallel::zero1`]): the flat buffer is cut into
//! `world_size` equal contiguous shards (the last one padded with zeros).
//! Gradients are reduce-scattered, each rank keeps Adam's `m` and `v` for its
//! shard only and runs the backend's own `adamw_step` on it, then the updated
//! shards are all-gathered into every rank's parameters. Clipping uses the
//! global norm: the sum of the shards' squared norms.
//!
//! **Two ways to reduce.** A [`StepReducer`] does a step's reduction and
//! optimizer step. [`HostStaged`] (the CPU backend, any backend in fact) runs
//! the collectives below on host copies (`Device::read`/`write` around a
//! [`Communicator`] over host slices) once the backward is over, which keeps
//! the `Backend` trait unchanged. On CUDA, `NcclDevice`
//! (`crate::parallel::nccl_device`) calls NCCL on the device buffers instead, in
//! buckets launched during the backward of the step's last micro-batch.

use super::comm::{CommError, Communicator};
use crate::backend::{AdamW, Backend};
use crate::model::GradSync;
use crate::optim::{optimizer_step, Weights, STAT_NORM_SQ};
use std::ops::Range;

/// How a rank's gradients become the group's and its optimizer steps.
pub trait StepReducer<B: Backend> {
    /// What the backward of the step's last local micro-batch reports its
    /// final gradient stages to (a rank with no micro-batch reports none).
    fn backward_sync(&mut self) -> &mut dyn GradSync<B>;
    /// After the backward: the gradients summed over the ranks, the global
    /// norm into `stats[STAT_NORM_SQ]`, AdamW clipped by it; every rank
    /// leaves with the same parameters.
    fn optimizer_step(
        &mut self,
        be: &B,
        dp: &DataParallel,
        w: &mut Weights<B>,
        stats: &mut B::Buf,
        hp: AdamW,
    ) -> Result<(), CommError>;
}

/// Every collective on host copies, after the backward
/// ([`DataParallel::optimizer_step`]).
pub struct HostStaged;

impl<B: Backend> GradSync<B> for HostStaged {
    /// The host path reduces everything at the end, so it ignores the stages.
    fn stage_done(&mut self, _be: &B, _grads: &B::Buf, _stage: usize) {}
}

impl<B: Backend> StepReducer<B> for HostStaged {
    fn backward_sync(&mut self) -> &mut dyn GradSync<B> {
        self
    }
    fn optimizer_step(
        &mut self,
        be: &B,
        dp: &DataParallel,
        w: &mut Weights<B>,
        stats: &mut B::Buf,
        hp: AdamW,
    ) -> Result<(), CommError> {
        dp.optimizer_step(be, w, stats, hp)
    }
}

/// A rank's contiguous part of the flat buffer under ZeRO-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// First element of the shard.
    pub start: usize,
    /// Elements per shard (equal on every rank; the padded total is
    /// `len × world_size`).
    pub len: usize,
    /// How many of the shard's elements are real parameters (the rest is padding).
    pub valid: usize,
}

impl Shard {
    /// Shard `rank` of `world` over a buffer of `n` elements.
    pub fn of(n: usize, rank: usize, world: usize) -> Shard {
        let len = n.div_ceil(world);
        let start = (rank * len).min(n);
        let valid = n.saturating_sub(start).min(len);
        Shard {
            start: rank * len,
            len,
            valid,
        }
    }
    pub fn padded_total(&self, world: usize) -> usize {
        self.len * world
    }
}

/// Which global micro-batches of a step rank `rank` of `world` computes: a
/// balanced contiguous split of `0..micro_steps` (ranks may get none when a
/// batch-size ramp makes the batch smaller than the group).
pub fn micro_range(micro_steps: usize, rank: usize, world: usize) -> Range<usize> {
    (rank * micro_steps / world)..((rank + 1) * micro_steps / world)
}

/// How the trainer runs on a group of ranks.
#[derive(Clone, Copy)]
pub struct DataParallel<'c> {
    pub comm: &'c dyn Communicator,
    /// Shard the optimizer state (ZeRO stage 1).
    pub zero1: bool,
}

impl<'c> DataParallel<'c> {
    pub fn new(comm: &'c dyn Communicator, zero1: bool) -> Self {
        DataParallel { comm, zero1 }
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// This rank's share of a step's `micro_steps` global micro-batches.
    pub fn micros(&self, micro_steps: usize) -> Range<usize> {
        micro_range(micro_steps, self.rank(), self.world_size())
    }

    pub fn shard(&self, n: usize) -> Shard {
        Shard::of(n, self.rank(), self.world_size())
    }

    /// Makes a full training state (fresh or loaded from any checkpoint)
    /// this rank's: under ZeRO-1, `m` and `v` are cut down to the shard.
    pub fn adopt_weights<B: Backend>(&self, be: &B, w: &mut Weights<B>) {
        if !self.zero1 {
            return;
        }
        let n = be.len(&w.params);
        let shard = self.shard(n);
        for buf in [&mut w.m, &mut w.v] {
            let mut host = be.read(buf, shard.start.min(n), shard.valid);
            host.resize(shard.len, 0.0);
            *buf = be.upload(&host);
        }
    }

    /// The optimizer step of the group: gradients summed over the ranks,
    /// the global norm into `stats[STAT_NORM_SQ]`, AdamW with clipping by it.
    /// Every rank leaves with the same parameters.
    pub fn optimizer_step<B: Backend>(
        &self,
        be: &B,
        w: &mut Weights<B>,
        stats: &mut B::Buf,
        hp: AdamW,
    ) -> Result<(), CommError> {
        if !self.zero1 {
            let mut grads = be.download(&w.grads);
            self.comm.all_reduce_sum(&mut grads)?;
            be.write(&mut w.grads, 0, &grads);
            optimizer_step(be, w, stats, hp);
            return Ok(());
        }
        let world = self.world_size();
        let n = be.len(&w.params);
        let shard = self.shard(n);
        let mut grads = be.download(&w.grads);
        grads.resize(shard.padded_total(world), 0.0);
        let mut grad_shard = vec![0f32; shard.len];
        self.comm.reduce_scatter_sum(&grads, &mut grad_shard)?;
        // The global squared norm: f64 within the shard, summed in rank order.
        let local: f64 = grad_shard.iter().map(|&g| g as f64 * g as f64).sum();
        let mut norm_sq = [local as f32];
        self.comm.all_reduce_sum(&mut norm_sq)?;
        be.write(stats, STAT_NORM_SQ, &norm_sq);

        let mut params = be.read(&w.params, shard.start.min(n), shard.valid);
        params.resize(shard.len, 0.0);
        let mut params_dev = be.upload(&params);
        let grads_dev = be.upload(&grad_shard);
        let hp_shard = AdamW {
            decay_len: w.decay_len.saturating_sub(shard.start).min(shard.len),
            ..hp
        };
        be.adamw_step(
            &mut params_dev,
            &grads_dev,
            &mut w.m,
            &mut w.v,
            stats,
            STAT_NORM_SQ,
            hp_shard,
        );
        let updated = be.download(&params_dev);
        let mut all = vec![0f32; shard.padded_total(world)];
        self.comm.all_gather(&updated, &mut all)?;
        be.write(&mut w.params, 0, &all[..n]);
        Ok(())
    }

    /// The whole `m` and `v` on the host (a collective under ZeRO-1: every
    /// rank must call it), for a checkpoint that any number of ranks can resume.
    pub fn gather_moments<B: Backend>(
        &self,
        be: &B,
        w: &Weights<B>,
    ) -> Result<(Vec<f32>, Vec<f32>), CommError> {
        let n = be.len(&w.params);
        if !self.zero1 {
            return Ok((be.download(&w.m), be.download(&w.v)));
        }
        let world = self.world_size();
        let mut out = Vec::with_capacity(2);
        for buf in [&w.m, &w.v] {
            let mut all = vec![0f32; self.shard(n).padded_total(world)];
            self.comm.all_gather(&be.download(buf), &mut all)?;
            all.truncate(n);
            out.push(all);
        }
        let v = out.pop().expect("two moments");
        let m = out.pop().expect("two moments");
        Ok((m, v))
    }

    /// Sums a few host values (step statistics) over the ranks.
    pub fn sum(&self, values: &mut [f32]) -> Result<(), CommError> {
        self.comm.all_reduce_sum(values)
    }
}
