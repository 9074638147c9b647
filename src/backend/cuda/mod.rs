//! The CUDA backend: the same ops as `cpu`, on an NVIDIA GPU.
//!
//! Precision follows mixed-precision training: activations are bf16
//! ([`Device::alloc_activation`]), while parameters, gradients, optimizer
//! state, statistics and the residual stream are f32. Every kernel takes each
//! buffer as a pointer plus a bf16 flag, so one kernel serves every mix the
//! model uses. Matmuls run on cuBLASLt with bf16 inputs and f32 accumulation;
//! their weights come from a bf16 copy of the f32 parameter buffer that the
//! fused AdamW kernel refreshes as it updates the master weights.
//!
//! Everything is issued on one stream, so scratch memory can be reused
//! between ops without synchronisation; the host waits only in `read`.
//! cudarc is loaded dynamically: [`Cuda::new`] fails with a clear message on a
//! machine without the driver, and the binary still builds and runs there.

mod blas;
mod kernels;
pub use kernels::sources as kernel_sources;
mod ops;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as drv, sys, CudaContext, CudaStream};

use super::Device;
use blas::Blas;
use kernels::Kernels;

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

/// Bytes the backend holds now and at most, for `cram bench`.
#[derive(Default)]
struct MemoryCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryCounter {
    fn add(&self, bytes: usize) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One device allocation, freed in stream order when dropped. It holds the
/// stream (and through it the context), so a buffer that outlives the
/// backend still frees into a live stream.
struct Memory {
    ptr: u64,
    bytes: usize,
    stream: Arc<CudaStream>,
    counter: Arc<MemoryCounter>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: ptr came from malloc_async on this stream and is freed once.
        unsafe {
            let _ = drv::free_async(self.ptr, self.stream.cu_stream());
        }
        self.counter.sub(self.bytes);
    }
}

/// A buffer of `len` values, f32 or bf16.
pub struct CudaBuf {
    mem: Memory,
    len: usize,
    bf16: bool,
    /// A bf16 copy of an f32 buffer, made when the buffer is first used as
    /// matmul weights and kept fresh by AdamW; `None` once stale.
    shadow: Mutex<Option<Memory>>,
}

impl CudaBuf {
    pub fn ptr(&self) -> u64 {
        self.mem.ptr
    }
    /// The kernels' precision flag.
    pub fn bf(&self) -> u64 {
        self.bf16 as u64
    }
    pub fn elem_bytes(&self) -> usize {
        if self.bf16 {
            2
        } else {
            4
        }
    }
    /// Pointer to element `offset`.
    pub fn at(&self, offset: usize) -> u64 {
        self.mem.ptr + (offset * self.elem_bytes()) as u64
    }
    fn invalidate_shadow(&self) {
        *self.shadow.lock().expect("shadow lock") = None;
    }
}

pub struct CudaIds {
    mem: Memory,
    len: usize,
}

impl CudaIds {
    pub fn ptr(&self) -> u64 {
        self.mem.ptr
    }
}

/// Whether every pointer allows the kernels' 16-byte vector accesses.
/// Device allocations are 256-byte aligned; a view into the middle of one
/// (a parameter tensor) may not be.
fn vector_aligned(ptrs: &[u64]) -> bool {
    ptrs.iter().all(|p| p % 16 == 0)
}

/// For kernels that only have a vector path: a misaligned buffer would
/// fault on the GPU, so it stops here with the op's name.
fn assert_vector_aligned(op: &str, ptrs: &[u64]) {
    assert!(
        vector_aligned(ptrs),
        "{op} needs 16-byte aligned activation buffers, got {ptrs:#x?}"
    );
}

/// Grow-only scratch buffers, one per purpose, reused by every op.
#[derive(Default)]
struct Scratch {
    buffers: HashMap<&'static str, Memory>,
}

/// Per-op GPU time, measured with events when profiling is on.
#[derive(Default)]
struct Profile {
    events: Vec<(&'static str, sys::CUevent, sys::CUevent)>,
    totals: HashMap<&'static str, (f64, u64)>,
}

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    blas: Blas,
    scratch: Mutex<Scratch>,
    memory: Arc<MemoryCounter>,
    profile: Mutex<Option<Profile>>,
    name: String,
    sm_count: u32,
    /// Indices into `ops::FUSED_ATTENTION` of the fused attention kernels
    /// this GPU can run (they need more than the default shared memory);
    /// `CRAM_FUSED_ATTENTION=0` turns them off, for comparison.
    fused_attention: Vec<usize>,
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
    /// and sets up cuBLASLt.
    pub fn new(ordinal: usize) -> Result<Cuda, CudaError> {
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
        let debug = std::env::var_os("CRAM_CUDA_DEBUG").is_some_and(|v| v != "0");
        let kernels = Kernels::load(major, minor)?;
        let memory = Arc::new(MemoryCounter::default());
        let blas = Blas::new(stream.clone(), memory.clone(), debug)?;
        let name = format!("cuda:{ordinal} {gpu} (sm_{major}{minor}, {sm_count} SMs)");
        if !kernels.allow_shared_memory("norm_backward", ops::NORM_BACKWARD_SHARED) {
            return Err(CudaError::Driver(format!(
                "the GPU cannot give norm_backward {} bytes of shared memory",
                ops::NORM_BACKWARD_SHARED
            )));
        }
        let fused_off = std::env::var_os("CRAM_FUSED_ATTENTION").is_some_and(|v| v == "0");
        let fused_attention = (0..ops::FUSED_ATTENTION.len())
            .filter(|&i| {
                let f = &ops::FUSED_ATTENTION[i];
                !fused_off
                    && kernels.allow_shared_memory(f.forward, f.shared_bytes(false))
                    && kernels.allow_shared_memory(f.backward, f.shared_bytes(true))
            })
            .collect();
        Ok(Cuda {
            ctx,
            stream,
            kernels,
            blas,
            scratch: Mutex::default(),
            memory,
            profile: Mutex::new(None),
            name,
            sm_count,
            fused_attention,
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

    fn raw_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    fn bind(&self) {
        self.ctx
            .bind_to_thread()
            .expect("binding the CUDA context to this thread");
    }

    fn allocate(&self, bytes: usize) -> Memory {
        self.bind();
        // Zero-length buffers still get a distinct small allocation so every
        // pointer is valid.
        let bytes = bytes.max(16);
        // SAFETY: a fresh stream-ordered allocation, zeroed before use.
        let ptr = unsafe {
            let ptr = drv::malloc_async(self.raw_stream(), bytes)
                .unwrap_or_else(|e| panic!("out of GPU memory allocating {bytes} bytes: {e:?}"));
            drv::memset_d8_async(ptr, 0, bytes, self.raw_stream()).expect("memset");
            ptr
        };
        self.memory.add(bytes);
        Memory {
            ptr,
            bytes,
            stream: self.stream.clone(),
            counter: self.memory.clone(),
        }
    }

    fn new_buf(&self, len: usize, bf16: bool) -> CudaBuf {
        let mem = self.allocate(len * if bf16 { 2 } else { 4 });
        CudaBuf {
            mem,
            len,
            bf16,
            shadow: Mutex::new(None),
        }
    }

    /// A scratch buffer of at least `bytes` for `purpose`, valid until the
    /// next request for the same purpose (ops run in stream order).
    fn scratch(&self, purpose: &'static str, bytes: usize) -> u64 {
        let mut scratch = self.scratch.lock().expect("scratch lock");
        if let Some(mem) = scratch.buffers.get(purpose) {
            if mem.bytes >= bytes {
                return mem.ptr;
            }
        }
        let mem = self.allocate(bytes.next_power_of_two());
        let ptr = mem.ptr;
        scratch.buffers.insert(purpose, mem);
        ptr
    }

    /// The bf16 copy of an f32 buffer (or the buffer itself when bf16),
    /// converting when the copy is stale.
    fn bf16_ptr(&self, buf: &CudaBuf) -> u64 {
        if buf.bf16 {
            return buf.ptr();
        }
        let mut shadow = buf.shadow.lock().expect("shadow lock");
        if let Some(mem) = shadow.as_ref() {
            return mem.ptr;
        }
        let mem = self.allocate(buf.len * 2);
        self.convert_raw(mem.ptr, true, buf.ptr(), false, buf.len);
        let ptr = mem.ptr;
        *shadow = Some(mem);
        ptr
    }

    /// A bf16 view of `buf`, converted into scratch `purpose` when it is f32.
    fn as_bf16(&self, buf: &CudaBuf, purpose: &'static str) -> u64 {
        if buf.bf16 {
            return buf.ptr();
        }
        let ptr = self.scratch(purpose, buf.len * 2);
        self.convert_raw(ptr, true, buf.ptr(), false, buf.len);
        ptr
    }

    fn convert_raw(&self, dst: u64, dst_bf: bool, src: u64, src_bf: bool, n: usize) {
        self.launch_each(
            "convert",
            n,
            &[dst, dst_bf as u64, src, src_bf as u64, n as u64],
        );
    }

    /// Launches a grid-stride kernel over `n` elements (blocks of 256 threads).
    fn launch_each(&self, name: &'static str, n: usize, args: &[u64]) {
        self.launch(name, self.grid(n), 256, 0, args);
    }

    /// Like `launch_each`, for a kernel that takes four elements per thread
    /// when `vec4` (its `FOR_EACH4` loop) and one otherwise.
    fn launch_vec(&self, name: &'static str, n: usize, vec4: bool, args: &[u64]) {
        let threads = if vec4 { n.div_ceil(4) } else { n };
        self.launch(name, self.grid(threads), 256, 0, args);
    }

    /// Blocks for a grid-stride loop over `n` elements of 256 threads.
    fn grid(&self, n: usize) -> u32 {
        let blocks = n.div_ceil(256).max(1);
        blocks.min(self.sm_count as usize * 16) as u32
    }

    /// Launches kernel `name`. Each argument is passed as the 8 bytes of a
    /// u64 slot; 4-byte parameters (i32, f32) read the slot's low half,
    /// which is where little-endian hosts keep it (see [`f32_arg`]).
    fn launch(&self, name: &'static str, grid: u32, block: u32, shared: u32, args: &[u64]) {
        self.bind();
        let mut slots: Vec<u64> = args.to_vec();
        let mut params: Vec<*mut std::ffi::c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut std::ffi::c_void)
            .collect();
        let f = self.kernels.function(name);
        if self.debug {
            eprintln!(
                "cuda: launch {name} grid {grid} block {block} shared {shared} args {args:x?}"
            );
        }
        // SAFETY: the argument list matches the kernel's signature (checked
        // by the op tests against the CPU backend).
        unsafe {
            drv::launch_kernel(
                f,
                (grid, 1, 1),
                (block, 1, 1),
                shared,
                self.raw_stream(),
                &mut params,
            )
        }
        .unwrap_or_else(|e| panic!("launching kernel {name}: {e:?}"));
        if self.debug {
            self.stream
                .synchronize()
                .unwrap_or_else(|e| panic!("kernel {name} failed: {e:?}"));
        }
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) {
        self.bind();
        self.stream.synchronize().expect("stream synchronize");
    }

    /// Largest number of bytes the backend held at once.
    pub fn peak_memory_bytes(&self) -> usize {
        self.memory.peak.load(Ordering::Relaxed)
    }

    pub fn reset_peak_memory(&self) {
        let live = self.memory.live.load(Ordering::Relaxed);
        self.memory.peak.store(live, Ordering::Relaxed);
    }

    /// Starts recording GPU time per op (adds two events per op).
    pub fn start_profile(&self) {
        *self.profile.lock().expect("profile lock") = Some(Profile::default());
    }

    /// Milliseconds and call counts per op since `start_profile`, slowest first.
    pub fn finish_profile(&self) -> Vec<(&'static str, f64, u64)> {
        self.synchronize();
        let Some(mut p) = self.profile.lock().expect("profile lock").take() else {
            return Vec::new();
        };
        collect_events(&mut p);
        let mut rows: Vec<_> = p
            .totals
            .into_iter()
            .map(|(name, (ms, calls))| (name, ms, calls))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }

    /// Runs `f` between two events when profiling is on.
    fn timed<R>(&self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let on = self.profile.lock().expect("profile lock").is_some();
        if !on {
            return f();
        }
        let start = self.record_event();
        let r = f();
        let end = self.record_event();
        let mut guard = self.profile.lock().expect("profile lock");
        let p = guard.as_mut().expect("profile on");
        p.events.push((op, start, end));
        if p.events.len() >= 4096 {
            self.stream.synchronize().expect("stream synchronize");
            collect_events(p);
        }
        r
    }

    fn record_event(&self) -> sys::CUevent {
        self.bind();
        let ev = drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).expect("event");
        // SAFETY: a fresh event recorded on our stream.
        unsafe { drv::event::record(ev, self.raw_stream()) }.expect("event record");
        ev
    }

    /// The dense bf16 matmul rate of this GPU in FLOP/s: `reps` products of
    /// random normal `size`×`size` matrices through cuBLASLt.
    pub fn matmul_peak(&self, size: usize, reps: usize) -> f64 {
        let host: Vec<f32> = normal_samples(size * size, 7);
        let a = self.upload_activation(&host);
        let b = self.upload_activation(&host);
        let c = self.new_buf(size * size, true);
        let run = |n: usize| {
            for _ in 0..n {
                self.blas.gemm(
                    blas::RowMajor::ABt,
                    blas::Dims::plain(size, size, size),
                    (a.ptr(), b.ptr()),
                    (c.ptr(), true),
                    1.0,
                    0.0,
                );
            }
        };
        run(3);
        self.synchronize();
        let t = std::time::Instant::now();
        run(reps);
        self.synchronize();
        2.0 * (size as f64).powi(3) * reps as f64 / t.elapsed().as_secs_f64()
    }

    fn upload_activation(&self, data: &[f32]) -> CudaBuf {
        let mut buf = self.alloc_activation(data.len());
        self.write(&mut buf, 0, data);
        buf
    }
}

fn collect_events(p: &mut Profile) {
    for (name, start, end) in p.events.drain(..) {
        // SAFETY: both events were recorded and the stream synchronised.
        let ms = unsafe { drv::event::elapsed(start, end) }.unwrap_or(0.0) as f64;
        unsafe {
            let _ = drv::event::destroy(start);
            let _ = drv::event::destroy(end);
        }
        let e = p.totals.entry(name).or_insert((0.0, 0));
        e.0 += ms;
        e.1 += 1;
    }
}

/// Standard normal samples from a fixed seed (the model's initialisation sampler).
fn normal_samples(n: usize, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| crate::model::rand_distr_normal::standard_normal(&mut rng))
        .collect()
}

/// An f32 kernel argument in a u64 slot.
pub(crate) fn f32_arg(x: f32) -> u64 {
    x.to_bits() as u64
}

impl Device for Cuda {
    type Buf = CudaBuf;
    type Ids = CudaIds;

    fn name(&self) -> String {
        self.name.clone()
    }

    /// 8192³ products of random normal bf16 matrices (the reference's measure).
    fn peak_flops(&self) -> Option<f64> {
        Some(*self.peak.get_or_init(|| self.matmul_peak(8192, 20)))
    }

    fn alloc(&self, len: usize) -> CudaBuf {
        self.new_buf(len, false)
    }

    fn alloc_activation(&self, len: usize) -> CudaBuf {
        self.new_buf(len, true)
    }

    fn alloc_ids(&self, len: usize) -> CudaIds {
        CudaIds {
            mem: self.allocate(len * 4),
            len,
        }
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn write(&self, buf: &mut CudaBuf, offset: usize, data: &[f32]) {
        assert!(
            offset + data.len() <= buf.len,
            "write past the buffer's end"
        );
        buf.invalidate_shadow();
        self.bind();
        // SAFETY: the range lies inside the allocation (asserted above); a
        // copy from pageable memory is staged before the call returns, so
        // `data` may go away afterwards.
        unsafe {
            if buf.bf16 {
                let host: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                drv::memcpy_htod_async(buf.at(offset), &host, self.raw_stream())
            } else {
                drv::memcpy_htod_async(buf.at(offset), data, self.raw_stream())
            }
        }
        .expect("host to device copy");
    }

    fn write_ids(&self, ids: &mut CudaIds, data: &[u32]) {
        assert!(data.len() <= ids.len, "write past the id buffer's end");
        self.bind();
        // SAFETY: as in `write`.
        unsafe { drv::memcpy_htod_async(ids.ptr(), data, self.raw_stream()) }
            .expect("host to device copy");
    }

    fn read(&self, buf: &CudaBuf, offset: usize, len: usize) -> Vec<f32> {
        assert!(offset + len <= buf.len, "read past the buffer's end");
        self.synchronize();
        // SAFETY: the range lies inside the allocation; the stream is idle.
        unsafe {
            if buf.bf16 {
                let mut host = vec![half::bf16::ZERO; len];
                drv::memcpy_dtoh_async(&mut host, buf.at(offset), self.raw_stream())
                    .expect("device to host copy");
                self.synchronize();
                host.iter().map(|x| x.to_f32()).collect()
            } else {
                let mut host = vec![0f32; len];
                drv::memcpy_dtoh_async(&mut host, buf.at(offset), self.raw_stream())
                    .expect("device to host copy");
                self.synchronize();
                host
            }
        }
    }

    fn zero(&self, buf: &mut CudaBuf) {
        buf.invalidate_shadow();
        self.bind();
        // SAFETY: the whole allocation is ours.
        unsafe {
            drv::memset_d8_async(buf.ptr(), 0, buf.len * buf.elem_bytes(), self.raw_stream())
        }
        .expect("memset");
    }

    fn copy(&self, dst: &mut CudaBuf, src: &CudaBuf) {
        assert_eq!(
            dst.len, src.len,
            "copy between buffers of different lengths"
        );
        dst.invalidate_shadow();
        self.timed("copy", || {
            self.convert_raw(dst.ptr(), dst.bf16, src.ptr(), src.bf16, src.len)
        });
    }

    fn sum_into(&self, dst: &mut CudaBuf, index: usize, src: &CudaBuf, scale: f32) {
        assert!(!dst.bf16, "statistics buffers are f32");
        self.timed("sum_into", || {
            self.reduce_into(dst.ptr(), index, View::whole(src), false, scale, true)
        });
    }
}

/// Elements `[start, start + len)` of a buffer, as the kernels see them.
#[derive(Clone, Copy)]
pub(crate) struct View {
    ptr: u64,
    bf: u64,
    len: usize,
}

impl View {
    pub(crate) fn whole(buf: &CudaBuf) -> View {
        View {
            ptr: buf.ptr(),
            bf: buf.bf(),
            len: buf.len,
        }
    }

    fn range(buf: &CudaBuf, range: Range<usize>) -> View {
        assert!(range.end <= buf.len, "a view past the buffer's end");
        View {
            ptr: buf.at(range.start),
            bf: buf.bf(),
            len: range.len(),
        }
    }
}

impl Cuda {
    /// `dst[index] = (accumulate ? dst[index] : 0) + scale · Σ src (or Σ src²)`.
    fn reduce_into(
        &self,
        dst: u64,
        index: usize,
        src: View,
        square: bool,
        scale: f32,
        accumulate: bool,
    ) {
        let blocks = self.grid(src.len).min(1024);
        let partials = self.scratch("partials", blocks as usize * 4);
        self.launch(
            "sum_partials",
            blocks,
            256,
            0,
            &[partials, src.ptr, src.bf, src.len as u64, square as u64],
        );
        self.finish_sum(dst, index, partials, blocks, scale, accumulate);
    }

    fn finish_sum(
        &self,
        dst: u64,
        index: usize,
        partials: u64,
        n: u32,
        scale: f32,
        accumulate: bool,
    ) {
        self.launch(
            "finish_sum",
            1,
            1024,
            0,
            &[
                dst,
                index as u64,
                partials,
                n as u64,
                f32_arg(scale),
                accumulate as u64,
            ],
        );
    }
}

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
        hp: super::AdamW,
    ) {
        assert!(
            range.end <= params.len && range.end <= grads.len && range.len() <= m.len.min(v.len),
            "AdamW on a range outside its buffers"
        );
        let shadow = params
            .shadow
            .get_mut()
            .expect("shadow lock")
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
        let shadow = params.shadow.lock().expect("shadow lock");
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
        hp: super::AdamW,
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
