//! Flash attention (`kernels/flash_attention.cu`): sequences of whole 64-row
//! tiles past the short fused kernels, queries and keys in tiles with an
//! online softmax, nothing T×T in memory. The forward saves each row's
//! log-sum-exp; the backward runs Δ (with dQ's zeroing), the key-tile kernel
//! (dK and dV in registers, dQ by f32 reductions) and dQ's store, where
//! rotary positions' inverse rotation of dQ and dK also happens.

use crate::backend::cuda::{assert_vector_aligned, f32_arg, Cuda, CudaBuf};
use crate::backend::AttentionShape;

/// A flash attention kernel pair for one head width: queries and keys in
/// tiles of [`FlashAttention::TILE`], any number of them.
pub(in crate::backend::cuda) struct FlashAttention {
    pub forward: &'static str,
    pub backward: &'static str,
    /// The forward with two 16-row m-tiles a warp (128 query rows a block),
    /// used where the sequence holds whole pairs of tiles (faster where
    /// built; `CRAM_FLASH_FORWARD=m1` turns it off for comparison).
    pub forward_m2: Option<&'static str>,
    /// The backward with two key tiles (128 keys, eight warps) a block, which
    /// reduces into dQ half as often; where the sequence holds whole pairs
    /// of tiles and `CRAM_FLASH_BACKWARD=k2` asks for it (a comparison
    /// switch until a GPU measures it).
    pub backward_k2: Option<&'static str>,
    /// The forward on Hopper's wgmma (`flash_wgmma.cu`: two warpgroups of
    /// 64 query rows a block), the default where built
    /// (`CRAM_FLASH_FORWARD=mma` runs the mma.sync forward instead).
    pub forward_wgmma: Option<&'static str>,
    /// The backward on wgmma (one warpgroup of 64 keys a block), the
    /// default where built and the output gradient is bf16
    /// (`CRAM_FLASH_BACKWARD=mma` runs the mma.sync backward instead).
    pub backward_wgmma: Option<&'static str>,
    pub head_dim: usize,
}

/// The head widths `flash_attention.cu` is instantiated for.
pub(in crate::backend::cuda) const FLASH_ATTENTION: [FlashAttention; 3] = [
    FlashAttention {
        forward: "attention_flash_forward_32",
        backward: "attention_flash_backward_32",
        forward_m2: None,
        backward_k2: None,
        forward_wgmma: None,
        backward_wgmma: None,
        head_dim: 32,
    },
    FlashAttention {
        forward: "attention_flash_forward_64",
        backward: "attention_flash_backward_64",
        forward_m2: Some("attention_flash_forward_64_m2"),
        backward_k2: Some("attention_flash_backward_64_k2"),
        forward_wgmma: Some("attention_flash_forward_64_wgmma"),
        backward_wgmma: Some("attention_flash_backward_64_wgmma"),
        head_dim: 64,
    },
    FlashAttention {
        forward: "attention_flash_forward_128",
        backward: "attention_flash_backward_128",
        forward_m2: None,
        backward_k2: None,
        forward_wgmma: None,
        backward_wgmma: None,
        head_dim: 128,
    },
];

impl FlashAttention {
    /// Query and key rows per tile (`FA_TILE` in the kernels).
    pub const TILE: usize = 64;
    /// Threads per block: four warps of 16 rows (a key tile's; eight warps
    /// for the backward's two).
    const THREADS: u32 = 128;

    /// Dynamic shared memory (bytes): a q tile and two (k, v) buffers
    /// (forward); k and v tiles, two (q, output-gradient) buffers and the P
    /// and dS tiles (backward); rows padded by 8 bf16. The second buffer
    /// takes the next tile's copy while the warps compute on the first.
    pub fn shared_bytes(&self, backward: bool) -> usize {
        if backward {
            Self::backward_bytes(self.head_dim, 1)
        } else {
            Self::forward_bytes(self.head_dim, 1)
        }
    }

    /// The backward's shared memory with `kb` key tiles a block: K and V,
    /// two (q, output-gradient) buffers, and P and dS of 64 query rows by
    /// the block's keys.
    pub fn backward_bytes(head_dim: usize, kb: usize) -> usize {
        let tile = Self::TILE * (head_dim + 8) * 2;
        (2 * kb + 4) * tile + 2 * Self::TILE * (kb * Self::TILE + 8) * 2
    }

    /// The forward's shared memory with `m` query tiles a block: the
    /// queries and two (k, v) buffers.
    pub fn forward_bytes(head_dim: usize, m: usize) -> usize {
        (m + 4) * Self::TILE * (head_dim + 8) * 2
    }

    /// The wgmma forward's shared memory: two 64-row query tiles and two
    /// (k, v) buffers of 128-byte rows (head width 64, unpadded: wgmma reads
    /// them 128-byte swizzled, without bank conflicts), and 1 KB to align
    /// the tiles to the swizzle's 1024 bytes.
    pub fn wgmma_forward_bytes() -> usize {
        6 * Self::TILE * 128 + 1024
    }

    /// The wgmma backward's shared memory: K, V, two (q, output-gradient)
    /// buffers and dSᵀ, 64 rows of 128 bytes each; two buffers of a query
    /// tile's log-sum-exps and Δs (64 f32 each); each of the four warps'
    /// eight staged f32 dQ rows (288 bytes a row, padded against bank
    /// conflicts); and 1 KB to align them. 68.4 KB: three blocks an SM.
    pub fn wgmma_backward_bytes() -> usize {
        7 * Self::TILE * 128 + 2 * 2 * Self::TILE * 4 + 4 * 8 * 288 + 1024
    }

    /// Saved state (bf16 elements): each query row's f32 log-sum-exp. The
    /// backward's Δ = rowsum(dO ∘ O) reads O from the forward's output,
    /// which the model keeps for the output projection anyway (a copy here
    /// was rows × hidden bf16 a layer: 0.6 GB at gpt-small's shape).
    pub(super) fn saved_len(shape: AttentionShape) -> usize {
        2 * shape.batch * shape.heads * shape.seq
    }

    /// Blocks of `rows` query or key rows for `shape`.
    fn blocks(shape: AttentionShape, rows: usize) -> u32 {
        (shape.batch * shape.heads * (shape.seq / rows)) as u32
    }
}

impl Cuda {
    pub(super) fn flash_forward(
        &self,
        f: &FlashAttention,
        out: &mut CudaBuf,
        saved: &mut CudaBuf,
        qkv: &CudaBuf,
        shape: AttentionShape,
    ) {
        assert!(
            saved.bf16 && saved.len >= FlashAttention::saved_len(shape),
            "attention state must be a bf16 buffer of attention_saved_len values"
        );
        let lse = saved.ptr();
        // Two query tiles a block where the sequence holds whole pairs of
        // tiles, unless the comparison switch turns it off.
        let m2 = (f.forward_m2).filter(|_| {
            self.flash_forward_m2 && shape.seq.is_multiple_of(2 * FlashAttention::TILE)
        });
        // The wgmma forward (two warpgroups a block) where built (Hopper) and not
        // switched off (`CRAM_FLASH_FORWARD=mma`).
        let wgmma = (f.forward_wgmma).filter(|_| {
            self.flash_forward_wgmma && shape.seq.is_multiple_of(2 * FlashAttention::TILE)
        });
        let pair = FlashAttention::blocks(shape, 2 * FlashAttention::TILE);
        let (kernel, blocks, threads, bytes) = match (wgmma, m2) {
            (Some(k), _) => (
                k,
                pair,
                2 * FlashAttention::THREADS,
                FlashAttention::wgmma_forward_bytes(),
            ),
            (None, Some(k)) => (
                k,
                pair,
                FlashAttention::THREADS,
                FlashAttention::forward_bytes(f.head_dim, 2),
            ),
            (None, None) => (
                f.forward,
                FlashAttention::blocks(shape, FlashAttention::TILE),
                FlashAttention::THREADS,
                f.shared_bytes(false),
            ),
        };
        self.timed("attention_forward", || {
            let q = self.as_bf16(qkv, "cast_qkv");
            assert_vector_aligned("flash attention", &[q, out.ptr()]);
            self.launch(
                kernel,
                blocks,
                threads,
                bytes as u32,
                &[
                    out.ptr(),
                    out.bf(),
                    lse,
                    q,
                    shape.seq as u64,
                    shape.heads as u64,
                    shape.causal as u64,
                    f32_arg(shape.scale()),
                ],
            )
        });
    }

    /// Δ per row first, then the key-tile kernel (dK, dV; dQ by f32 atomics
    /// into zeroed scratch), then dQ into dqkv.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn flash_backward(
        &self,
        f: &FlashAttention,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        qkv: &CudaBuf,
        saved: &CudaBuf,
        shape: AttentionShape,
        rope: Option<f32>,
    ) {
        let row_heads = shape.batch * shape.heads * shape.seq;
        let lse = saved.ptr();
        let (rows, hidden) = (shape.rows(), shape.hidden());
        // Three timed parts, so that a profile tells the key-tile kernel from
        // the passes around it: Δ with dQ's zeroing, the kernel, dQ's store.
        let q = self.as_bf16(qkv, "cast_qkv");
        assert_vector_aligned(
            "flash attention",
            &[q, dout.ptr(), dqkv.ptr(), out.ptr(), lse],
        );
        let delta = self.scratch("flash_delta", row_heads * 4);
        let dq = self.scratch("flash_dq", rows * hidden * 4);
        // Eight columns a thread (the flash head widths, 32 to 128, are
        // multiples of 8): Δ, and dQ's zeroing in the same pass.
        let chunks = rows * hidden / 8;
        // Rotary positions: dK and dQ get the inverse rotation as they are
        // stored (no separate pass over dqkv's q and k columns).
        let table = rope.map(|theta| self.rotary_table(shape, theta));
        self.timed("attention_backward_delta", || {
            self.launch(
                "flash_backward_delta",
                self.grid(chunks),
                256,
                0,
                &[
                    delta,
                    dq,
                    dout.ptr(),
                    dout.bf(),
                    out.ptr(),
                    out.bf(),
                    chunks as u64,
                    hidden as u64,
                    shape.seq as u64,
                    shape.head_dim as u64,
                ],
            );
        });
        // The wgmma backward (one warpgroup a 64-key tile) where built (Hopper)
        // and not switched off; it reads the output gradient as bf16 only.
        // Else two key tiles a block where asked for and the sequence holds
        // whole pairs; else one. `kb`: key tiles a block.
        let wgmma = (f.backward_wgmma).filter(|_| self.flash_backward_wgmma && dout.bf16);
        let k2 = (f.backward_k2).filter(|_| {
            self.flash_backward_k2 && shape.seq.is_multiple_of(2 * FlashAttention::TILE)
        });
        let (kernel, kb, bytes) = match (wgmma, k2) {
            (Some(k), _) => (k, 1, FlashAttention::wgmma_backward_bytes()),
            (None, Some(k)) => (k, 2, FlashAttention::backward_bytes(f.head_dim, 2)),
            (None, None) => (f.backward, 1, FlashAttention::backward_bytes(f.head_dim, 1)),
        };
        let mut args = vec![
            dqkv.ptr(),
            dqkv.bf(),
            dq,
            dout.ptr(),
            dout.bf(),
            q,
            lse,
            delta,
            table.unwrap_or(0),
            shape.seq as u64,
            shape.heads as u64,
            shape.causal as u64,
            f32_arg(shape.scale()),
        ];
        if wgmma.is_some() {
            // bulk_dq: the wgmma kernel's way of adding its dQ parts.
            args.push(!self.flash_dq_red as u64);
        }
        self.timed("attention_backward", || {
            self.launch(
                kernel,
                FlashAttention::blocks(shape, kb * FlashAttention::TILE),
                kb as u32 * FlashAttention::THREADS,
                bytes as u32,
                &args,
            )
        });
        self.flash_store_dq(dqkv, dq, shape, table);
    }

    /// dqkv's q columns from dQ's f32 scratch; with `rope`, the rotary
    /// table, each rotate-half pair also gets the inverse rotation on its way.
    fn flash_store_dq(
        &self,
        dqkv: &mut CudaBuf,
        dq: u64,
        shape: AttentionShape,
        rope: Option<u64>,
    ) {
        let (rows, hidden) = (shape.rows(), shape.hidden());
        // Four columns (or rotary pairs) a thread where the counts fit 32
        // bits: the flash head widths, 32 to 128, make hidden a multiple of
        // 32 and half a head a multiple of 4; the table is scratch (aligned).
        let vec4 = hidden.is_multiple_of(4) && u32::try_from(rows * hidden / 4).is_ok();
        let (name, threads, args) = match rope {
            Some(table) => {
                assert!(
                    vec4,
                    "flash attention's rotary dQ store needs 32-bit counts"
                );
                let n4 = (rows * hidden / 8) as u64;
                let (seq, heads, d) = (shape.seq as u64, shape.heads as u64, shape.head_dim as u64);
                let args = vec![dqkv.ptr(), dqkv.bf(), dq, table, seq, heads, d, n4];
                ("flash_backward_store_dq_rotary4", rows * hidden / 8, args)
            }
            None => {
                let args = vec![dqkv.ptr(), dqkv.bf(), dq, rows as u64, hidden as u64];
                if vec4 {
                    ("flash_backward_store_dq4", rows * hidden / 4, args)
                } else {
                    ("flash_backward_store_dq", rows * hidden, args)
                }
            }
        };
        self.timed("attention_backward_dq", || {
            self.launch(name, self.grid(threads), 256, 0, &args)
        });
    }
}
