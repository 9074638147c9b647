//! The CUDA backend: the same ops as `cpu`, on an NVIDIA GPU.
//!
//! Precision follows mixed-precision training: activations are bf16
//! ([`Device::alloc_activation`]), while parameters, gradients, optimizer
//! state, statistics and the residual stream are f32. Every kernel takes each
//! buffer as a pointer plus a bf16 flag, so one kernel serves every mix the
//! model uses. Matmuls run on cuBLASLt with bf16 inputs and f32 accumulation;
//! their weights come from a bf16 copy of the f32 parameter buffer that the
//! fused AdamW kernel refreshes as it updates the master weights
//! (`CRAM_FP8=forward` or `blocks`: wide layers' forward in FP8, `ops/fp8.rs`).
//!
//! Everything is issued on one stream, so scratch memory can be reused
//! between ops without synchronisation; the host waits only in `read`.
//! cudarc is loaded dynamically: [`Cuda::new`] fails with a clear message on a
//! machine without the driver, and the binary still builds and runs there.
//!
//! The files split the backend by concept: this one opens the GPU (the
//! context, its stream, the kernels and cuBLASLt) and says why it cannot;
//! `memory` holds the buffers and the allocations behind them; `launch` the
//! kernel launches, their argument slots and alignment checks, and the sums
//! several ops share; `profile` the per-op GPU timing and the matmul peak;
//! `device` the [`Device`] trait; `shard` what data parallelism needs on a
//! range of the flat buffers; and `ops/` the op families, one file each.
//!
//! [`Device`]: super::Device
//! [`Device::alloc_activation`]: super::Device::alloc_activation

mod blas;
mod device;
mod fault;
mod kernels;
pub use kernels::sources as kernel_sources;
mod launch;
mod memory;
mod ops;
mod profile;
mod shard;
mod switches;
pub use switches::{CudaSwitches, FlashBackward, FlashForward, FusedAttention};

pub(crate) use launch::f32_arg;
pub(crate) use memory::View;
pub use memory::{CudaBuf, CudaIds};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::fp8::Fp8Switch;
use cudarc::driver::{sys, CudaContext, CudaStream};

use blas::Blas;
use fault::Fault;
use kernels::Kernels;
use launch::{assert_vector_aligned, vector_aligned};
use memory::{Memory, MemoryCounter, Scratch};
use profile::Profile;

/// Locks one of the backend's mutexes, taking over a poisoned one: what they
/// guard (the profile table, scratch and plan caches, a shadow copy's
/// handle, the first device fault) is whole after any panic (each update is
/// one assignment or insert), and a backend that panics on a lock would turn
/// a reported failure into an abort.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`locked`] through exclusive access.
fn locked_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Why the CUDA backend cannot start, in one sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda.so is not loadable on this machine)")]
    NoDriver,
    #[error("--device cuda was asked for, but {0}; use --device cpu (or auto)")]
    Requested(Box<CudaError>),
    #[error("the CUDA library {0} is not installed or not loadable")]
    MissingLibrary(&'static str),
    #[error("no CUDA GPU is visible (cuInit or device 0 failed: {0})")]
    NoGpu(String),
    #[error("compiling the CUDA kernels failed: {0}")]
    Compile(String),
    #[error("CUDA error: {0}")]
    Driver(String),
    #[error("{0}")]
    Switch(String),
}

/// Whether the libraries the backend needs can be loaded, asked before any
/// driver call (cudarc panics at the first call when a library is absent).
pub fn libraries_present() -> Result<(), CudaError> {
    // SAFETY: these only try to dlopen the libraries.
    unsafe {
        if !sys::is_culib_present() {
            return Err(CudaError::NoDriver);
        }
        if !cudarc::nvrtc::sys::is_culib_present() {
            return Err(CudaError::MissingLibrary("libnvrtc"));
        }
        if !cudarc::cublaslt::sys::is_culib_present() {
            return Err(CudaError::MissingLibrary("libcublasLt"));
        }
    }
    Ok(())
}

/// How many GPUs the driver shows this process (`CUDA_VISIBLE_DEVICES`
/// applies), without opening any of them: `--gpus N` checks N against it
/// before it starts a worker.
pub fn visible_gpus() -> Result<usize, CudaError> {
    libraries_present()?;
    let count = CudaContext::device_count().map_err(|e| CudaError::NoGpu(format!("{e:?}")))?;
    Ok(count.max(0) as usize)
}

fn driver_err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    blas: Blas,
    scratch: Mutex<Scratch>,
    memory: Arc<MemoryCounter>,
    profile: Mutex<Option<Profile>>,
    /// Resident blocks an SM of (kernel, block size, dynamic shared bytes),
    /// from the driver on first use (`Cuda::resident_grid`).
    occupancy: Mutex<HashMap<(&'static str, u32, u32), usize>>,
    /// The first device failure; ops skip their work once it is set.
    fault: Arc<Fault>,
    name: String,
    sm_count: u32,
    /// Indices into `ops::FUSED_ATTENTION` of the fused attention kernels
    /// this GPU can run (they need more than the default shared memory);
    /// `CRAM_FUSED_ATTENTION=0` turns them off, for comparison, and
    /// `CRAM_FUSED_ATTENTION=flash` leaves whole-tile sequences to the
    /// flash kernels.
    fused_attention: Vec<usize>,
    /// The same for `ops::FLASH_ATTENTION`, the tiled kernels of longer
    /// sequences (also off with `CRAM_FUSED_ATTENTION=0`).
    flash_attention: Vec<usize>,
    /// The flash forward with two m-tiles a warp where there is one; off
    /// with `CRAM_FLASH_FORWARD=m1` (a comparison switch).
    flash_forward_m2: bool,
    /// The flash forward on wgmma where built (Hopper), the default there;
    /// off with `CRAM_FLASH_FORWARD=mma` (or `=m1`).
    flash_forward_wgmma: bool,
    /// The flash backward on wgmma where built (Hopper), the default there;
    /// off with `CRAM_FLASH_BACKWARD=mma` (or `=k2`).
    flash_backward_wgmma: bool,
    /// The flash backward with two key tiles a block where built
    /// (`CRAM_FLASH_BACKWARD=k2`, a comparison switch: it measured slower
    /// than one tile a block, DESIGN.md).
    flash_backward_k2: bool,
    /// `CRAM_FLASH_DQ=red`: the wgmma backward's per-thread dQ reductions.
    flash_dq_red: bool,
    /// The residual stream in bf16, the default: it learned as well as f32
    /// at equal steps and ran 4% faster with 1.5 GB less (bench/RESULTS.md,
    /// ninth session). `CRAM_RESIDUAL=f32` keeps it in f32, for comparison.
    bf16_residual: bool,
    /// Which wide linear layers' forward runs in FP8 (`ops/fp8.rs`,
    /// `CRAM_FP8`), on a GPU of compute capability 8.9 or later: the
    /// products whose input a norm writes (the norm writes the E4M3 copy),
    /// and every other one through a cast pass.
    fp8: Fp8Switch,
    /// The bf16 matmul rate, measured on first request.
    peak: std::sync::OnceLock<f64>,
    /// `CRAM_CUDA_DEBUG=1`: print every launch and wait for it, so that a
    /// failing kernel is named (like CUDA_LAUNCH_BLOCKING, with names).
    debug: bool,
}

// SAFETY: all device work goes through the one stream; the raw handles in
// the fields are used under the locks that guard them or are immutable.
unsafe impl Send for Cuda {}
unsafe impl Sync for Cuda {}

impl Cuda {
    /// Opens GPU `ordinal`, compiles (or loads from the cache) the kernels
    /// and sets up cuBLASLt, with the switches the `CRAM_*` environment
    /// variables set.
    pub fn new(ordinal: usize) -> Result<Cuda, CudaError> {
        Self::with_switches(ordinal, CudaSwitches::from_env()?)
    }

    /// [`Cuda::new`] with `switches` given, whatever the environment says
    /// (the GPU tests compare kernel paths this way).
    pub fn with_switches(ordinal: usize, switches: CudaSwitches) -> Result<Cuda, CudaError> {
        libraries_present()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::NoGpu(format!("{e:?}")))?;
        // One stream and no per-buffer events: ordering is the stream's.
        // SAFETY: the backend never shares buffers across streams.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err)?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err)?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err)? as u32;
        let gpu = ctx.name().map_err(driver_err)?;
        let debug = switches.debug;
        let kernels = Kernels::load(major, minor)?;
        let memory = Arc::new(MemoryCounter::default());
        let fault = Arc::new(Fault::default());
        let blas = Blas::new(
            stream.clone(),
            memory.clone(),
            fault.clone(),
            debug,
            !switches.fp8_split_accum,
            switches.matmul_tune,
        )?;
        let name = format!(
            "cuda:{ordinal} {gpu} (sm_{major}{minor}, {sm_count} SMs, cuBLASLt {})",
            Blas::version()
        );
        if !kernels.allow_shared_memory("norm_backward", ops::NORM_BACKWARD_SHARED) {
            return Err(CudaError::Driver(format!(
                "the GPU cannot give norm_backward {} bytes of shared memory",
                ops::NORM_BACKWARD_SHARED
            )));
        }
        let fused_off = switches.fused_attention == FusedAttention::Off;
        let short_off = switches.fused_attention != FusedAttention::All;
        let fused_attention = (0..ops::FUSED_ATTENTION.len())
            .filter(|&i| {
                let f = &ops::FUSED_ATTENTION[i];
                !short_off
                    && kernels.allow_shared_memory(f.forward, f.shared_bytes(false))
                    && kernels.allow_shared_memory(f.backward, f.shared_bytes(true))
            })
            .collect();
        let flash_attention = (0..ops::FLASH_ATTENTION.len())
            .filter(|&i| {
                let f = &ops::FLASH_ATTENTION[i];
                !fused_off
                    && kernels.allow_shared_memory(f.forward, f.shared_bytes(false))
                    && kernels.allow_shared_memory(f.backward, f.shared_bytes(true))
                    && (f.forward_m2).is_none_or(|k| {
                        kernels.allow_shared_memory(
                            k,
                            ops::FlashAttention::forward_bytes(f.head_dim, 2),
                        )
                    })
                    && (f.backward_k2).is_none_or(|k| {
                        kernels.allow_shared_memory(
                            k,
                            ops::FlashAttention::backward_bytes(f.head_dim, 2),
                        )
                    })
            })
            .collect();
        // On Hopper the head-64 flash kernels run on wgmma by default;
        // `CRAM_FLASH_FORWARD=mma` / `CRAM_FLASH_BACKWARD=mma` keep the
        // mma.sync kernels (for comparison, and what other GPUs run).
        let wgmma = kernels::has_wgmma(major, minor);
        let flash_forward_m2 = switches.flash_forward != FlashForward::M1;
        let flash_forward_wgmma = wgmma
            && switches.flash_forward == FlashForward::Default
            && ops::FLASH_ATTENTION.iter().all(|f| {
                (f.forward_wgmma).is_none_or(|k| {
                    kernels.allow_shared_memory(k, ops::FlashAttention::wgmma_forward_bytes())
                })
            });
        let flash_backward_k2 = switches.flash_backward == FlashBackward::K2;
        let flash_backward_wgmma = wgmma
            && switches.flash_backward == FlashBackward::Default
            && ops::FLASH_ATTENTION.iter().all(|f| {
                (f.backward_wgmma).is_none_or(|k| {
                    kernels.allow_shared_memory(k, ops::FlashAttention::wgmma_backward_bytes())
                })
            });
        let bf16_residual = !switches.f32_residual;
        // FP8 only where the GPU has FP8 tensor cores (8.9 and later).
        let fp8_cores = (major, minor) >= (8, 9);
        let fp8 = if fp8_cores {
            switches.fp8
        } else {
            Fp8Switch::default()
        };
        // The comparison switches in effect, named in the device's name so
        // that every "device:" line and bench result says what it measured.
        let flash_dq_red = switches.flash_dq_red;
        let switches = switches.names(wgmma, fp8_cores);
        let name = if switches.is_empty() {
            name
        } else {
            format!("{name} with {}", switches.join(" "))
        };
        Ok(Cuda {
            ctx,
            stream,
            kernels,
            blas,
            scratch: Mutex::default(),
            memory,
            profile: Mutex::new(None),
            occupancy: Mutex::default(),
            fault,
            name,
            sm_count,
            fused_attention,
            flash_attention,
            flash_forward_m2,
            flash_forward_wgmma,
            flash_backward_wgmma,
            flash_backward_k2,
            flash_dq_red,
            bf16_residual,
            fp8,
            peak: std::sync::OnceLock::new(),
            debug,
        })
    }

    /// The fused attention kernels for `shape`, when there are some.
    fn fused_attention(
        &self,
        shape: super::AttentionShape,
    ) -> Option<&'static ops::FusedAttention> {
        self.fused_attention
            .iter()
            .map(|&i| &ops::FUSED_ATTENTION[i])
            .find(|f| f.seq == shape.seq && f.head_dim == shape.head_dim)
    }

    /// The flash attention kernels for `shape` when no short kernel holds
    /// it: sequences of whole 64-row tiles and a head width they are built for.
    fn flash_attention(
        &self,
        shape: super::AttentionShape,
    ) -> Option<&'static ops::FlashAttention> {
        if shape.seq == 0 || !shape.seq.is_multiple_of(ops::FlashAttention::TILE) {
            return None;
        }
        self.flash_attention
            .iter()
            .map(|&i| &ops::FLASH_ATTENTION[i])
            .find(|f| f.head_dim == shape.head_dim)
    }

    fn raw_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// Makes the context current on this thread; false (with the failure
    /// recorded) when the device cannot take work, after this or an earlier
    /// failure: the caller then skips its work.
    fn ready(&self) -> bool {
        if self.fault.is_set() {
            return false;
        }
        match self.ctx.bind_to_thread() {
            Ok(()) => true,
            Err(e) => {
                self.fault
                    .record(fault::failed("binding the CUDA context to this thread", e));
                false
            }
        }
    }

    /// Whether the head-64 flash attention runs on wgmma (forward and
    /// backward): on Hopper unless a switch turns it off. The GPU tests ask,
    /// so that a test of the wgmma kernels cannot pass without running them.
    pub fn flash_on_wgmma(&self) -> bool {
        self.flash_forward_wgmma && self.flash_backward_wgmma
    }

    /// Waits for all queued work; a kernel that failed is reported here
    /// (recorded, see [`Device::check`](super::Device::check)).
    pub fn synchronize(&self) {
        if !self.ready() {
            return;
        }
        if let Err(e) = self.stream.synchronize() {
            self.fault.record(fault::failed("the queued GPU work", e));
        }
    }
}
