//! cuBLASLt matmuls in row-major terms. cuBLASLt is column-major: a
//! row-major `[r, c]` matrix is its column-major transpose, so each row-major
//! product below is issued as the transposed column-major one. Inputs are
//! bf16 (or FP8, `gemm_fp8`); outputs bf16 or f32; accumulation and scaling
//! are f32. A plan
//! (descriptors and the heuristic's algorithm) is built once per shape and
//! reused, since asking the heuristic costs more than a small matmul; its
//! algorithm is the fastest of the heuristic's candidates, timed on the
//! shape's first product (`tune.rs`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{result as drv, sys as dsys, CudaStream};

use super::fault::{failed, Fault};
use super::{CudaError, Memory, MemoryCounter};

mod tune;
pub use tune::Tune;

/// The row-major product computed, with `C[m, n]` the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowMajor {
    /// `C = A[m, k] · B[n, k]ᵀ` (a linear layer's forward).
    ABt,
    /// `C = A[m, k] · B[k, n]` (a linear layer's input gradient).
    AB,
    /// `C = A[k, m]ᵀ · B[k, n]` (a linear layer's weight gradient).
    AtB,
}

/// Sizes of one (possibly batched) product; strides in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Dims {
    pub fn plain(m: usize, n: usize, k: usize) -> Dims {
        Dims {
            m,
            n,
            k,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }
}

/// An FP8 format of a product's operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8 {
    /// 4 exponent bits, 3 mantissa bits, largest 448: activations and weights.
    E4M3,
    /// 5 exponent bits, 2 mantissa bits, largest 57344: gradients.
    E5M2,
}

impl Fp8 {
    fn data_type(self) -> sys::cudaDataType_t {
        match self {
            Fp8::E4M3 => sys::cudaDataType_t::CUDA_R_8F_E4M3,
            Fp8::E5M2 => sys::cudaDataType_t::CUDA_R_8F_E5M2,
        }
    }
}

/// An FP8 operand: its data, format, and the device pointer to the f32
/// that undoes its scaling (the product is multiplied by both operands').
#[derive(Debug, Clone, Copy)]
pub struct Fp8Operand {
    pub ptr: u64,
    pub format: Fp8,
    pub descale: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    op: RowMajor,
    dims: Dims,
    c_bf16: bool,
    /// The row-major A's and B's formats when the inputs are FP8.
    fp8: Option<(Fp8, Fp8)>,
}

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    /// The algorithm the products run.
    algo: sys::cublasLtMatmulAlgo_t,
    /// The heuristic's algorithms still to time, its first choice first
    /// (`algo` starts as that): the plan's first product takes them out and
    /// times them, so a plan with none left (or only one) is settled.
    candidates: Vec<sys::cublasLtMatmulAlgo_t>,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: the plan owns its descriptors, created by `Blas::plan`
        // and destroyed only here. A failure to free is not worth a panic.
        unsafe {
            let _ = lt::destroy_matmul_desc(self.desc);
            for l in [self.a, self.b, self.c] {
                let _ = lt::destroy_matrix_layout(l);
            }
        }
    }
}

/// One product's operands in column-major order (`first` is the row-major
/// B), `D = alpha · first · second + beta · C`.
#[derive(Debug, Clone, Copy)]
struct Product {
    first: u64,
    second: u64,
    c: u64,
    d: u64,
    alpha: f32,
    beta: f32,
}

impl Product {
    /// Whether D also holds an input (the product adds into its output).
    fn accumulates(&self) -> bool {
        self.c == self.d && self.beta != 0.0
    }
}

pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: Memory,
    stream: dsys::CUstream,
    plans: Mutex<HashMap<Key, Plan>>,
    /// The backend's record of the first device failure (see `fault.rs`).
    fault: Arc<Fault>,
    debug: bool,
    /// FP8 products accumulate in the tensor cores' fast, reduced-precision
    /// mode (cuBLASLt's FAST_ACCUM, what FP8 is for) unless
    /// `CRAM_FP8_ACCUM=split` asks for periodic promotion to f32 (slower;
    /// a comparison switch to tell the accumulation's share of FP8's cost
    /// to learning from the E4M3 rounding's).
    fp8_fast_accum: bool,
    /// How a plan picks its algorithm (`CRAM_MATMUL_TUNE`).
    tune: Tune,
}

impl Drop for Blas {
    fn drop(&mut self) {
        // The plans' descriptors do not refer to the handle; the workspace
        // goes back to the stream's pool with its `Memory`.
        // SAFETY: the handle was created by `Blas::new` and is freed only here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

// SAFETY: the handle and plans are used from one stream; the plan map is locked.
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

/// cuBLASLt's recommended workspace on Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

fn blas_err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("cuBLASLt: {e:?}"))
}

impl Blas {
    pub fn new(
        stream: Arc<CudaStream>,
        counter: Arc<MemoryCounter>,
        fault: Arc<Fault>,
        debug: bool,
        fp8_fast_accum: bool,
        tune: Tune,
    ) -> Result<Blas, CudaError> {
        let handle = lt::create_handle().map_err(blas_err)?;
        // SAFETY: a fresh allocation on the backend's stream.
        let ptr =
            unsafe { drv::malloc_async(stream.cu_stream(), WORKSPACE_BYTES) }.map_err(blas_err)?;
        counter.add(WORKSPACE_BYTES);
        Ok(Blas {
            handle,
            workspace: Memory {
                ptr,
                bytes: WORKSPACE_BYTES,
                stream: stream.clone(),
                counter,
            },
            stream: stream.cu_stream(),
            plans: Mutex::default(),
            fault,
            debug,
            fp8_fast_accum,
            tune,
        })
    }

    /// The loaded cuBLASLt's version, "major.minor.patch": the library is
    /// found at run time (`LD_LIBRARY_PATH`), and its kernels decide most
    /// of a step's time, so every device line names it.
    pub fn version() -> String {
        // SAFETY: a query without arguments.
        let v = unsafe { sys::cublasLtGetVersion() };
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    }

    /// `C = alpha · op(A, B) + beta · C`. `ab` are bf16 pointers; `c` is the
    /// output pointer and whether it is bf16 (else f32).
    pub fn gemm(
        &self,
        op: RowMajor,
        dims: Dims,
        (a, b): (u64, u64),
        (c, c_bf16): (u64, bool),
        alpha: f32,
        beta: f32,
    ) {
        self.gemm_from(op, dims, (a, b), c, (c, c_bf16), alpha, beta);
    }

    /// `D = alpha · op(A, B) + beta · C` with C read from `c` and D written
    /// to `d` (same shape and precision): the epilogue adds C, so a product
    /// that ends in a sum (a residual branch) needs no pass of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_from(
        &self,
        op: RowMajor,
        dims: Dims,
        (a, b): (u64, u64),
        c: u64,
        (d, c_bf16): (u64, bool),
        alpha: f32,
        beta: f32,
    ) {
        let key = Key {
            op,
            dims,
            c_bf16,
            fp8: None,
        };
        self.run(key, (a, b), None, c, d, (alpha, beta));
    }

    /// `D = op(A, B) + beta · C` for FP8 A and B (each scaled, with its
    /// `descale`), bf16 C and D: cuBLASLt's FP8 products on Hopper take only
    /// the transposed-first ("TN") column-major layout, which is the
    /// row-major `ABt` (a linear layer's forward).
    pub fn gemm_fp8(
        &self,
        dims: Dims,
        (a, b): (Fp8Operand, Fp8Operand),
        c: u64,
        d: u64,
        beta: f32,
    ) {
        let key = Key {
            op: RowMajor::ABt,
            dims,
            c_bf16: true,
            fp8: Some((a.format, b.format)),
        };
        self.run(
            key,
            (a.ptr, b.ptr),
            Some((a.descale, b.descale)),
            c,
            d,
            (1.0, beta),
        );
    }

    fn run(
        &self,
        key: Key,
        (a, b): (u64, u64),
        descales: Option<(u64, u64)>,
        c: u64,
        d: u64,
        (alpha, beta): (f32, f32),
    ) {
        if self.debug {
            eprintln!(
                "cuda: gemm {key:?} a {a:x} b {b:x} c {c:x} d {d:x} alpha {alpha} beta {beta}"
            );
        }
        if self.fault.is_set() {
            return;
        }
        // Column-major operands: the row-major A and B swap places.
        let product = Product {
            first: b,
            second: a,
            c,
            d,
            alpha,
            beta,
        };
        let mut plans = super::locked(&self.plans);
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match self.plan(key, descales) {
                Ok(plan) => e.insert(plan),
                Err(err) => {
                    let what = format!("finding a cuBLASLt algorithm for {key:?}");
                    self.fault.record(failed(what, err));
                    return;
                }
            },
        };
        if let Some((da, db)) = descales {
            if let Err(e) = set_scales(plan.desc, (db, da)) {
                self.fault
                    .record(failed(format!("setting FP8 scales for {key:?}"), e));
                return;
            }
        }
        // A new plan with a choice to make: time its candidates on this
        // product first (`tune.rs`).
        if plan.candidates.len() > 1 {
            let candidates = std::mem::take(&mut plan.candidates);
            if let Err(e) = self.pick_fastest(key, plan, &candidates, &product) {
                self.fault
                    .record(failed(format!("timing cuBLASLt algorithms for {key:?}"), e));
                return;
            }
        }
        self.matmul(plan, &plan.algo, &product).unwrap_or_else(|e| {
            self.fault
                .record(failed(format!("cuBLASLt matmul {key:?}"), e))
        });
        if self.debug {
            // SAFETY: waits on our own stream.
            if let Err(e) = unsafe { drv::stream::synchronize(self.stream) } {
                self.fault
                    .record(failed(format!("cuBLASLt matmul {key:?}"), e));
            }
        }
    }

    /// The column-major problem for a row-major product. With row-major
    /// `C[m, n]` seen as column-major `Cᵀ (n × m)`:
    /// - ABt: `Cᵀ = B · Aᵀ`, B stored `[n, k]` = column-major `k × n` (transposed).
    /// - AB:  `Cᵀ = Bᵀ · Aᵀ`, B stored `[k, n]` = column-major `n × k` as is.
    /// - AtB: `Cᵀ = Bᵀ · A`, A stored `[k, m]` = column-major `m × k` (transposed).
    ///
    /// FP8 plans (`key.fp8`) take the operands' scale pointers before the
    /// heuristic is asked (`descales`, column-major order set by `run`) and
    /// accumulate fast (no periodic promotion: the speed FP8 is for) unless
    /// `fp8_fast_accum` is off.
    fn plan(&self, key: Key, descales: Option<(u64, u64)>) -> Result<Plan, CudaError> {
        let Dims { m, n, k, batch, .. } = key.dims;
        let d = key.dims;
        let bf = sys::cudaDataType_t::CUDA_R_16BF;
        let c_type = if key.c_bf16 {
            bf
        } else {
            sys::cudaDataType_t::CUDA_R_32F
        };
        // (rows, cols, ld, transposed) of the first (from B) and second (from A) operands.
        let (first, second) = match key.op {
            RowMajor::ABt => ((k, n, k, true), (k, m, k, false)),
            RowMajor::AB => ((n, k, n, false), (k, m, k, false)),
            RowMajor::AtB => ((n, k, n, false), (m, k, m, true)),
        };
        let layout = |ty, (rows, cols, ld, _): (usize, usize, usize, bool), stride: usize| {
            let l = lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
                .map_err(blas_err)?;
            if batch > 1 {
                set_batch(l, batch, stride)?;
            }
            Ok::<_, CudaError>(l)
        };
        // Column-major A is the row-major B, and the other way round.
        let (a_type, b_type) = key
            .fp8
            .map_or((bf, bf), |(ra, rb)| (rb.data_type(), ra.data_type()));
        let a = layout(a_type, first, d.stride_b)?;
        let b = layout(b_type, second, d.stride_a)?;
        let c = layout(c_type, (n, m, n, false), d.stride_c)?;
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(blas_err)?;
        // cublasOperation_t as an i32: 0 = N, 1 = T.
        let trans = |t: bool| t as i32;
        // SAFETY: attributes of a live descriptor, with values of the documented types.
        unsafe {
            for (attr, t) in [
                (
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                    trans(first.3),
                ),
                (
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                    trans(second.3),
                ),
            ] {
                lt::set_matmul_desc_attribute(
                    desc,
                    attr,
                    &t as *const _ as *const c_void,
                    std::mem::size_of_val(&t),
                )
                .map_err(blas_err)?;
            }
        }
        if let Some((da, db)) = descales {
            set_scales(desc, (db, da))?;
            let fast = self.fp8_fast_accum as i8;
            // SAFETY: as above; FAST_ACCUM is an int8_t.
            unsafe {
                lt::set_matmul_desc_attribute(
                    desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                    &fast as *const i8 as *const c_void,
                    1,
                )
            }
            .map_err(blas_err)?;
        }
        let pref = lt::create_matmul_pref().map_err(blas_err)?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: as above.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
        }
        .map_err(blas_err)?;
        let candidates =
            tune::heuristic(self.handle, (desc, a, b, c), pref, self.tune.candidates());
        // SAFETY: ours, no longer used.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        let candidates = candidates?;
        Ok(Plan {
            desc,
            a,
            b,
            c,
            algo: candidates[0],
            candidates,
        })
    }
}

/// The column-major A's and B's scale pointers (device pointers to f32).
fn set_scales(desc: sys::cublasLtMatmulDesc_t, (a, b): (u64, u64)) -> Result<(), CudaError> {
    for (attr, ptr) in [
        (
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
            a,
        ),
        (
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
            b,
        ),
    ] {
        // SAFETY: an attribute of a live descriptor; the value is a pointer.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                attr,
                &ptr as *const u64 as *const c_void,
                std::mem::size_of::<u64>(),
            )
        }
        .map_err(blas_err)?;
    }
    Ok(())
}

fn set_batch(
    layout: sys::cublasLtMatrixLayout_t,
    batch: usize,
    stride: usize,
) -> Result<(), CudaError> {
    let count = batch as i32;
    let stride = stride as i64;
    // SAFETY: attributes of a live layout with values of the documented types.
    unsafe {
        lt::set_matrix_layout_attribute(
            layout,
            sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
            &count as *const i32 as *const c_void,
            4,
        )
        .map_err(blas_err)?;
        lt::set_matrix_layout_attribute(
            layout,
            sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
            &stride as *const i64 as *const c_void,
            8,
        )
        .map_err(blas_err)?;
    }
    Ok(())
}
