//! The [`Device`] trait on the GPU: allocation, host transfers (bf16
//! buffers converted on the host), zeroing, copies and `sum_into`. Every
//! transfer is queued on the one stream; `read` waits for it.

use cudarc::driver::result as drv;

use super::fault::failed;
use super::{Cuda, CudaBuf, CudaIds, View};
use crate::backend::{Device, DeviceError};

impl Device for Cuda {
    type Buf = CudaBuf;
    type Ids = CudaIds;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn check(&self) -> Result<(), DeviceError> {
        self.fault.get().map_or(Ok(()), Err)
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

    fn full_precision_activations(&self) -> bool {
        false
    }

    fn alloc_residual(&self, len: usize) -> CudaBuf {
        self.new_buf(len, self.bf16_residual)
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
        if !self.ready() {
            return;
        }
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
        .unwrap_or_else(|e| self.fault.record(failed("a host to GPU copy", e)));
    }

    fn write_ids(&self, ids: &mut CudaIds, data: &[u32]) {
        assert!(data.len() <= ids.len, "write past the id buffer's end");
        if !self.ready() {
            return;
        }
        // SAFETY: as in `write`.
        unsafe { drv::memcpy_htod_async(ids.ptr(), data, self.raw_stream()) }
            .unwrap_or_else(|e| self.fault.record(failed("a host to GPU copy", e)));
    }

    fn read(&self, buf: &CudaBuf, offset: usize, len: usize) -> Vec<f32> {
        assert!(offset + len <= buf.len, "read past the buffer's end");
        self.synchronize();
        // After a failure the values are not there: NaN, and `check` says why.
        let undone = || vec![f32::NAN; len];
        if !self.ready() {
            return undone();
        }
        // SAFETY: the range lies inside the allocation; the stream is idle,
        // and the host vectors live until the wait below.
        let (copied, mut wide, mut narrow) = unsafe {
            if buf.bf16 {
                let mut narrow = vec![half::bf16::ZERO; len];
                let r = drv::memcpy_dtoh_async(&mut narrow, buf.at(offset), self.raw_stream());
                (r, Vec::new(), narrow)
            } else {
                let mut wide = vec![0f32; len];
                let r = drv::memcpy_dtoh_async(&mut wide, buf.at(offset), self.raw_stream());
                (r, wide, Vec::new())
            }
        };
        if let Err(e) = copied {
            self.fault.record(failed("a GPU to host copy", e));
            return undone();
        }
        self.synchronize();
        if self.fault.is_set() {
            return undone();
        }
        if buf.bf16 {
            wide = narrow.drain(..).map(|x| x.to_f32()).collect();
        }
        wide
    }

    fn zero(&self, buf: &mut CudaBuf) {
        buf.invalidate_shadow();
        self.zero_raw(buf.ptr(), buf.len * buf.elem_bytes());
    }

    fn copy(&self, dst: &mut CudaBuf, src: &CudaBuf) {
        assert_eq!(
            dst.len, src.len,
            "copy between buffers of different lengths"
        );
        self.copy_range(dst, 0, src, 0, src.len);
    }

    fn copy_range(
        &self,
        dst: &mut CudaBuf,
        dst_at: usize,
        src: &CudaBuf,
        src_at: usize,
        len: usize,
    ) {
        assert!(
            dst_at + len <= dst.len && src_at + len <= src.len,
            "copy past a buffer's end"
        );
        dst.invalidate_shadow();
        self.timed("copy", || {
            self.convert_raw(dst.at(dst_at), dst.bf16, src.at(src_at), src.bf16, len)
        });
    }

    fn copy_ids_range(&self, dst: &mut CudaIds, src: &CudaIds, at: usize) {
        assert!(at + dst.len <= src.len, "copy past the id buffer's end");
        if !self.ready() || dst.len == 0 {
            return;
        }
        let bytes = std::mem::size_of::<u32>();
        // SAFETY: both ranges lie inside their allocations (checked above),
        // and the copy is ordered on the one stream with every op using them.
        unsafe {
            drv::memcpy_dtod_async(
                dst.ptr(),
                src.ptr() + (at * bytes) as u64,
                dst.len * bytes,
                self.raw_stream(),
            )
        }
        .unwrap_or_else(|e| self.fault.record(failed("a copy on the GPU", e)));
    }

    fn sum_into(&self, dst: &mut CudaBuf, index: usize, src: &CudaBuf, scale: f32) {
        assert!(!dst.bf16, "statistics buffers are f32");
        self.timed("sum_into", || {
            self.reduce_into(dst.ptr(), index, View::whole(src), false, scale, true)
        });
    }
}
