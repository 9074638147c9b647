//! What data parallelism on the device needs from the backend: the compute
//! stream NCCL orders itself against, and the optimizer's reductions and
//! update on a ZeRO-1 shard (a range of the flat buffers), with the fused
//! AdamW launch the whole-buffer optimizer op shares.

use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::{f32_arg, Cuda, CudaBuf, View};
use crate::backend::AdamW;

/// What data parallelism on the device needs from the backend: its stream,
/// and the optimizer's reductions and update on a ZeRO-1 shard, a range of
/// the flat buffers.
impl Cuda {
    /// The compute stream: every op runs on it, in order.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `out[index] = Σ grads²` over elements `range` (a shard's part of the
    /// squared global norm).
    pub fn grad_norm_squared_range(
        &self,
        out: &mut CudaBuf,
        index: usize,
        grads: &CudaBuf,
        range: Range<usize>,
    ) {
        assert!(!out.bf16, "statistics buffers are f32");
        self.timed("grad_norm", || {
            self.reduce_into(
                out.ptr(),
                index,
                View::range(grads, range),
                true,
                1.0,
                false,
            )
        });
    }

    /// AdamW on elements `range` of `params` and `grads`, with `m` and `v`
    /// holding that range from their start (a shard's moments); `hp.decay_len`
    /// counts from the range's start. Also refreshes that range of the bf16
    /// weight copy.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_step_range(
        &self,
        params: &mut CudaBuf,
        grads: &CudaBuf,
        range: Range<usize>,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        norm_sq: &CudaBuf,
        norm_index: usize,
        hp: AdamW,
    ) {
        assert!(
            range.end <= params.len && range.end <= grads.len && range.len() <= m.len.min(v.len),
            "AdamW on a range outside its buffers"
        );
        params.fp8_stale();
        let shadow = super::locked_mut(&mut params.shadow)
            .as_ref()
            .map_or(0, |s| s.ptr + 2 * range.start as u64);
        let moments = (View::whole(m), View::whole(v));
        self.adamw_raw(
            (View::range(params, range.clone()), shadow),
            View::range(grads, range),
            moments,
            (norm_sq, norm_index),
            hp,
        );
    }

    /// Rewrites elements `range` of the bf16 weight copy of `params` from
    /// the f32 values (after NCCL wrote them behind the backend's back).
    pub fn refresh_weight_copy(&self, params: &CudaBuf, range: Range<usize>) {
        params.fp8_stale();
        let shadow = super::locked(&params.shadow);
        if let Some(mem) = shadow.as_ref() {
            let src = View::range(params, range.clone());
            self.convert_raw(
                mem.ptr + 2 * range.start as u64,
                true,
                src.ptr,
                false,
                src.len,
            );
        }
    }

    /// The fused AdamW kernel over views (params with its bf16 copy, or 0).
    pub(crate) fn adamw_raw(
        &self,
        (params, shadow): (View, u64),
        grads: View,
        (m, v): (View, View),
        (norm_sq, norm_index): (&CudaBuf, usize),
        hp: AdamW,
    ) {
        assert!(
            params.bf == 0 && grads.bf == 0 && m.bf == 0 && v.bf == 0,
            "AdamW runs on f32 buffers"
        );
        let step = hp.step as f64;
        let bias1 = (1.0 - (hp.beta1 as f64).powf(step)) as f32;
        let bias2 = (1.0 - (hp.beta2 as f64).powf(step)) as f32;
        let n = params.len;
        self.timed("adamw", || {
            self.launch_each(
                "adamw",
                n,
                &[
                    params.ptr,
                    shadow,
                    grads.ptr,
                    m.ptr,
                    v.ptr,
                    norm_sq.ptr(),
                    norm_index as u64,
                    hp.skipped_slot.map_or(u64::MAX, |s| s as u64),
                    f32_arg(hp.lr),
                    f32_arg(hp.beta1),
                    f32_arg(hp.beta2),
                    f32_arg(hp.eps),
                    f32_arg(hp.weight_decay),
                    f32_arg(bias1),
                    f32_arg(bias2),
                    f32_arg(hp.max_norm),
                    hp.decay_len.min(n) as u64,
                    n as u64,
                ],
            )
        });
    }
}
