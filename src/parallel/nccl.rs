//! The communicator of a multi-GPU run, over NCCL (cudarc's `result`/`sys`
//! layers: the safe `Comm` hides its handle, and aborting a hung group needs
//! it).
//!
//! Two faces. As a [`Communicator`] it follows the trait's host-slice
//! contract, copying through a staging buffer on the GPU: the trainer uses it
//! for small things (the clock, the loss, barriers, gathering ZeRO-1 moments
//! for a checkpoint). The gradients go through the device collectives
//! ([`NcclComm::all_reduce_ranges`], [`NcclComm::reduce_ranges`],
//! [`NcclComm::broadcast_ranges`]), which run in place on the backend's own
//! buffers, on this communicator's stream (the communication stream, beside
//! the backend's compute stream; see `nccl_device`).
//!
//! Hangs: NCCL calls are asynchronous, so [`NcclComm::wait_done`] records an
//! event after the work and polls it, and `ncclCommGetAsyncError`, until the
//! timeout; then the communicator is aborted (which also ends NCCL kernels
//! stuck waiting for a peer) and the collective fails with
//! [`CommError::Stalled`], naming the operation (NCCL cannot say which peer
//! is missing; the rendezvous named every rank when the group formed).
//!
//! Joining: plain `ncclCommInitRank`, blocking, the call that has run on a
//! GPU. With `NCCL_COMM_BLOCKING=0` (NCCL's own variable, read here) the
//! communicator is made non-blocking by `ncclCommInitRankConfig` with
//! nccl.h's initializer and polled until it has formed, so a
//! rank that dies between the rendezvous and the NCCL set-up ends the
//! others' wait after the timeout ([`CommError::InitStalled`]); that mode
//! has not run on a GPU yet. A non-blocking communicator stays so: any call
//! may return while NCCL still launches the collective in a thread of its
//! own, so every call is followed by a poll until NCCL has queued it
//! (`NcclComm::settled`) before an event is recorded behind it; in the
//! blocking mode those polls return at once.
//!
//! [`Communicator`]: super::comm::Communicator

use super::comm::{CommError, Communicator};
use super::nccl_join::{init_group, settle, Unsettled};
use super::rendezvous::{DistEnv, RendezvousError};
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut};
use cudarc::nccl::result::{self as nccl, NcclError, NcclStatus};
use cudarc::nccl::sys;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The raw NCCL handle; null once aborted.
struct RawComm(sys::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread as long as calls
// are not concurrent; `NcclComm` only touches it under its mutex.
unsafe impl Send for RawComm {}

impl Drop for RawComm {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // Abort rather than destroy: destroy waits for pending work,
            // which never ends when a peer died.
            // SAFETY: a live handle, aborted once.
            unsafe {
                let _ = nccl::comm_abort(self.0);
            }
        }
    }
}

pub struct NcclComm {
    comm: Mutex<RawComm>,
    /// The communication stream: every NCCL call of this rank runs on it, in
    /// the same order on every rank.
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

pub(super) fn nccl_err(what: &str, e: NcclError) -> CommError {
    CommError::Other(format!("NCCL {what} failed: {:?}", e.0))
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> CommError {
    CommError::Other(format!("{what} failed: {e:?}"))
}

/// Whether libnccl can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

const F32: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
const SUM: sys::ncclRedOp_t = sys::ncclRedOp_t::ncclSum;

/// Device pointer of element `i` of an f32 buffer starting at `base`.
fn f32_at(base: u64, i: usize) -> *mut c_void {
    (base + 4 * i as u64) as *mut c_void
}

impl NcclComm {
    /// A fresh NCCL unique id (rank 0 makes it and the rendezvous carries it).
    pub fn unique_id() -> Result<Vec<u8>, CommError> {
        if !nccl_present() {
            return Err(CommError::Other(
                "the NCCL library (libnccl.so.2) is not installed or not loadable".into(),
            ));
        }
        let id = nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    }

    /// Joins the group `id` as `rank` of `world` on GPU `ordinal`.
    pub fn new(
        ordinal: usize,
        rank: usize,
        world: usize,
        id: &[u8],
        timeout: Duration,
    ) -> Result<NcclComm, CommError> {
        let internal: [std::ffi::c_char; 128] = id
            .try_into()
            .map(|b: [u8; 128]| b.map(|x| x as std::ffi::c_char))
            .map_err(|_| {
                CommError::Other(format!(
                    "an NCCL id has 128 bytes, the rendezvous gave {}",
                    id.len()
                ))
            })?;
        // The primary context of the GPU: the same one the CUDA backend
        // uses, so its events and buffers are valid here.
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| CommError::Other(format!("GPU {ordinal} cannot be used: {e:?}")))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_err("creating the communication stream", e))?;
        let handle = init_group(sys::ncclUniqueId { internal }, rank, world, timeout)?;
        Ok(NcclComm {
            comm: Mutex::new(RawComm(handle)),
            stream,
            rank,
            world,
            timeout,
        })
    }

    /// The whole start-up of a launched rank: the rendezvous at
    /// MASTER_ADDR:MASTER_PORT hands rank 0's id to every rank, then each
    /// joins the NCCL group on GPU LOCAL_RANK.
    pub fn from_env(env: &DistEnv, timeout: Duration) -> Result<NcclComm, NcclSetupError> {
        let mut made = None;
        let id = env.exchange(
            || match NcclComm::unique_id() {
                Ok(id) => id,
                Err(e) => {
                    made = Some(e);
                    Vec::new()
                }
            },
            timeout,
        )?;
        if let Some(e) = made {
            return Err(e.into());
        }
        Ok(NcclComm::new(
            env.local_rank,
            env.rank,
            env.world_size,
            &id,
            timeout,
        )?)
    }

    /// The communication stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn raw_stream(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as sys::cudaStream_t
    }

    /// The communicator, unless an earlier failure aborted it.
    fn live(&self, op: &'static str) -> Result<MutexGuard<'_, RawComm>, CommError> {
        let guard = self
            .comm
            .lock()
            .map_err(|_| CommError::Failed("a thread panicked inside a collective".into()))?;
        if guard.0.is_null() {
            return Err(CommError::Failed(format!(
                "the NCCL communicator of rank {} was aborted before {op}",
                self.rank
            )));
        }
        Ok(guard)
    }

    /// Issues `calls` (NCCL collectives on the communication stream) as one
    /// NCCL group, so that several ranges travel together.
    fn group(
        &self,
        op: &'static str,
        calls: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> Result<(), NcclError>,
    ) -> Result<(), CommError> {
        let comm = self.live(op)?;
        nccl::group_start().map_err(|e| nccl_err(op, e))?;
        let issued = calls(comm.0, self.raw_stream());
        let ended = nccl::group_end();
        issued.and(ended.map(|_| ())).map_err(|e| nccl_err(op, e))?;
        self.settled(op, comm)
    }

    /// Returns once NCCL has queued on the stream what was just asked of
    /// it. A non-blocking communicator (`NCCL_COMM_BLOCKING=0`, for the
    /// timeout of its set-up) may end a group with the launch still going on in an NCCL thread
    /// (`ncclInProgress`); an event recorded before the launch is done
    /// would not cover the collectives. Aborts on an error or after the timeout.
    fn settled(&self, op: &'static str, comm: MutexGuard<'_, RawComm>) -> Result<(), CommError> {
        let outcome = settle(comm.0, Instant::now() + self.timeout);
        // abort() takes the lock again.
        drop(comm);
        match outcome {
            Ok(()) => Ok(()),
            Err(Unsettled::Failed(e)) => {
                self.abort();
                Err(nccl_err(op, e))
            }
            Err(Unsettled::TimedOut) => {
                self.abort();
                Err(CommError::Stalled {
                    op,
                    rank: self.rank,
                    timeout: self.timeout,
                })
            }
        }
    }

    /// `Σ_ranks` in place over each of `ranges` (elements) of the f32 device
    /// buffer at `base`, queued on the communication stream.
    ///
    /// # Safety
    /// `base` is a device allocation of this GPU holding every range, which
    /// nothing else writes until the communication stream has passed this
    /// call.
    pub unsafe fn all_reduce_ranges(
        &self,
        base: u64,
        ranges: &[Range<usize>],
    ) -> Result<(), CommError> {
        self.group("all_reduce", |comm, stream| {
            for r in ranges.iter().filter(|r| !r.is_empty()) {
                let p = f32_at(base, r.start);
                nccl::all_reduce(p, p, r.len(), F32, SUM, comm, stream)?;
            }
            Ok(())
        })
    }

    /// `Σ_ranks` in place over each of `ranges`, delivered only to the rank
    /// that owns it: `owners[r]` is rank r's part of the buffer (ZeRO-1
    /// shards), and a range is cut at the owners' boundaries.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ranges`].
    pub unsafe fn reduce_ranges(
        &self,
        base: u64,
        ranges: &[Range<usize>],
        owners: &[Range<usize>],
    ) -> Result<(), CommError> {
        self.group("reduce", |comm, stream| {
            for r in ranges {
                for (root, owned) in owners.iter().enumerate() {
                    let part = r.start.max(owned.start)..r.end.min(owned.end);
                    if part.is_empty() {
                        continue;
                    }
                    let p = f32_at(base, part.start);
                    nccl::reduce(p, p, part.len(), F32, SUM, root as i32, comm, stream)?;
                }
            }
            Ok(())
        })
    }

    /// Every rank's `owners[rank]` part of the f32 device buffer at `base`,
    /// sent in place to all the others (the all-gather of ZeRO-1 shards).
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ranges`].
    pub unsafe fn broadcast_ranges(
        &self,
        base: u64,
        owners: &[Range<usize>],
    ) -> Result<(), CommError> {
        self.group("broadcast", |comm, stream| {
            for (root, owned) in owners.iter().enumerate() {
                if owned.is_empty() {
                    continue;
                }
                let p = f32_at(base, owned.start);
                nccl::broadcast(p, p, owned.len(), F32, root as i32, comm, stream)?;
            }
            Ok(())
        })
    }

    /// Waits until the communication stream has done everything queued so
    /// far, at most the timeout. On a timeout or an asynchronous NCCL error
    /// the communicator is aborted (unsticking its kernels) and `op` is named.
    pub fn wait_done(&self, op: &'static str) -> Result<(), CommError> {
        let event = self
            .stream
            .record_event(Some(
                cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING,
            ))
            .map_err(|e| cuda_err(op, e))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if event.try_is_complete().map_err(|e| cuda_err(op, e))? {
                return Ok(());
            }
            if let Some(e) = self.async_error() {
                self.abort();
                return Err(nccl_err(op, e));
            }
            if Instant::now() >= deadline {
                self.abort();
                return Err(CommError::Stalled {
                    op,
                    rank: self.rank,
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// An error NCCL met in the background (a peer's network or process died).
    fn async_error(&self) -> Option<NcclError> {
        let comm = self.comm.lock().ok()?;
        if comm.0.is_null() {
            return None;
        }
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: a live handle; `state` is written by NCCL.
        let asked = unsafe { sys::ncclCommGetAsyncError(comm.0, &mut state) };
        match (asked, state) {
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess)
            | (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclInProgress) => None,
            (sys::ncclResult_t::ncclSuccess, bad) => Some(NcclError(bad)),
            (bad, _) => Some(NcclError(bad)),
        }
    }

    /// Aborts the communicator: pending NCCL kernels end, later calls fail.
    fn abort(&self) {
        let mut comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        if !comm.0.is_null() {
            // SAFETY: a live handle, aborted once and then forgotten.
            unsafe {
                let _ = nccl::comm_abort(comm.0);
            }
            comm.0 = std::ptr::null_mut();
        }
    }

    /// Runs `launch(send, recv)` on device copies of `input` (send; `None`:
    /// in place) and of `out` (recv), waits, and copies recv back to `out`.
    fn staged(
        &self,
        op: &'static str,
        input: Option<&[f32]>,
        out: &mut [f32],
        launch: impl FnOnce(
            *const c_void,
            *mut c_void,
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> Result<NcclStatus, NcclError>,
    ) -> Result<(), CommError> {
        let copy_err = |e| cuda_err("a copy between host and GPU", e);
        let mut recv = self.stream.clone_htod(out).map_err(copy_err)?;
        let mut send = input
            .map(|data| self.stream.clone_htod(data))
            .transpose()
            .map_err(copy_err)?;
        {
            let (recv_ptr, _recv_sync) = recv.device_ptr_mut(&self.stream);
            let send_ptr = match send.as_mut() {
                Some(s) => s.device_ptr_mut(&self.stream).0,
                None => recv_ptr,
            };
            let comm = self.live(op)?;
            launch(
                send_ptr as *const c_void,
                recv_ptr as *mut c_void,
                comm.0,
                self.raw_stream(),
            )
            .map_err(|e| nccl_err(op, e))?;
            self.settled(op, comm)?;
        }
        self.wait_done(op)?;
        let host = self.stream.clone_dtoh(&recv).map_err(copy_err)?;
        self.stream.synchronize().map_err(copy_err)?;
        out.copy_from_slice(&host);
        Ok(())
    }
}

/// Why a launched rank could not join its group.
#[derive(Debug, thiserror::Error)]
pub enum NcclSetupError {
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    #[error(transparent)]
    Comm(#[from] CommError),
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CommError> {
        let n = buf.len();
        self.staged("all_reduce", None, buf, |s, r, comm, stream| unsafe {
            // SAFETY: both pointers are the staging buffer of n values.
            nccl::all_reduce(s, r, n, F32, SUM, comm, stream)
        })
    }
    fn reduce_scatter_sum(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        if input.len() != out.len() * self.world {
            return Err(CommError::Shape {
                rank: self.rank,
                op: "reduce_scatter",
                expected: out.len() * self.world,
                got: input.len(),
            });
        }
        let n = out.len();
        self.staged(
            "reduce_scatter",
            Some(input),
            out,
            |s, r, comm, stream| unsafe {
                // SAFETY: send holds n·world values, recv n (checked above).
                nccl::reduce_scatter(s, r, n, F32, SUM, comm, stream)
            },
        )
    }
    fn all_gather(&self, input: &[f32], out: &mut [f32]) -> Result<(), CommError> {
        if out.len() != input.len() * self.world {
            return Err(CommError::Shape {
                rank: self.rank,
                op: "all_gather",
                expected: input.len() * self.world,
                got: out.len(),
            });
        }
        let n = input.len();
        self.staged(
            "all_gather",
            Some(input),
            out,
            |s, r, comm, stream| unsafe {
                // SAFETY: send holds n values, recv n·world (checked above).
                nccl::all_gather(s, r, n, F32, comm, stream)
            },
        )
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        let n = buf.len();
        self.staged("broadcast", None, buf, |s, r, comm, stream| unsafe {
            // SAFETY: both pointers are the staging buffer of n values.
            nccl::broadcast(s, r, n, F32, root as i32, comm, stream)
        })
    }
    fn barrier(&self) -> Result<(), CommError> {
        // NCCL has no barrier: a one-value all-reduce is the usual stand-in.
        let mut one = [0f32];
        self.all_reduce_sum(&mut one)
    }
}
