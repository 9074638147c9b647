//! Kernel launches: one kernel by name with its arguments as u64 slots
//! ([`f32_arg`] for floats), the grid-stride launch shapes most kernels use,
//! the 16-byte alignment checks of the vectorised kernels, the f32/bf16
//! conversion, and the two-pass sum (partials, then one block) that the
//! statistics, the gradient norm and a position-scale gradient share.

use cudarc::driver::result as drv;

use super::{locked, Cuda, View};

/// Whether every pointer allows the kernels' 16-byte vector accesses.
/// Device allocations are 256-byte aligned; a view into the middle of one
/// (a parameter tensor) may not be.
pub(super) fn vector_aligned(ptrs: &[u64]) -> bool {
    ptrs.iter().all(|p| p % 16 == 0)
}

/// For kernels that only have a vector path: a misaligned buffer would
/// fault on the GPU, so it stops here with the op's name.
pub(super) fn assert_vector_aligned(op: &str, ptrs: &[u64]) {
    assert!(
        vector_aligned(ptrs),
        "{op} needs 16-byte aligned activation buffers, got {ptrs:#x?}"
    );
}

/// An f32 kernel argument in a u64 slot.
pub(crate) fn f32_arg(x: f32) -> u64 {
    x.to_bits() as u64
}

impl Cuda {
    pub(super) fn convert_raw(&self, dst: u64, dst_bf: bool, src: u64, src_bf: bool, n: usize) {
        self.launch_each(
            "convert",
            n,
            &[dst, dst_bf as u64, src, src_bf as u64, n as u64],
        );
    }

    /// Launches a grid-stride kernel over `n` elements (blocks of 256 threads).
    pub(super) fn launch_each(&self, name: &'static str, n: usize, args: &[u64]) {
        self.launch(name, self.grid(n), 256, 0, args);
    }

    /// Like `launch_each`, for a kernel whose grid-stride loop takes
    /// `per_thread` elements a thread (4 for a `FOR_EACH4` loop).
    pub(super) fn launch_vec(&self, name: &'static str, n: usize, per_thread: usize, args: &[u64]) {
        self.launch(name, self.grid(n.div_ceil(per_thread)), 256, 0, args);
    }

    /// Blocks for a grid-stride loop over `n` elements of 256 threads.
    pub(super) fn grid(&self, n: usize) -> u32 {
        let blocks = n.div_ceil(256).max(1);
        blocks.min(self.sm_count as usize * 16) as u32
    }

    /// Blocks for a kernel whose blocks walk `items` work items
    /// block-strided (item blockIdx.x, then + gridDim.x, ...): as many as the
    /// GPU holds at once (the driver's occupancy of `name` at this block size
    /// and dynamic shared memory, times the SMs), trimmed so that every block
    /// has the same number of items and none waits for a second wave.
    pub(super) fn resident_grid(
        &self,
        name: &'static str,
        block: u32,
        shared: u32,
        items: usize,
    ) -> u32 {
        // Asked of the driver once per kernel and launch shape.
        let per_sm = *locked(&self.occupancy)
            .entry((name, block, shared))
            .or_insert_with(|| {
                let f = self.kernels.function(name);
                // SAFETY: `f` is a loaded kernel of this context.
                let n = unsafe {
                    drv::occupancy::max_active_block_per_multiprocessor(
                        f,
                        block as i32,
                        shared as usize,
                    )
                };
                // A query that fails leaves one block an SM: slower, not wrong.
                n.map_or(1, |n| n.max(1) as usize)
            });
        let slots = per_sm * self.sm_count as usize;
        let per_block = items.div_ceil(slots).max(1);
        items.div_ceil(per_block).max(1) as u32
    }

    /// Launches kernel `name`. Each argument is passed as the 8 bytes of a
    /// u64 slot; 4-byte parameters (i32, f32) read the slot's low half,
    /// which is where little-endian hosts keep it (see [`f32_arg`]).
    pub(super) fn launch(
        &self,
        name: &'static str,
        grid: u32,
        block: u32,
        shared: u32,
        args: &[u64],
    ) {
        if !self.ready() {
            return;
        }
        let mut slots: Vec<u64> = args.to_vec();
        let mut params: Vec<*mut std::ffi::c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut std::ffi::c_void)
            .collect();
        let f = self.kernels.function(name);
        if self.debug {
            eprintln!(
                "cuda: launch {name} grid {grid} block {block} shared {shared} args {args:x?}"
            );
        }
        // SAFETY: the argument list matches the kernel's signature (checked
        // by the op tests against the CPU backend).
        unsafe {
            drv::launch_kernel(
                f,
                (grid, 1, 1),
                (block, 1, 1),
                shared,
                self.raw_stream(),
                &mut params,
            )
        }
        .unwrap_or_else(|e| {
            let what = format!(
                "launching kernel {name} (grid {grid}, block {block}, shared {shared} bytes)"
            );
            self.fault.record(super::fault::failed(what, e));
        });
        if self.debug {
            if let Err(e) = self.stream.synchronize() {
                self.fault
                    .record(super::fault::failed(format!("kernel {name}"), e));
            }
        }
    }
}

impl Cuda {
    /// `dst[index] = (accumulate ? dst[index] : 0) + scale · Σ src (or Σ src²)`.
    pub(super) fn reduce_into(
        &self,
        dst: u64,
        index: usize,
        src: View,
        square: bool,
        scale: f32,
        accumulate: bool,
    ) {
        let blocks = self.grid(src.len).min(1024);
        let partials = self.scratch("partials", blocks as usize * 4);
        self.launch(
            "sum_partials",
            blocks,
            256,
            0,
            &[partials, src.ptr, src.bf, src.len as u64, square as u64],
        );
        self.finish_sum(dst, index, partials, blocks, scale, accumulate);
    }

    pub(super) fn finish_sum(
        &self,
        dst: u64,
        index: usize,
        partials: u64,
        n: u32,
        scale: f32,
        accumulate: bool,
    ) {
        self.launch(
            "finish_sum",
            1,
            1024,
            0,
            &[
                dst,
                index as u64,
                partials,
                n as u64,
                f32_arg(scale),
                accumulate as u64,
            ],
        );
    }
}
