//! The first failure of the GPU since the backend opened it. The `Backend`
//! ops return nothing (they queue work; CUDA itself reports a failed kernel
//! only at the next synchronising call), so a failure is recorded here
//! instead of panicking: the allocation, launch, copy, matmul or wait that
//! failed, and for an allocation the bytes asked for and the memory in use.
//! From then on every op skips its work (no kernel ever sees a buffer that
//! was not allocated), reads return NaN, and [`crate::backend::Device::check`]
//! returns the error, which the trainer, `cram bench`, GLUE and `cram eval`
//! ask at their synchronisation points and turn into one sentence for the
//! user. The fault stays: a context that failed is not used again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::backend::DeviceError;

#[derive(Default)]
pub(super) struct Fault {
    set: AtomicBool,
    first: Mutex<Option<DeviceError>>,
}

impl Fault {
    /// Whether a failure was recorded (one atomic load: asked before every op).
    pub(super) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Records `e` unless an earlier failure is recorded already: the first
    /// one is the cause, the rest follow from it.
    pub(super) fn record(&self, e: DeviceError) {
        let mut first = super::locked(&self.first);
        if first.is_none() {
            *first = Some(e);
            self.set.store(true, Ordering::Release);
        }
    }

    /// The recorded failure, if any.
    pub(super) fn get(&self) -> Option<DeviceError> {
        if !self.is_set() {
            return None;
        }
        super::locked(&self.first).clone()
    }
}

/// A failed driver or library call, as a [`DeviceError`].
pub(super) fn failed(what: impl Into<String>, e: impl std::fmt::Debug) -> DeviceError {
    DeviceError::Failed {
        what: what.into(),
        detail: format!("{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_later_ones_follow_from_it() {
        let fault = Fault::default();
        assert!(!fault.is_set() && fault.get().is_none());
        fault.record(DeviceError::OutOfMemory {
            bytes: 1 << 40,
            in_use: 1 << 30,
            free: 1 << 33,
            total: 80 << 30,
        });
        fault.record(failed("launching kernel gelu", "CUDA_ERROR_INVALID_VALUE"));
        assert!(fault.is_set());
        let e = fault.get().expect("recorded");
        assert!(matches!(e, DeviceError::OutOfMemory { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("1024.00 GiB more") && text.contains("1.00 GiB already held"),
            "{text}"
        );
        assert!(e.is_size_limit(), "asking for less avoids it");
        assert!(!failed("launching kernel gelu", "INVALID_VALUE").is_size_limit());
        assert_eq!(fault.get(), Some(e), "it stays");
    }
}
