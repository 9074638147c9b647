//! Picking a plan's algorithm by measurement (`CRAM_MATMUL_TUNE`).
//!
//! cuBLASLt's heuristic ranks the algorithms it can run for a shape by a
//! model of the GPU, and its first choice is not always the fastest at our
//! shapes. On a plan's first product, before the product itself, each of
//! the heuristic's first [`CANDIDATES`] algorithms runs the same product a
//! few times between two events and the fastest is kept for the shape. The
//! cost is a few products and one wait for the GPU per shape, once per
//! backend. The product runs on its own operands; its output goes to a
//! scratch buffer when the output also holds an input (`C` is `D` and
//! `beta` is not zero: an accumulation), else to the output itself, which
//! the real product then overwrites.

use std::ffi::c_void;

use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{result as drv, sys as dsys};

use super::{blas_err, Blas, Key, Plan, Product};
use crate::backend::cuda::CudaError;

/// How many of the heuristic's algorithms are timed.
const CANDIDATES: usize = 8;
/// Timed runs of each candidate, after one untimed run.
const REPS: usize = 3;

/// How a plan picks its algorithm (`CRAM_MATMUL_TUNE`, read with the
/// backend's other switches in `switches.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tune {
    /// The heuristic's first choice (`CRAM_MATMUL_TUNE=off`, the comparison
    /// switch).
    First,
    /// The fastest candidate, measured (the default).
    #[default]
    Fastest,
    /// As `Fastest`, and each shape's times are printed to stderr
    /// (`CRAM_MATMUL_TUNE=report`).
    Report,
}

impl Tune {
    /// How many algorithms to ask the heuristic for.
    pub(super) fn candidates(self) -> usize {
        match self {
            Tune::First => 1,
            Tune::Fastest | Tune::Report => CANDIDATES,
        }
    }
}

/// The heuristic's algorithms for a plan's descriptors, best guess first
/// (at most `count`; an error when there is none).
pub(super) fn heuristic(
    handle: sys::cublasLtHandle_t,
    (desc, a, b, c): (
        sys::cublasLtMatmulDesc_t,
        sys::cublasLtMatrixLayout_t,
        sys::cublasLtMatrixLayout_t,
        sys::cublasLtMatrixLayout_t,
    ),
    pref: sys::cublasLtMatmulPreference_t,
    count: usize,
) -> Result<Vec<sys::cublasLtMatmulAlgo_t>, CudaError> {
    // SAFETY: zeroed plain-data structs that cuBLASLt fills.
    let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> =
        vec![unsafe { std::mem::zeroed() }; count];
    let mut found = 0;
    // SAFETY: live descriptors; `results` holds `count` entries.
    unsafe {
        sys::cublasLtMatmulAlgoGetHeuristic(
            handle,
            desc,
            a,
            b,
            c,
            c,
            pref,
            count as i32,
            results.as_mut_ptr(),
            &mut found,
        )
    }
    .result()
    .map_err(blas_err)?;
    let algos: Vec<_> = results[..found.max(0) as usize]
        .iter()
        .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
        .map(|r| r.algo)
        .collect();
    if algos.is_empty() {
        return Err(blas_err("the heuristic found no algorithm"));
    }
    Ok(algos)
}

impl Blas {
    /// Sets `plan.algo` to the fastest of `candidates` at `product`,
    /// measured; a candidate that the product refuses is skipped.
    pub(super) fn pick_fastest(
        &self,
        key: Key,
        plan: &mut Plan,
        candidates: &[sys::cublasLtMatmulAlgo_t],
        product: &Product,
    ) -> Result<(), CudaError> {
        let scratch = product.accumulates().then(|| output_bytes(key));
        let d = match scratch {
            // SAFETY: a fresh allocation on our stream, freed below.
            Some(bytes) => unsafe { drv::malloc_async(self.stream, bytes) }.map_err(blas_err)?,
            None => product.d,
        };
        let timed = Product { d, ..*product };
        let times = self.time_candidates(plan, candidates, &timed);
        if scratch.is_some() {
            // SAFETY: ours, and the stream orders the free after the products.
            unsafe { drv::free_async(d, self.stream) }.map_err(blas_err)?;
        }
        let times = times?;
        let best = (0..times.len())
            .filter(|&i| times[i].is_finite())
            .min_by(|&i, &j| times[i].total_cmp(&times[j]))
            .ok_or_else(|| blas_err(format!("no algorithm ran {key:?}")))?;
        if self.tune == Tune::Report {
            let us = |t: f32| format!("{:.1}", t * 1e3);
            eprintln!(
                "cuda: matmul {:?} m {} n {} k {} batch {}{}: heuristic's first {} us, \
                 fastest {} us (candidate {} of {})",
                key.op,
                key.dims.m,
                key.dims.n,
                key.dims.k,
                key.dims.batch,
                if key.fp8.is_some() { " fp8" } else { "" },
                us(times[0]),
                us(times[best]),
                best + 1,
                times.len()
            );
        }
        plan.algo = candidates[best];
        Ok(())
    }

    /// Milliseconds per product for each candidate (infinite where the
    /// product refused it).
    fn time_candidates(
        &self,
        plan: &Plan,
        candidates: &[sys::cublasLtMatmulAlgo_t],
        product: &Product,
    ) -> Result<Vec<f32>, CudaError> {
        let flags = dsys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = drv::event::create(flags).map_err(blas_err)?;
        let end = drv::event::create(flags).map_err(blas_err)?;
        let mut times = Vec::with_capacity(candidates.len());
        for algo in candidates {
            if self.matmul(plan, algo, product).is_err() {
                times.push(f32::INFINITY);
                continue;
            }
            // SAFETY: our events, recorded on our stream around our products.
            let ms = unsafe {
                drv::event::record(start, self.stream).map_err(blas_err)?;
                for _ in 0..REPS {
                    self.matmul(plan, algo, product)?;
                }
                drv::event::record(end, self.stream).map_err(blas_err)?;
                drv::event::synchronize(end).map_err(blas_err)?;
                drv::event::elapsed(start, end).map_err(blas_err)?
            };
            times.push(ms / REPS as f32);
        }
        // SAFETY: both events are ours and no longer recorded.
        unsafe {
            let _ = drv::event::destroy(start);
            let _ = drv::event::destroy(end);
        }
        Ok(times)
    }

    /// One cuBLASLt product with `algo`.
    pub(super) fn matmul(
        &self,
        plan: &Plan,
        algo: &sys::cublasLtMatmulAlgo_t,
        p: &Product,
    ) -> Result<(), CudaError> {
        // SAFETY: pointers and plan describe the same shapes; the workspace
        // is ours and the stream orders everything.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                &p.alpha as *const f32 as *const c_void,
                &p.beta as *const f32 as *const c_void,
                p.first as *const c_void,
                plan.a,
                p.second as *const c_void,
                plan.b,
                p.c as *const c_void,
                plan.c,
                p.d as *mut c_void,
                plan.c,
                algo,
                self.workspace.ptr as *mut c_void,
                super::WORKSPACE_BYTES,
                self.stream as _,
            )
        }
        .map_err(blas_err)
    }
}

/// Bytes of a product's output (all of a batch's, at its stride).
fn output_bytes(key: Key) -> usize {
    let d = key.dims;
    let elems = if d.batch > 1 {
        d.stride_c * (d.batch - 1) + d.m * d.n
    } else {
        d.m * d.n
    };
    elems * if key.c_bf16 { 2 } else { 4 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::blas::{Dims, RowMajor};

    fn key(dims: Dims, c_bf16: bool) -> Key {
        Key {
            op: RowMajor::ABt,
            dims,
            c_bf16,
            fp8: None,
        }
    }

    #[test]
    fn the_scratch_output_covers_the_whole_product() {
        assert_eq!(output_bytes(key(Dims::plain(3, 5, 7), true)), 3 * 5 * 2);
        assert_eq!(output_bytes(key(Dims::plain(3, 5, 7), false)), 3 * 5 * 4);
        // A batch reaches to its last matrix's end at the output's stride.
        let batched = Dims {
            batch: 4,
            stride_c: 20,
            ..Dims::plain(3, 5, 7)
        };
        assert_eq!(output_bytes(key(batched, false)), (20 * 3 + 15) * 4);
    }

    #[test]
    fn only_a_product_that_adds_into_its_output_needs_scratch() {
        let p = Product {
            first: 1,
            second: 2,
            c: 3,
            d: 3,
            alpha: 1.0,
            beta: 1.0,
        };
        assert!(p.accumulates());
        assert!(!Product { beta: 0.0, ..p }.accumulates());
        assert!(!Product { d: 4, ..p }.accumulates());
    }
}
