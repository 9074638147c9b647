//! Joining an NCCL group, and waiting on a non-blocking communicator: the
//! set-up half of [`super::nccl`], which has the module's full story. By
//! default a rank joins with plain `ncclCommInitRank` (blocking, the call
//! that has run on a GPU); `NCCL_COMM_BLOCKING=0` asks for
//! `ncclCommInitRankConfig` with nccl.h's initializer, polled until the group
//! has formed or the timeout has passed.

use super::comm::CommError;
use super::nccl::nccl_err;
use cudarc::nccl::result::{self as nccl, NcclError};
use cudarc::nccl::sys;
use std::time::{Duration, Instant};

/// Why NCCL did not settle: an error, or the timeout.
pub(super) enum Unsettled {
    Failed(NcclError),
    TimedOut,
}

/// Polls a non-blocking communicator until its state leaves
/// `ncclInProgress` (its set-up or a launch is done), at most until `deadline`.
pub(super) fn settle(comm: sys::ncclComm_t, deadline: Instant) -> Result<(), Unsettled> {
    use sys::ncclResult_t::{ncclInProgress, ncclSuccess};
    loop {
        let mut state = ncclSuccess;
        // SAFETY: a live handle; `state` is written by NCCL.
        let asked = unsafe { sys::ncclCommGetAsyncError(comm, &mut state) };
        match (asked, state) {
            (ncclSuccess, ncclSuccess) => return Ok(()),
            (ncclSuccess, ncclInProgress) => {}
            (ncclSuccess, bad) | (bad, _) => return Err(Unsettled::Failed(NcclError(bad))),
        }
        if Instant::now() >= deadline {
            return Err(Unsettled::TimedOut);
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// The `version` of the `ncclConfig_t` that cudarc's `nccl-02028` layer
/// declares: NCCL_VERSION(2, 28, 0). NCCL reads only the fields that
/// version has (and at most its own struct's size), so a newer library
/// takes it too.
const NCCL_CONFIG_VERSION: u32 = 22800;

/// Blocking unless NCCL's own variable says `NCCL_COMM_BLOCKING=0`. Read
/// here rather than left to NCCL, so that the mode does not depend on
/// whether NCCL lets the variable override the config.
fn blocking_from_env(value: Option<&str>) -> std::ffi::c_int {
    match value.map(str::trim) {
        Some("0") => 0,
        _ => 1,
    }
}

/// nccl.h's `NCCL_CONFIG_INITIALIZER` (every attribute left to NCCL) with
/// `blocking` set: 1, the mode that ran on a GPU, unless
/// `NCCL_COMM_BLOCKING=0` asks for the set-up timeout.
fn group_config() -> sys::ncclConfig_t {
    let blocking = blocking_from_env(std::env::var("NCCL_COMM_BLOCKING").ok().as_deref());
    const UNDEF: std::ffi::c_int = std::ffi::c_int::MIN;
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: NCCL_CONFIG_VERSION,
        blocking,
        cgaClusterSize: UNDEF,
        minCTAs: UNDEF,
        maxCTAs: UNDEF,
        netName: std::ptr::null(),
        splitShare: UNDEF,
        trafficClass: UNDEF,
        commName: std::ptr::null(),
        collnetEnable: UNDEF,
        CTAPolicy: UNDEF,
        shrinkShare: UNDEF,
        nvlsCTAs: UNDEF,
        nChannelsPerNetPeer: UNDEF,
        nvlinkCentricSched: UNDEF,
    }
}

/// Joins the NCCL group `id` as `rank` of `world`. By default with plain
/// `ncclCommInitRank`, which blocks until every rank has joined: the call
/// that has run on a GPU. Under `NCCL_COMM_BLOCKING=0` with
/// `ncclCommInitRankConfig` (non-blocking), which returns at once, and the
/// poll ends the wait after `timeout` when a rank died between the
/// rendezvous and here. The GPU is the calling thread's current one (the
/// primary context made current by cudarc).
pub(super) fn init_group(
    id: sys::ncclUniqueId,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<sys::ncclComm_t, CommError> {
    let mut config = group_config();
    let mut handle: sys::ncclComm_t = std::ptr::null_mut();
    let deadline = Instant::now() + timeout;
    // SAFETY: `handle` (and `config`) outlive the call; the id came from
    // ncclGetUniqueId.
    let started = unsafe {
        if config.blocking == 1 {
            nccl::comm_init_rank(&mut handle, world as i32, id, rank as i32)
        } else {
            nccl::comm_init_rank_config(&mut handle, world as i32, id, rank as i32, &mut config)
        }
    };
    let outcome = match started {
        Ok(_) => settle(handle, deadline),
        Err(e) => Err(Unsettled::Failed(e)),
    };
    let failure = match outcome {
        Ok(()) => return Ok(handle),
        Err(Unsettled::Failed(e)) => nccl_err("joining the NCCL group", e),
        Err(Unsettled::TimedOut) => CommError::InitStalled {
            rank,
            world,
            timeout,
        },
    };
    if !handle.is_null() {
        // SAFETY: the handle NCCL gave back, aborted once and dropped.
        unsafe {
            let _ = nccl::comm_abort(handle);
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nccl.h's initializer writes, which NCCL checks (size, magic)
    /// and reads by version; only `blocking` is ours.
    #[test]
    fn only_nccl_comm_blocking_0_makes_the_group_non_blocking() {
        assert_eq!(blocking_from_env(None), 1);
        assert_eq!(blocking_from_env(Some("1")), 1);
        assert_eq!(blocking_from_env(Some("0")), 0);
        assert_eq!(blocking_from_env(Some(" 0\n")), 0);
        assert_eq!(blocking_from_env(Some("yes")), 1);
    }

    #[test]
    fn the_config_is_nccls_initializer_with_blocking_on() {
        let c = group_config();
        assert_eq!(c.size, std::mem::size_of::<sys::ncclConfig_t>());
        assert_eq!(c.magic, 0xcafebeef);
        // NCCL_VERSION(2, 28, 0) = 2·10000 + 28·100 + 0 (minor > 8).
        assert_eq!(c.version, 2 * 10000 + 28 * 100);
        if std::env::var_os("NCCL_COMM_BLOCKING").is_none() {
            assert_eq!(c.blocking, 1, "the mode that ran on a GPU");
        }
        assert_eq!(c.minCTAs, std::ffi::c_int::MIN, "left to NCCL");
        assert!(c.netName.is_null() && c.commName.is_null());
    }
}
