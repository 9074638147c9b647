//! The optimizer ops on whole buffers: the squared gradient norm and the
//! fused AdamW step (its kernel launch is shared with the sharded update).

use crate::backend::cuda::{Cuda, CudaBuf, View};
use crate::backend::{AdamW, OptimOps};

impl OptimOps for Cuda {
    fn grad_norm_squared(&self, out: &mut CudaBuf, index: usize, grads: &CudaBuf) {
        assert!(!out.bf16, "statistics buffers are f32");
        self.timed("grad_norm", || {
            self.reduce_into(out.ptr(), index, View::whole(grads), true, 1.0, false)
        });
    }

    fn adamw_step(
        &self,
        params: &mut CudaBuf,
        grads: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        norm_sq: &mut CudaBuf,
        norm_index: usize,
        hp: AdamW,
    ) {
        params.fp8_stale();
        let shadow = crate::backend::cuda::locked_mut(&mut params.shadow)
            .as_ref()
            .map_or(0, |s| s.ptr);
        self.adamw_raw(
            (View::whole(params), shadow),
            View::whole(grads),
            (View::whole(m), View::whole(v)),
            (norm_sq, norm_index),
            hp,
        );
    }
}
