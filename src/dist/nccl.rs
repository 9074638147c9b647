//! The [`Communicator`] of a multi-GPU run, over NCCL (cudarc's `nccl`
//! module). NOT YET RUN: this machine has no GPU, so the code is compiled
//! but untested; the CPU tests cover the same trait through [`ThreadComm`].
//!
//! It follows the trait's host-slice contract: each collective copies the
//! host values to a staging buffer on the rank's GPU, runs the NCCL
//! collective there and copies the result back. [`DataParallel`] already
//! moves gradients through the host, so this is correct but not fast; the
//! fast path (NCCL straight on the backend's gradient and parameter buffers,
//! in buckets overlapped with the backward pass) needs the CUDA backend to
//! expose its device pointers and stream, and is left for the GPU session.
//!
//! Hangs: NCCL calls are asynchronous, so every collective records an event
//! and polls it until the timeout; a collective that does not finish fails
//! with [`CommError::Stalled`] (NCCL cannot say which peer is missing; the
//! rendezvous named every rank when the group formed) and the communicator
//! is aborted when dropped.
//!
//! [`DataParallel`]: super::parallel::DataParallel
//! [`ThreadComm`]: super::comm::ThreadComm

use super::comm::{CommError, Communicator};
use super::rendezvous::{DistEnv, RendezvousError};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An NCCL communicator, used by one thread at a time.
struct CommCell(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls
// are not concurrent; `NcclComm` only touches it under its mutex.
unsafe impl Send for CommCell {}

pub struct NcclComm {
    comm: Mutex<CommCell>,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> CommError {
    CommError::Other(format!("NCCL {what} failed: {e:?}"))
}

/// Whether libnccl can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

impl NcclComm {
    /// A fresh NCCL unique id (rank 0 makes it and the rendezvous carries it).
    pub fn unique_id() -> Result<Vec<u8>, CommError> {
        if !nccl_present() {
            return Err(CommError::Other(
                "the NCCL library (libnccl.so.2) is not installed or not loadable".into(),
            ));
        }
        let id = Id::new().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
        Ok(id.internal().iter().map(|&c| c as u8).collect())
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
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| CommError::Other(format!("GPU {ordinal} cannot be used: {e:?}")))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| CommError::Other(format!("cannot create a CUDA stream: {e:?}")))?;
        let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(internal))
            .map_err(|e| nccl_err("ncclCommInitRank", e))?;
        Ok(NcclComm {
            comm: Mutex::new(CommCell(comm)),
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

    /// Runs `launch` (an NCCL call on the stream) and waits for it, at most
    /// the timeout.
    fn run(
        &self,
        op: &'static str,
        launch: impl FnOnce(&Comm) -> Result<(), CommError>,
    ) -> Result<(), CommError> {
        let cell = self
            .comm
            .lock()
            .map_err(|_| CommError::Failed("a thread panicked inside a collective".into()))?;
        launch(&cell.0)?;
        let event = self
            .stream
            .record_event(None)
            .map_err(|e| nccl_err(op, e))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() >= deadline => {
                    return Err(CommError::Stalled {
                        op,
                        rank: self.rank,
                        timeout: self.timeout,
                    })
                }
                Ok(false) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => return Err(nccl_err(op, e)),
            }
        }
    }

    fn to_device(&self, data: &[f32]) -> Result<cudarc::driver::CudaSlice<f32>, CommError> {
        self.stream
            .clone_htod(data)
            .map_err(|e| CommError::Other(format!("copy to the GPU failed: {e:?}")))
    }

    fn to_host(
        &self,
        buf: &cudarc::driver::CudaSlice<f32>,
        out: &mut [f32],
    ) -> Result<(), CommError> {
        let host = self
            .stream
            .clone_dtoh(buf)
            .map_err(|e| CommError::Other(format!("copy from the GPU failed: {e:?}")))?;
        self.stream
            .synchronize()
            .map_err(|e| CommError::Other(format!("copy from the GPU failed: {e:?}")))?;
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
        let mut dev = self.to_device(buf)?;
        self.run("all_reduce", |c| {
            c.all_reduce_in_place(&mut dev, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclAllReduce", e))
        })?;
        self.to_host(&dev, buf)
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
        let src = self.to_device(input)?;
        let mut dst = self.to_device(out)?;
        self.run("reduce_scatter", |c| {
            c.reduce_scatter(&src, &mut dst, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclReduceScatter", e))
        })?;
        self.to_host(&dst, out)
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
        let src = self.to_device(input)?;
        let mut dst = self.to_device(out)?;
        self.run("all_gather", |c| {
            c.all_gather(&src, &mut dst)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclAllGather", e))
        })?;
        self.to_host(&dst, out)
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        let mut dev = self.to_device(buf)?;
        self.run("broadcast", |c| {
            c.broadcast_in_place(&mut dev, root as i32)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclBroadcast", e))
        })?;
        self.to_host(&dev, buf)
    }
    fn barrier(&self) -> Result<(), CommError> {
        // NCCL has no barrier: a one-value all-reduce is the usual stand-in.
        let mut one = [0f32];
        self.all_reduce_sum(&mut one)
    }
}
