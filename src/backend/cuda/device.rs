//! The [`Device`] trait on the GPU: allocation, host transfers (bf16
//! buffers converted on the host), zeroing, copies and `sum_into`. Every
//! transfer is queued on the one stream; `read` waits for it.

use cudarc::driver::result as drv;

use super::{Cuda, CudaBuf, CudaIds, View};
use crate::backend::Device;

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
