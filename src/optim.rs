//! The optimizer and its state: parameters with their gradients and AdamW
//! moments ([`Weights`]), the device-side statistics a step leaves behind
//! (`STAT_*`), AdamW built from the config, and the update itself (global
//! gradient norm, clipping by it, AdamW), all without a host round-trip.
//!
//! It sits below data parallelism and training: a data-parallel reducer
//! runs the same update on its shard, the trainer, `cram bench` and GLUE
//! fine-tuning run it through [`crate::train::step`].

use crate::backend::{AdamW, Backend};
use crate::config::TrainConfig;

/// Slots of the device-side statistics buffer (`be.alloc(STATS)`).
pub const STAT_LOSS: usize = 0;
pub const STAT_NORM_SQ: usize = 1;
/// The squared gradient norm after the first micro-batch (noise scale only).
pub const STAT_SMALL_NORM_SQ: usize = 2;
/// The parameters' squared norm, computed before each checkpoint.
pub const STAT_PARAM_NORM_SQ: usize = 3;
/// Steps skipped since the last read-back (non-finite gradient norm).
pub const STAT_SKIPPED: usize = 4;
pub const STATS: usize = 5;

/// One flat buffer of parameters with its gradients and AdamW moments, on
/// the device: a parameter group. Pretraining has one (the model); GLUE
/// fine-tuning two (the pretrained model and the new task head).
pub struct Weights<B: Backend> {
    pub params: B::Buf,
    pub grads: B::Buf,
    pub m: B::Buf,
    pub v: B::Buf,
    /// Weight decay applies to `params[..decay_len]` (matrices and
    /// embeddings, laid out first); norms, biases and scalars come after.
    pub decay_len: usize,
}

impl<B: Backend> Weights<B> {
    /// `init` as the parameters, zero gradients and moments.
    pub fn new(be: &B, init: &[f32], decay_len: usize) -> Self {
        let n = init.len();
        Weights {
            params: be.upload(init),
            grads: be.alloc(n),
            m: be.alloc(n),
            v: be.alloc(n),
            decay_len,
        }
    }
}

/// AdamW with the config's betas, epsilon, weight decay and clipping, at
/// learning rate `lr` for the 1-based `step`. `decay_len` is a placeholder:
/// [`optimizer_step`] applies each group's own.
pub fn adamw(t: &TrainConfig, lr: f64, step: u64, skipped_slot: Option<usize>) -> AdamW {
    AdamW {
        lr: lr as f32,
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.eps,
        weight_decay: t.weight_decay,
        step,
        decay_len: 0,
        max_norm: t.grad_clip,
        skipped_slot,
    }
}

/// The global gradient norm of `w` into `stats[STAT_NORM_SQ]`, then AdamW
/// with clipping by it, without a host round-trip.
pub fn optimizer_step<B: Backend>(be: &B, w: &mut Weights<B>, stats: &mut B::Buf, hp: AdamW) {
    be.grad_norm_squared(stats, STAT_NORM_SQ, &w.grads);
    let hp = AdamW {
        decay_len: w.decay_len,
        ..hp
    };
    be.adamw_step(
        &mut w.params,
        &w.grads,
        &mut w.m,
        &mut w.v,
        stats,
        STAT_NORM_SQ,
        hp,
    );
}

/// [`optimizer_step`] over several groups clipped by one global norm:
/// each group's squared norm into `norms[i]`, their sum into `total[0]`,
/// then AdamW on each group with its own `decay_len`.
pub fn optimizer_step_groups<B: Backend>(
    be: &B,
    groups: &mut [Weights<B>],
    (norms, total): (&mut B::Buf, &mut B::Buf),
    hp: AdamW,
) {
    for (i, w) in groups.iter().enumerate() {
        be.grad_norm_squared(norms, i, &w.grads);
    }
    be.zero(total);
    be.sum_into(total, 0, norms, 1.0);
    for w in groups.iter_mut() {
        let hp = AdamW {
            decay_len: w.decay_len,
            ..hp
        };
        be.adamw_step(&mut w.params, &w.grads, &mut w.m, &mut w.v, total, 0, hp);
    }
}
