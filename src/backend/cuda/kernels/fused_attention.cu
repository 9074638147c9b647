// Fused attention for short sequences: one block per (batch, head) holds the
// whole T×T score matrix, one warp per 16 query rows, on tensor cores
// (mma.sync m16n8k16, bf16 in, f32 accumulate). Nothing T×T touches global
// memory: the forward saves only the log-sum-exp of each row, and the
// backward recomputes the probabilities from it (as FlashAttention does).
//
// q|k|v are read in place from the packed [batch·seq, 3·heads·D] rows (bf16).
// Fragment layouts of m16n8k16 (g = lane/4, c = lane%4):
//   A 16×16 row-major: a0 (g, 2c..2c+1), a1 (g+8, 2c..), a2 (g, 2c+8..), a3 (g+8, 2c+8..)
//   B 16×8 col-major:  b0 (k 2c..2c+1, n g), b1 (k 2c+8..2c+9, n g)
//   C 16×8 f32:        c0,c1 (g, 2c..2c+1), c2,c3 (g+8, 2c..2c+1)

#define ATT_PAD 8

__device__ __forceinline__ void mma_bf16(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16 in one word, lo in the low half; round to nearest
// even. Ampere and later have one instruction for it, where the portable
// rounding costs about six per value (the attention kernels pack every
// probability and score gradient, so it showed in their issue rate).
__device__ __forceinline__ u32 pack2(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
    u32 r;
    asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
#endif
}

// 2^x on the special-function unit (what __expf runs after multiplying by
// log2 e): the softmax folds the score scale and log2 e into one fma. The
// .ftz form is one MUFU.EX2; without it ptxas wraps each in a compare and two
// multiplies to keep subnormal results (16% of the flash forward's
// instructions), and a probability below 2^-126 is zero in bf16 anyway.
// Not volatile: a pure function the compiler may schedule and share.
#define LOG2E 1.4426950408889634f
__device__ __forceinline__ float ex2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
}

// The shared-memory address of a generic pointer into shared memory (the
// intrinsic, not inline asm, so the compiler folds it into address math).
__device__ __forceinline__ u32 smem_u32(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// ldmatrix: four 8×8 bf16 tiles, lane t giving the address of row t%8 of
// tile t/8 (16-byte aligned). Lane (g, c) receives, per tile, the pair at
// row g, columns 2c..2c+1 (plain) or column g, rows 2c..2c+1 (`_t`,
// transposed): one instruction fills what took four to sixteen scalar loads.
__device__ __forceinline__ void ldsm4(u32* r, const bf16_t* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm4_t(u32* r, const bf16_t* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}

// Two consecutive values at element i (even) of an f32-or-bf16 buffer.
__device__ __forceinline__ void st2(void* p, int bf, u64 i, float lo, float hi) {
    if (bf) *(u32*)((bf16_t*)p + i) = pack2(lo, hi);
    else *(float2*)((float*)p + i) = make_float2(lo, hi);
}

// Copies rows [0, T) of a D-wide head slice of an f32 buffer (the output
// gradient where it is f32; row stride `stride` elements) into shared memory
// with row stride D + ATT_PAD as bf16, eight values per store: the host
// checks that every row start is aligned. bf16 sources take cp.async
// (`load_head_async`).
template <int T, int D>
__device__ void load_head_f32(bf16_t* dst, const float* src, u64 base, u64 stride) {
    for (int i = threadIdx.x; i < T * D / 8; i += blockDim.x) {
        int t = i / (D / 8), d = 8 * (i % (D / 8));
        const float4* from = (const float4*)(src + base + (u64)t * stride + d);
        float4 x = from[0], y = from[1];
        uint4 packed;
        packed.x = pack2(x.x, x.y);
        packed.y = pack2(x.z, x.w);
        packed.z = pack2(y.x, y.y);
        packed.w = pack2(y.z, y.w);
        *(uint4*)(dst + t * (D + ATT_PAD) + d) = packed;
    }
}

// cp.async: 16 bytes from global to shared without passing through
// registers, so the next tile's copy runs while the warps compute on this
// one (commit closes a group; wait_group N waits until at most N are open).
__device__ __forceinline__ void cp_async16(bf16_t* dst, const bf16_t* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" : : "r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" : :);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" : : "n"(N));
}

// A head slice (T rows of D, row stride `stride` elements) into shared memory
// with row stride D + ATT_PAD by cp.async: issued, not waited for. THREADS is the block's
// size, known when the kernel is built, so that the copy loop unrolls (with
// blockDim.x it stayed a loop whose address math was a fifth of the flash
// forward's instructions in each key tile).
template <int T, int D, int THREADS>
__device__ __forceinline__ void load_head_async(bf16_t* dst, const bf16_t* src, u64 stride) {
    static_assert((T * D / 8) % THREADS == 0, "whole 16-byte chunks a thread");
#pragma unroll
    for (int j = 0; j < T * D / 8 / THREADS; j++) {
        int i = j * THREADS + threadIdx.x;
        int t = i / (D / 8), d = 8 * (i % (D / 8));
        cp_async16(dst + t * (D + ATT_PAD) + d, src + (u64)t * stride + d);
    }
}

// The output gradient's tile: by cp.async when it is bf16, else converted
// from f32 through registers (visible after the next __syncthreads either way).
template <int T, int D, int THREADS>
__device__ void load_grad_tile(bf16_t* dst, const void* src, int src_bf, u64 base, u64 stride) {
    if (src_bf) load_head_async<T, D, THREADS>(dst, (const bf16_t*)src + base, stride);
    else load_head_f32<T, D>(dst, (const float*)src, base, stride);
}

// The A fragments of the warp's 16 rows r0.. of a T×D matrix in shared
// (row stride D+PAD), one per 16-wide k block.
template <int D>
__device__ __forceinline__ void load_rows_a(u32 (*a)[4], const bf16_t* m, int r0) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
    // A tiles: rows r0 / r0+8 (tile bit 0), columns +0 / +8 (tile bit 1).
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm4(a[kk], m + (r0 + (tile & 1) * 8 + row) * LD + kk * 16 + (tile >> 1) * 8);
}

// s = A·Kᵀ for keys nt·8 .. nt·8+7 (K rows in shared `sk`), A the warp's
// rows from `load_rows_a`: one 16×8 tile of scores.
template <int D>
__device__ __forceinline__ void score_tile(float* s, const u32 (*a)[4], const bf16_t* sk, int nt) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
    s[0] = s[1] = s[2] = s[3] = 0.0f;
    // B from key rows as stored: tiles are the four 8-column slices of
    // two consecutive 16-wide k blocks.
#pragma unroll
    for (int kk = 0; kk < D / 16; kk += 2) {
        u32 b[4];
        ldsm4(b, sk + (nt * 8 + row) * LD + kk * 16 + tile * 8);
        mma_bf16(s, a[kk], b[0], b[1]);
        mma_bf16(s, a[kk + 1], b[2], b[3]);
    }
}

// S = Q_w·Kᵀ for the warp's 16 rows (Q rows from shared `sq`, keys from `sk`),
// unscaled: s[nt][.] covers keys nt·8 .. nt·8+7. The softmax applies the
// scale inside its exponent, and only diagonal tiles are masked.
template <int T, int D>
__device__ void scores(float (*s)[4], const bf16_t* sq, const bf16_t* sk, int r0) {
    u32 a[D / 16][4];
    load_rows_a<D>(a, sq, r0);
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) score_tile<D>(s[nt], a, sk, nt);
}

// Causal mask of a tile on the diagonal: scores of keys after their query
// row (indices local to the tile) become −inf.
template <int T>
__device__ __forceinline__ void mask_after_diagonal(float (*s)[4], int r0) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int i = r0 + g + (e >= 2 ? 8 : 0), j = nt * 8 + 2 * c + (e & 1);
            if (j > i) s[nt][e] = NEG_INF;
        }
    }
}

// Max and sum over the 4 lanes that share a row.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Zeroes a warp's accumulator fragments (D/8 blocks of four) before a product.
template <int D>
__device__ __forceinline__ void zero_rows(float (*acc)[4]) {
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
}

// The A fragment of the 16×16 block kk of a 16×T matrix held as C fragments.
__device__ __forceinline__ void c_to_a(u32* a, float (*s)[4], int kk) {
    a[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// acc[nd] += A · M[kk·16 .. kk·16+16, 0..D) for one 16×16 A fragment, M
// row-major in shared (row stride D+PAD). M's rows are B's k, so each B
// fragment is a transposed ldmatrix tile; one ldmatrix serves two nd.
template <int D>
__device__ __forceinline__ void times_block(float (*acc)[4], const u32* a, const bf16_t* m, int kk) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd += 2) {
        u32 b[4];
        ldsm4_t(b, m + (kk * 16 + (tile & 1) * 8 + row) * LD + (nd + (tile >> 1)) * 8);
        mma_bf16(acc[nd], a, b[0], b[1]);
        mma_bf16(acc[nd + 1], a, b[2], b[3]);
    }
}

// acc[nd] += X_w (16×T, C fragments in x) · M (T×D in shared, row stride D+PAD).
template <int T, int D>
__device__ void times_rows(float (*acc)[4], float (*x)[4], const bf16_t* m) {
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        u32 a[4];
        c_to_a(a, x, kk);
        times_block<D>(acc, a, m, kk);
    }
}

// Writes a warp's 16×D result (C fragments) into rows of `dst` (row stride
// `stride`) at column offset `col0`, two values per store.
template <int D>
__device__ void store_rows(void* dst, int dst_bf, float (*acc)[4], u64 row_lo, u64 stride, u64 col0) {
    int lane = threadIdx.x & 31, c = lane & 3;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        u64 col = col0 + nd * 8 + 2 * c;
        st2(dst, dst_bf, row_lo * stride + col, acc[nd][0], acc[nd][1]);
        st2(dst, dst_bf, (row_lo + 8) * stride + col, acc[nd][2], acc[nd][3]);
    }
}

// A warp's 16×D result into rows of a bf16 `dst` through shared memory: the
// warp writes its fragments into rows r0.. of `stage` (a T×D tile, row stride
// D+PAD, whose rows r0.. no other warp reads any more), then copies them out
// sixteen bytes a lane, so that eight lanes write a row's D values as whole
// sectors (the fragments' own stores write 16 bytes of a row each). An f32
// `dst` takes the fragments' stores.
template <int D>
__device__ void store_rows_staged(void* dst, int dst_bf, float (*acc)[4], bf16_t* stage, int r0, u64 row0,
                                  u64 stride, u64 col0) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    if (!dst_bf) {
        store_rows<D>(dst, 0, acc, row0 + r0 + g, stride, col0);
        return;
    }
    const int LD = D + ATT_PAD, CHUNKS = D / 8;
    __syncwarp();  // the warp's earlier reads of these rows are done
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        *(u32*)(stage + (r0 + g) * LD + nd * 8 + 2 * c) = pack2(acc[nd][0], acc[nd][1]);
        *(u32*)(stage + (r0 + g + 8) * LD + nd * 8 + 2 * c) = pack2(acc[nd][2], acc[nd][3]);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16 * CHUNKS / 32; i++) {
        int idx = i * 32 + lane, row = idx / CHUNKS, chunk = idx % CHUNKS;
        uint4 v = *(const uint4*)(stage + (r0 + row) * LD + chunk * 8);
        *(uint4*)((bf16_t*)dst + (row0 + r0 + row) * stride + col0 + chunk * 8) = v;
    }
}

template <int T, int D>
__device__ void attention_forward_impl(void* out, int out_bf, float* lse, const bf16_t* qkv, int heads, int causal, float scale) {
    extern __shared__ __align__(16) bf16_t smem[];
    const int LD = D + ATT_PAD;
    bf16_t* sq = smem;
    bf16_t* sk = sq + T * LD;
    bf16_t* sv = sk + T * LD;
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = blockIdx.x / heads, h = blockIdx.x % heads;
    const bf16_t* base = qkv + b * T * stride + h * D;
    // Q and K first, V behind them: V's copy runs under the scores and the
    // softmax. By cp.async with the block size known (2T threads), so that
    // every copy of a thread is in flight at once: the copy loops bound by
    // blockDim.x had one load in flight a thread, a memory round trip each.
    load_head_async<T, D, 2 * T>(sq, base, stride);
    load_head_async<T, D, 2 * T>(sk, base + hidden, stride);
    cp_async_commit();
    load_head_async<T, D, 2 * T>(sv, base + 2 * hidden, stride);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3, r0 = (threadIdx.x >> 5) * 16;
    float s[T / 8][4];
    scores<T, D>(s, sq, sk, r0);
    if (causal) mask_after_diagonal<T>(s, r0);
    float m_lo = NEG_INF, m_hi = NEG_INF;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        m_lo = fmaxf(m_lo, fmaxf(s[nt][0], s[nt][1]));
        m_hi = fmaxf(m_hi, fmaxf(s[nt][2], s[nt][3]));
    }
    m_lo = quad_max(m_lo);
    m_hi = quad_max(m_hi);
    // exp(scale·(s − m)) = 2^(s·scale·log2 e − m·scale·log2 e): one fma per score.
    const float sl2 = scale * LOG2E, off_lo = m_lo * sl2, off_hi = m_hi * sl2;
    float l_lo = 0.0f, l_hi = 0.0f;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        s[nt][0] = ex2(fmaf(s[nt][0], sl2, -off_lo));
        s[nt][1] = ex2(fmaf(s[nt][1], sl2, -off_lo));
        s[nt][2] = ex2(fmaf(s[nt][2], sl2, -off_hi));
        s[nt][3] = ex2(fmaf(s[nt][3], sl2, -off_hi));
        l_lo += s[nt][0] + s[nt][1];
        l_hi += s[nt][2] + s[nt][3];
    }
    l_lo = quad_sum(l_lo);
    l_hi = quad_sum(l_hi);
    float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        s[nt][0] *= inv_lo;
        s[nt][1] *= inv_lo;
        s[nt][2] *= inv_hi;
        s[nt][3] *= inv_hi;
    }
    if (c == 0) {
        lse[blockIdx.x * T + r0 + g] = m_lo * scale + logf(l_lo);
        lse[blockIdx.x * T + r0 + g + 8] = m_hi * scale + logf(l_hi);
    }
    cp_async_wait<0>();
    __syncthreads();  // V is in shared for every warp
    float o[D / 8][4];
    zero_rows<D>(o);
    times_rows<T, D>(o, s, sv);
    // Every warp read Q for its scores before the barrier above: Q's rows
    // stage the output.
    store_rows_staged<D>(out, out_bf, o, sq, r0, b * T, hidden, h * D);
}

// acc[nd] += Mᵀ_w · N where M (T rows, shared, row stride LM: T+PAD for a
// T×T tile) supplies the warp's 16 columns r0.. as rows, and N is T×D in shared.
template <int T, int D, int LM = T + ATT_PAD>
__device__ void transposed_times(float (*acc)[4], const bf16_t* m, const bf16_t* n, int r0) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        // Aᵀ tiles: M rows kk·16 / +8 (tile bit 1), columns r0 / r0+8 (bit 0).
        u32 a[4];
        ldsm4_t(a, m + (kk * 16 + (tile >> 1) * 8 + row) * LM + r0 + (tile & 1) * 8);
        times_block<D>(acc, a, n, kk);
    }
}

// Writes a warp's 16×T matrix, held as A fragments (`c_to_a`), into rows
// r0.. of a T×T shared tile (row stride T+PAD).
template <int T>
__device__ __forceinline__ void store_a_rows(bf16_t* m, const u32 (*a)[4], int r0) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int LT = T + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        int j = kk * 16 + 2 * c;
        *(u32*)(m + (r0 + g) * LT + j) = a[kk][0];
        *(u32*)(m + (r0 + g + 8) * LT + j) = a[kk][1];
        *(u32*)(m + (r0 + g) * LT + j + 8) = a[kk][2];
        *(u32*)(m + (r0 + g + 8) * LT + j + 8) = a[kk][3];
    }
}

// Δ = rowsum(dO ∘ O) of the warp's rows r0 + g and r0 + g + 8, dO and O
// from shared (row stride D+PAD): lanes 2r and 2r + 1 take half of row r0 + r
// each, eight values a load. Equal to rowsum(P ∘ dP), which would keep all
// of dP in registers beside P.
template <int D>
__device__ __forceinline__ void row_deltas(float* d_lo, float* d_hi, const bf16_t* sdo, const bf16_t* so, int r0) {
    int lane = threadIdx.x & 31, g = lane >> 2, r = lane >> 1, half = lane & 1;
    const int LD = D + ATT_PAD, H = D / 2;
    const bf16_t* dor = sdo + (r0 + r) * LD + half * H;
    const bf16_t* orow = so + (r0 + r) * LD + half * H;
    float acc = 0.0f;
#pragma unroll
    for (int d = 0; d < H; d += 8) {
        uint4 x = *(const uint4*)(dor + d), y = *(const uint4*)(orow + d);
        const u32 xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            acc += __uint_as_float(xs[e] << 16) * __uint_as_float(ys[e] << 16);
            acc += __uint_as_float(xs[e] & 0xffff0000u) * __uint_as_float(ys[e] & 0xffff0000u);
        }
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    *d_lo = __shfl_sync(0xffffffffu, acc, 2 * g);
    *d_hi = __shfl_sync(0xffffffffu, acc, 2 * g + 16);
}

// The backward of one (batch, head), a warp per 16 query rows. Registers
// hold P (then dS) for the warp's rows; one T×T shared tile holds first the
// forward's output O (for Δ), then P for dV = Pᵀ·dO, then dS for dK = dSᵀ·Q,
// so that two blocks share an SM at T = 128 (one block alone waited on its
// own loads). Every global read is a copy issued at the start (nothing reads
// global memory between the products), and the results leave through K's
// rows, which nothing reads after dQ, as whole rows (`store_rows_staged`).
template <int T, int D>
__device__ void attention_backward_impl(void* dqkv, int dqkv_bf, const void* dout, int dout_bf, const void* o,
                                        int o_bf, const bf16_t* qkv, const float* lse, int heads, int causal,
                                        float scale) {
    extern __shared__ __align__(16) bf16_t smem[];
    const int LD = D + ATT_PAD;
    bf16_t* sq = smem;
    bf16_t* sk = sq + T * LD;
    bf16_t* sv = sk + T * LD;
    bf16_t* sdo = sv + T * LD;
    bf16_t* sps = sdo + T * LD;
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = blockIdx.x / heads, h = blockIdx.x % heads;
    const bf16_t* base = qkv + b * T * stride + h * D;
    int lane = threadIdx.x & 31, g = lane >> 2, r0 = (threadIdx.x >> 5) * 16;
    // The log-sum-exps first, so that their round trip runs under the copies.
    float off_lo = lse[blockIdx.x * T + r0 + g] * LOG2E, off_hi = lse[blockIdx.x * T + r0 + g + 8] * LOG2E;
    // Q and K first (the scores), V, dO and O behind them (as the forward).
    load_head_async<T, D, 2 * T>(sq, base, stride);
    load_head_async<T, D, 2 * T>(sk, base + hidden, stride);
    cp_async_commit();
    load_head_async<T, D, 2 * T>(sv, base + 2 * hidden, stride);
    load_grad_tile<T, D, 2 * T>(sdo, dout, dout_bf, b * T * hidden + h * D, hidden);
    load_grad_tile<T, D, 2 * T>(sps, o, o_bf, b * T * hidden + h * D, hidden);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    float p[T / 8][4];
    scores<T, D>(p, sq, sk, r0);
    if (causal) mask_after_diagonal<T>(p, r0);
    const float sl2 = scale * LOG2E;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        p[nt][0] = ex2(fmaf(p[nt][0], sl2, -off_lo));
        p[nt][1] = ex2(fmaf(p[nt][1], sl2, -off_lo));
        p[nt][2] = ex2(fmaf(p[nt][2], sl2, -off_hi));
        p[nt][3] = ex2(fmaf(p[nt][3], sl2, -off_hi));
    }
    cp_async_wait<0>();
    __syncthreads();  // V, dO and O are in shared for every warp
    float d_lo, d_hi;
    row_deltas<D>(&d_lo, &d_hi, sdo, sps, r0);
    u32 frag[T / 16][4];
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) c_to_a(frag[kk], p, kk);
    __syncthreads();  // every warp is done with O
    store_a_rows<T>(sps, frag, r0);
    // dS = P ∘ (dP − Δ) · scale with dP = dO_w·Vᵀ a tile at a time: P
    // becomes dS in place.
    {
        u32 a[D / 16][4];
        load_rows_a<D>(a, sdo, r0);
#pragma unroll
        for (int nt = 0; nt < T / 8; nt++) {
            float dp[4];
            score_tile<D>(dp, a, sv, nt);
            p[nt][0] *= (dp[0] - d_lo) * scale;
            p[nt][1] *= (dp[1] - d_lo) * scale;
            p[nt][2] *= (dp[2] - d_hi) * scale;
            p[nt][3] *= (dp[3] - d_hi) * scale;
        }
    }
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) c_to_a(frag[kk], p, kk);
    float acc[D / 8][4];
    // dQ = dS·K
    zero_rows<D>(acc);
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) times_block<D>(acc, frag[kk], sk, kk);
    __syncthreads();  // every warp's P is in sps, and no warp reads K any more
    store_rows_staged<D>(dqkv, dqkv_bf, acc, sk, r0, b * T, stride, h * D);
    // dV = Pᵀ·dO for the warp's 16 keys.
    zero_rows<D>(acc);
    transposed_times<T, D>(acc, sps, sdo, r0);
    store_rows_staged<D>(dqkv, dqkv_bf, acc, sk, r0, b * T, stride, 2 * hidden + h * D);
    __syncthreads();  // every warp is done with P
    store_a_rows<T>(sps, frag, r0);
    __syncthreads();
    // dK = dSᵀ·Q for the warp's 16 keys.
    zero_rows<D>(acc);
    transposed_times<T, D>(acc, sps, sq, r0);
    store_rows_staged<D>(dqkv, dqkv_bf, acc, sk, r0, b * T, stride, hidden + h * D);
}

#define FUSED_ATTENTION(T, D)                                                                              \
    extern "C" __global__ void __launch_bounds__(T * 2)                                                   \
        attention_fused_forward_##T##_##D(void* out, int out_bf, float* lse, const bf16_t* qkv, int heads, \
                                          int causal, float scale) {                                       \
        attention_forward_impl<T, D>(out, out_bf, lse, qkv, heads, causal, scale);                         \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(T * 2, 2) attention_fused_backward_##T##_##D(             \
        void* dqkv, int dqkv_bf, const void* dout, int dout_bf, const void* o, int o_bf, const bf16_t* qkv, \
        const float* lse, int heads, int causal, float scale) {                                            \
        attention_backward_impl<T, D>(dqkv, dqkv_bf, dout, dout_bf, o, o_bf, qkv, lse, heads, causal,     \
                                      scale);                                                              \
    }

FUSED_ATTENTION(32, 32)
FUSED_ATTENTION(64, 32)
FUSED_ATTENTION(128, 32)
FUSED_ATTENTION(32, 64)
FUSED_ATTENTION(64, 64)
FUSED_ATTENTION(128, 64)
