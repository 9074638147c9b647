//! The f32 reference backend: every op of the [`Backend`](super::Backend) trait
//! on the host, parallel over rows (or heads) with rayon and with matmuls
//! through the `gemm` crate.
//!
//! Results are bit-identical from run to run: work is split across threads
//! only where each output element is computed by one thread, and every sum
//! across rows or chunks (parameter gradients, the gradient norm) is formed
//! from blocks of a fixed size combined in a fixed order, never in the order
//! threads finish. The tests check that even the thread count leaves the
//! bits unchanged.
//!
//! One file per op family, each holding its trait implementation with every
//! forward next to its backward.

mod activation;
mod attention;
mod device;
mod embedding;
mod loss;
mod math;
mod matmul;
mod norm;
mod optim;

use std::ops::Range;

use rayon::prelude::*;

use super::fp8::Fp8Switch;

/// The CPU device. Ops run on the rayon pool they are called from.
#[derive(Debug, Clone)]
pub struct Cpu {
    threads: usize,
    /// `CRAM_FP8`: the forward products the GPU would run in FP8 round
    /// their operands to E4M3 as the GPU does (`backend/fp8.rs`): a
    /// reference for the GPU's FP8 and a way to study its effect on
    /// learning without a GPU. Off, the CPU is the exact f32 reference.
    fp8: Fp8Switch,
}

impl Cpu {
    /// A device on rayon's current pool (the global one unless called inside
    /// `ThreadPool::install`), using all of its threads.
    pub fn new() -> Self {
        Cpu {
            threads: rayon::current_num_threads(),
            fp8: Fp8Switch::from_env(),
        }
    }

    /// The same device with the FP8 forward's rounding as `fp8` says,
    /// whatever `CRAM_FP8` says (for tests, which share one environment).
    pub fn with_fp8(self, fp8: Fp8Switch) -> Self {
        Cpu { fp8, ..self }
    }
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new()
    }
}

/// Rows per block in [`sum_row_blocks`]. Fixed, so that the order of the
/// additions (and thus the bits of the result) does not depend on the number
/// of threads.
const ROW_BLOCK: usize = 32;

/// `dst[..width] += Σ_blocks partial(block)`, where `fill(rows, partial)` adds
/// the contribution of `rows` into a zeroed `partial` of length `width`. Blocks
/// run in parallel; their partials are added into `dst` in block order.
fn sum_row_blocks<F>(dst: &mut [f32], rows: usize, width: usize, fill: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let blocks = rows.div_ceil(ROW_BLOCK);
    let mut partials = vec![0f32; blocks * width];
    partials
        .par_chunks_mut(width.max(1))
        .enumerate()
        .for_each(|(block, partial)| {
            let start = block * ROW_BLOCK;
            fill(start..(start + ROW_BLOCK).min(rows), partial);
        });
    for partial in partials.chunks(width.max(1)) {
        add_into(&mut dst[..width], partial);
    }
}

/// `dst += src`, element-wise.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Elements per task in element-wise ops: large enough to amortise rayon's
/// scheduling, small enough to balance two to a few dozen threads.
const ELEMENT_CHUNK: usize = 1 << 14;
