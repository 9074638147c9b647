//! Host buffers: `Vec<f32>` values and `Vec<u32>` ids, read and written in
//! place. `sum_into` sums in f64 in index order, so step statistics do not
//! depend on thread count.

use super::Cpu;
use crate::backend::Device;

impl Device for Cpu {
    type Buf = Vec<f32>;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    /// `work` runs on one of the pool's threads, the caller blocked until it
    /// returns. Called from outside the pool (the main thread), every
    /// parallel op is handed to the pool and the caller sleeps on a latch
    /// until it is done, so each op costs a wake-up, and between ops the
    /// pool's threads spin beside the caller's serial work: on two cores 5–7%
    /// of a `tiny` run (bench/RESULTS.md, seventeenth session). On a pool
    /// thread the caller takes part in its own ops. Ranks as threads do not
    /// use it: a rank waiting for its peers would hold one of the pool's
    /// threads.
    fn run_job<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        rayon::scope(|_| work())
    }

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn alloc_ids(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn write(&self, buf: &mut Vec<f32>, offset: usize, data: &[f32]) {
        buf[offset..offset + data.len()].copy_from_slice(data);
    }

    fn write_ids(&self, ids: &mut Vec<u32>, data: &[u32]) {
        ids[..data.len()].copy_from_slice(data);
    }

    fn read(&self, buf: &Vec<f32>, offset: usize, len: usize) -> Vec<f32> {
        buf[offset..offset + len].to_vec()
    }

    fn zero(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }

    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>) {
        dst.copy_from_slice(src);
    }

    fn copy_range(
        &self,
        dst: &mut Vec<f32>,
        dst_at: usize,
        src: &Vec<f32>,
        src_at: usize,
        len: usize,
    ) {
        dst[dst_at..dst_at + len].copy_from_slice(&src[src_at..src_at + len]);
    }

    fn copy_ids_range(&self, dst: &mut Vec<u32>, src: &Vec<u32>, at: usize) {
        let len = dst.len();
        dst.copy_from_slice(&src[at..at + len]);
    }

    fn sum_into(&self, dst: &mut Vec<f32>, index: usize, src: &Vec<f32>, scale: f32) {
        let sum: f64 = src.iter().map(|&x| x as f64).sum();
        dst[index] += (scale as f64 * sum) as f32;
    }
}
