//! What a device can fail at, as errors that name the setting to change.

/// A failure of the device itself (not of the computation): what the GPU
/// could not do. The CPU backend has none; see `cuda/fault.rs` for how the
/// GPU backend records one and carries on without doing work until asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "out of GPU memory: {asked} more were asked for with {in_use} already held by this run \
         ({free} free of {total})",
        asked = gib(*bytes),
        in_use = gib(*in_use),
        free = gib(*free),
        total = gib(*total)
    )]
    OutOfMemory {
        bytes: usize,
        in_use: usize,
        free: usize,
        total: usize,
    },
    #[error("{what} failed on the GPU: {detail}")]
    Failed { what: String, detail: String },
    #[error("{what} over {elements} elements is more than its kernel indexes ({limit} at most)")]
    TooLarge {
        what: &'static str,
        elements: usize,
        limit: usize,
    },
}

impl DeviceError {
    /// Whether asking for less would avoid it (out of memory, or a buffer
    /// past a kernel's indexing): the failures whose message names the
    /// settings that size a step (micro-batch, sequence length).
    pub fn is_size_limit(&self) -> bool {
        matches!(
            self,
            DeviceError::OutOfMemory { .. } | DeviceError::TooLarge { .. }
        )
    }
}

/// Bytes as GiB with two decimals, for messages.
fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
