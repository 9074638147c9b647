//! Device memory: stream-ordered allocations ([`Memory`]) counted for
//! `cram bench`, the f32/bf16 buffers and id buffers the ops take
//! ([`CudaBuf`], [`CudaIds`]) with the bf16 weight copy a parameter buffer
//! keeps, views of part of a buffer as the kernels see them ([`View`]), and
//! the grow-only scratch memory ops reuse between launches.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as drv, CudaStream};

use super::Cuda;

/// Bytes the backend holds now and at most, for `cram bench`.
#[derive(Default)]
pub(super) struct MemoryCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryCounter {
    pub(super) fn add(&self, bytes: usize) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
    /// Bytes held now.
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// One device allocation, freed in stream order when dropped. It holds the
/// stream (and through it the context), so a buffer that outlives the
/// backend still frees into a live stream.
pub(super) struct Memory {
    pub(super) ptr: u64,
    pub(super) bytes: usize,
    pub(super) stream: Arc<CudaStream>,
    pub(super) counter: Arc<MemoryCounter>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.ptr == 0 {
            // The stand-in of an allocation that failed: nothing to free.
            return;
        }
        // SAFETY: ptr came from malloc_async on this stream and is freed once.
        unsafe {
            let _ = drv::free_async(self.ptr, self.stream.cu_stream());
        }
        self.counter.sub(self.bytes);
    }
}

/// A buffer of `len` values, f32 or bf16.
pub struct CudaBuf {
    pub(super) mem: Memory,
    pub(super) len: usize,
    pub(super) bf16: bool,
    /// A bf16 copy of an f32 buffer, made when the buffer is first used as
    /// matmul weights and kept fresh by AdamW; `None` once stale.
    pub(super) shadow: Mutex<Option<Memory>>,
    /// FP8 copies of weight tensors in the buffer (`CRAM_FP8`), by element
    /// offset: the data and, after it, the f32 that undoes its scale. Kept
    /// allocated; stale after any change to the buffer until cast again.
    pub(super) fp8: Mutex<HashMap<usize, Fp8Copy>>,
}

pub(super) struct Fp8Copy {
    pub(super) mem: Memory,
    pub(super) fresh: bool,
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
    pub(super) fn invalidate_shadow(&self) {
        *super::locked(&self.shadow) = None;
        self.fp8_stale();
    }

    /// Marks the FP8 weight copies stale (the values changed: AdamW, a
    /// write, NCCL).
    pub(super) fn fp8_stale(&self) {
        for copy in super::locked(&self.fp8).values_mut() {
            copy.fresh = false;
        }
    }
}

pub struct CudaIds {
    pub(super) mem: Memory,
    pub(super) len: usize,
}

impl CudaIds {
    pub fn ptr(&self) -> u64 {
        self.mem.ptr
    }
}

/// Grow-only scratch buffers, one per purpose, reused by every op.
#[derive(Default)]
pub(super) struct Scratch {
    buffers: HashMap<&'static str, Memory>,
}

/// Elements `[start, start + len)` of a buffer, as the kernels see them.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(super) ptr: u64,
    pub(super) bf: u64,
    pub(super) len: usize,
}

impl View {
    pub(crate) fn whole(buf: &CudaBuf) -> View {
        View {
            ptr: buf.ptr(),
            bf: buf.bf(),
            len: buf.len,
        }
    }

    pub(super) fn range(buf: &CudaBuf, range: Range<usize>) -> View {
        assert!(range.end <= buf.len, "a view past the buffer's end");
        View {
            ptr: buf.at(range.start),
            bf: buf.bf(),
            len: range.len(),
        }
    }
}

impl Cuda {
    /// A zeroed allocation of `bytes`; after a device failure (or when this
    /// one fails, recorded as out of memory) a null stand-in that no op
    /// touches, since every op skips its work from then on.
    pub(super) fn allocate(&self, bytes: usize) -> Memory {
        // Zero-length buffers still get a distinct small allocation so every
        // pointer is valid.
        let bytes = bytes.max(16);
        let null = || Memory {
            ptr: 0,
            bytes: 0,
            stream: self.stream.clone(),
            counter: self.memory.clone(),
        };
        if !self.ready() {
            return null();
        }
        // SAFETY: a fresh stream-ordered allocation, zeroed before use.
        let ptr = match unsafe { drv::malloc_async(self.raw_stream(), bytes) } {
            Ok(ptr) => ptr,
            Err(_) => {
                let (free, total) = drv::mem_get_info().unwrap_or((0, 0));
                self.fault.record(crate::backend::DeviceError::OutOfMemory {
                    bytes,
                    in_use: self.memory.live(),
                    free,
                    total,
                });
                return null();
            }
        };
        self.memory.add(bytes);
        self.zero_raw(ptr, bytes);
        Memory {
            ptr,
            bytes,
            stream: self.stream.clone(),
            counter: self.memory.clone(),
        }
    }

    pub(super) fn new_buf(&self, len: usize, bf16: bool) -> CudaBuf {
        let mem = self.allocate(len * if bf16 { 2 } else { 4 });
        CudaBuf {
            mem,
            len,
            bf16,
            shadow: Mutex::new(None),
            fp8: Mutex::default(),
        }
    }

    /// A scratch buffer of at least `bytes` for `purpose`, valid until the
    /// next request for the same purpose (ops run in stream order).
    /// Zeroes `bytes` at `ptr` (scratch that kernels accumulate into), in
    /// stream order.
    pub(super) fn zero_raw(&self, ptr: u64, bytes: usize) {
        if !self.ready() {
            return;
        }
        // SAFETY: `ptr` is one of this backend's allocations of at least `bytes`.
        if let Err(e) = unsafe { drv::memset_d8_async(ptr, 0, bytes, self.raw_stream()) } {
            self.fault
                .record(super::fault::failed("zeroing GPU memory", e));
        }
    }

    pub(super) fn scratch(&self, purpose: &'static str, bytes: usize) -> u64 {
        let mut scratch = super::locked(&self.scratch);
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
    pub(super) fn bf16_ptr(&self, buf: &CudaBuf) -> u64 {
        if buf.bf16 {
            return buf.ptr();
        }
        let mut shadow = super::locked(&buf.shadow);
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
    pub(super) fn as_bf16(&self, buf: &CudaBuf, purpose: &'static str) -> u64 {
        if buf.bf16 {
            return buf.ptr();
        }
        let ptr = self.scratch(purpose, buf.len * 2);
        self.convert_raw(ptr, true, buf.ptr(), false, buf.len);
        ptr
    }

    /// Largest number of bytes the backend held at once.
    pub fn peak_memory_bytes(&self) -> usize {
        self.memory.peak.load(Ordering::Relaxed)
    }

    pub fn reset_peak_memory(&self) {
        let live = self.memory.live.load(Ordering::Relaxed);
        self.memory.peak.store(live, Ordering::Relaxed);
    }
}
