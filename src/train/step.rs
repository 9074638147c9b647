//! The training step, written once: zero the gradients, forward and
//! backward over the step's micro-batches (gradients accumulate on the
//! device), the reduction over a data-parallel group, the global norm,
//! clipping and AdamW. Pretraining, `cram bench` and GLUE fine-tuning all
//! step through [`Step::run`]; what differs between them (which model,
//! which batches, which loss) is the micro-batch closure they pass.
//!
//! The step's statistics stay on the device (`stats`, slots `STAT_*` of
//! [`crate::optim`]) and are read back only when the caller logs them.

use crate::backend::{AdamW, Backend, DeviceError};
use crate::model::{Activations, DeviceBatch, GradSync, LossPass, Model, NoSync};
use crate::optim::{optimizer_step, optimizer_step_groups, Weights, STAT_LOSS};
use crate::parallel::{CommError, DataParallel, StepReducer};
use std::ops::Range;

/// Why a step did not complete: a collective of the group failed, or the
/// device did (see [`crate::backend::Device::check`]).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// What a step's micro-batch closure receives: the micro-batch's index
/// (global, so that every rank reads the same data for it), the parameter
/// groups (gradients accumulate into them), the statistics buffer, and
/// where the backward reports its final gradient stages.
pub type MicroBatch<'a, B> = (
    usize,
    &'a mut [Weights<B>],
    &'a mut <B as crate::backend::Device>::Buf,
    &'a mut dyn GradSync<B>,
);

/// One training step's machinery: the data-parallel group it reduces over
/// (`None` alone) and the scratch a multi-group clip needs.
pub struct Step<'g, B: Backend> {
    group: Option<(&'g DataParallel<'g>, &'g mut dyn StepReducer<B>)>,
    /// Per-group squared norms and their sum (two or more groups only).
    group_norms: Option<(B::Buf, B::Buf)>,
}

impl<'g, B: Backend> Step<'g, B> {
    /// A step alone on one device.
    pub fn alone() -> Self {
        Step {
            group: None,
            group_norms: None,
        }
    }

    /// A step of one rank of a data-parallel group whose gradients `reducer`
    /// sums (on the host or on the device), or alone (`None`).
    pub fn new(group: Option<(&'g DataParallel<'g>, &'g mut dyn StepReducer<B>)>) -> Self {
        Step {
            group,
            group_norms: None,
        }
    }

    /// The group this step reduces over.
    pub fn dist(&self) -> Option<&'g DataParallel<'g>> {
        self.group.as_ref().map(|(dp, _)| *dp)
    }

    /// This rank's share of a step of `micro_steps` global micro-batches.
    pub fn micros(&self, micro_steps: usize) -> Range<usize> {
        self.dist()
            .map_or(0..micro_steps, |dp| dp.micros(micro_steps))
    }

    /// Runs one step over `groups`: zeroes their gradients, calls `micro`
    /// for each micro-batch of `micros` (forward and backward; the last one
    /// with the reducer's backward sync), then reduces over the group and
    /// updates every group with AdamW `hp`, clipped by the global norm (in
    /// `stats[STAT_NORM_SQ]` for one group). A data-parallel group trains
    /// one parameter group. A device failure during the step is returned
    /// here (allocations and launches are host-side; a failed kernel shows
    /// at the next read, which its caller checks).
    pub fn run(
        &mut self,
        be: &B,
        groups: &mut [Weights<B>],
        stats: &mut B::Buf,
        micros: Range<usize>,
        hp: AdamW,
        mut micro: impl FnMut(MicroBatch<'_, B>),
    ) -> Result<(), StepError> {
        for w in groups.iter_mut() {
            be.zero(&mut w.grads);
        }
        let last = micros.end.checked_sub(1);
        for k in micros {
            // Only the last micro-batch leaves final gradients to reduce.
            let sync: &mut dyn GradSync<B> = match self.group.as_mut() {
                Some((_, reducer)) if Some(k) == last => reducer.backward_sync(),
                _ => &mut NoSync,
            };
            micro((k, &mut *groups, &mut *stats, sync));
        }
        match (self.group.as_mut(), groups) {
            (Some((dp, reducer)), [w]) => reducer.optimizer_step(be, dp, w, stats, hp)?,
            (Some(_), _) => unreachable!("a data-parallel step trains one parameter group"),
            (None, [w]) => optimizer_step(be, w, stats, hp),
            (None, groups) => {
                let n = groups.len();
                if (self.group_norms.as_ref()).is_none_or(|(norms, _)| be.len(norms) != n) {
                    self.group_norms = Some((be.alloc(n), be.alloc(1)));
                }
                let (norms, total) = self.group_norms.as_mut().expect("allocated above");
                optimizer_step_groups(be, groups, (norms, total), hp);
            }
        }
        be.check()?;
        Ok(())
    }
}

/// Forward and backward of one pretraining micro-batch: gradients
/// accumulate into `grads` scaled by `scale` (1 / predictions of the whole
/// step), and the scaled loss into `stats[STAT_LOSS]`, all on the device.
/// The backward tells `sync` which gradient stages are final.
pub fn micro_step<B: Backend>(
    be: &B,
    model: &Model,
    (params, grads, acts): (&B::Buf, &mut B::Buf, &mut Activations<B>),
    batch: &DeviceBatch<B>,
    stats: &mut B::Buf,
    (scale, dropout_seed): (f32, u64),
    sync: &mut dyn GradSync<B>,
) {
    let pass = LossPass::Gradients {
        grads: &mut *grads,
        dscale: scale,
    };
    model.forward_loss(be, params, acts, batch, true, dropout_seed, pass);
    be.sum_into(stats, STAT_LOSS, &acts.head.losses, scale);
    model.backward_synced(be, params, grads, acts, batch, true, sync);
}
