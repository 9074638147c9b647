//! The Backend ops on the GPU: argument plumbing around the kernels in
//! `kernels/*.cu` and the cuBLASLt products in `blas.rs`. Each op is wrapped
//! in `timed` so that `cram bench --profile` can attribute GPU time.
//!
//! One file per op family, named like the CPU backend's (`cpu/norm.rs` and
//! `cuda/ops/norm.rs` implement the same trait) and matching the kernel
//! sources in `kernels/*.cu`, so an op is found in the same place on either
//! backend. This file holds only what several families share: the row
//! kernels' block shape and the pointer into a parameter tensor.

mod activation;
mod attention;
mod embedding;
mod flash_attention;
mod fp8;
mod loss;
mod matmul;
mod norm;
mod optim;

pub(super) use attention::{FusedAttention, FUSED_ATTENTION};
pub(super) use flash_attention::{FlashAttention, FLASH_ATTENTION};
pub(super) use norm::NORM_BACKWARD_SHARED;

use super::{Cuda, CudaBuf};
use crate::backend::Span;

/// Threads per block of the row kernels (one warp per row).
const ROW_BLOCK: u32 = 256;
const WARPS_PER_BLOCK: usize = ROW_BLOCK as usize / 32;

impl Cuda {
    fn row_grid(&self, rows: usize) -> u32 {
        rows.div_ceil(WARPS_PER_BLOCK).max(1) as u32
    }

    /// Pointer to a parameter tensor in an f32 buffer.
    fn f32_at(buf: &CudaBuf, span: Span) -> u64 {
        assert!(!buf.bf16, "parameters and gradients are f32");
        buf.at(span.offset)
    }
}
