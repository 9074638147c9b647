//! Timing on the GPU: per-op times from events recorded around each op when
//! `cram bench --profile` turns profiling on ([`Cuda::timed`]), and the
//! dense bf16 matmul rate the MFU figures divide by.

use std::collections::HashMap;

use cudarc::driver::{result as drv, sys};

use super::{blas, Cuda, CudaBuf};
use crate::backend::Device;

/// Per-op GPU time, measured with events when profiling is on.
#[derive(Default)]
pub(super) struct Profile {
    events: Vec<(&'static str, sys::CUevent, sys::CUevent)>,
    totals: HashMap<&'static str, (f64, u64)>,
}

impl Cuda {
    /// Starts recording GPU time per op (adds two events per op).
    pub fn start_profile(&self) {
        *super::locked(&self.profile) = Some(Profile::default());
    }

    /// Milliseconds and call counts per op since `start_profile`, slowest first.
    pub fn finish_profile(&self) -> Vec<(&'static str, f64, u64)> {
        self.synchronize();
        let Some(mut p) = super::locked(&self.profile).take() else {
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
    pub(super) fn timed<R>(&self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let on = super::locked(&self.profile).is_some();
        if !on {
            return f();
        }
        let start = self.record_event();
        let r = f();
        let end = self.record_event();
        let mut guard = super::locked(&self.profile);
        let p = guard.as_mut().expect("profile on");
        p.events.push((op, start, end));
        if p.events.len() >= 4096 {
            drop(guard);
            self.synchronize();
            let mut guard = super::locked(&self.profile);
            if let Some(p) = guard.as_mut() {
                collect_events(p);
            }
        }
        r
    }

    /// An event recorded on the stream; null (the failure recorded) when
    /// the device cannot take work, which `collect_events` then skips.
    fn record_event(&self) -> sys::CUevent {
        if !self.ready() {
            return std::ptr::null_mut();
        }
        let recorded = drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).and_then(|ev| {
            // SAFETY: a fresh event recorded on our stream.
            unsafe { drv::event::record(ev, self.raw_stream()) }.map(|()| ev)
        });
        recorded.unwrap_or_else(|e| {
            self.fault
                .record(super::fault::failed("recording a timing event", e));
            std::ptr::null_mut()
        })
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
        if start.is_null() || end.is_null() {
            continue;
        }
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
        .map(|_| crate::random::standard_normal(&mut rng))
        .collect()
}
