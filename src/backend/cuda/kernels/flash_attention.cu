// Flash attention for sequences longer than the short kernels hold (any
// multiple of 64): queries and keys in tiles of 64, the softmax computed
// online over key tiles (a running maximum and sum per row), so nothing T×T
// ever exists, in shared memory or global (FlashAttention-2's schedule).
// The tensor-core pieces (scores, times_rows, transposed_times, ldmatrix
// loads) are those of fused_attention.cu, which comes before this file in
// the program.
//
// Saved state per call: each query row's log-sum-exp (f32, [batch·heads,
// seq]). The backward needs Δ = rowsum(dO ∘ O) per row and head before its
// key loop, and reads O from the forward's output, which the model keeps
// for the output projection's backward (no copy of it here).
//
// Backward: one block per (batch·head, 64-key tile) keeps dK and dV of its
// keys in registers over all query tiles; dQ gets each key tile's part by
// f32 atomics into a zeroed [batch·seq, hidden] buffer, which one last pass
// writes into dqkv's q columns (the FlashAttention-2 split, which needs 5
// products per tile pair instead of the 7 of a separate dQ pass).

#define FA_TILE 64

// *p += a, *(p+1) += b with nothing returned. Hopper has a two-wide f32
// reduction (one instruction and one L2 transaction where there were two);
// p is 8-byte aligned (an even column of an f32 buffer).
__device__ __forceinline__ void red_add2(float* p, float a, float b) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" : : "l"(p), "f"(a), "f"(b) : "memory");
#else
    atomicAdd(p, a);
    atomicAdd(p + 1, b);
#endif
}

// acc[nd] += X_w (16×T, C fragments) · M[0..T, col0..col0+NC), M in shared
// with row stride D+PAD: times_rows for a band of NC columns, so that a
// 128-wide head can take its dQ in two register-sized halves.
template <int T, int D, int NC>
__device__ __forceinline__ void times_rows_band(float (*acc)[4], float (*x)[4], const bf16_t* m, int col0) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        u32 a[4];
        c_to_a(a, x, kk);
#pragma unroll
        for (int nd = 0; nd < NC / 8; nd += 2) {
            u32 b[4];
            ldsm4_t(b, m + (kk * 16 + (tile & 1) * 8 + row) * LD + col0 + (nd + (tile >> 1)) * 8);
            mma_bf16(acc[nd], a, b[0], b[1]);
            mma_bf16(acc[nd + 1], a, b[2], b[3]);
        }
    }
}

// The forward, with M 16-row m-tiles a warp (64·M query rows a block of four
// warps): one block per (batch·head, query tile) runs over the key tiles up
// to its last row (causal) with an online softmax, the next K/V tile copied
// by cp.async while this one is used. With M = 2 each K or V fragment that
// ldmatrix loads feeds two products instead of one (half the shared-memory
// loads per FLOP, two independent mma chains) at twice the accumulators.
// M = 2 runs where it is built (head width 64) and the sequence holds whole
// pairs of tiles: 4.29 against 4.80 ms of forward a gpt-small step on an H100
// (bench/RESULTS.md); M = 1 everywhere else, or with CRAM_FLASH_FORWARD=m1.

// scores() for M m-tiles at rows r0, r0+16, ...: s[m][nt] as there.
template <int T, int D, int M>
__device__ void scores_m(float (*s)[T / 8][4], const bf16_t* sq, const bf16_t* sk, int r0) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
    u32 a[M][D / 16][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ldsm4(a[m][kk], sq + (r0 + 16 * m + (tile & 1) * 8 + row) * LD + kk * 16 + (tile >> 1) * 8);
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
#pragma unroll
        for (int m = 0; m < M; m++) s[m][nt][0] = s[m][nt][1] = s[m][nt][2] = s[m][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
            u32 b[4];
            ldsm4(b, sk + (nt * 8 + row) * LD + kk * 16 + tile * 8);
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_bf16(s[m][nt], a[m][kk], b[0], b[1]);
                mma_bf16(s[m][nt], a[m][kk + 1], b[2], b[3]);
            }
        }
    }
}

// times_rows() for M m-tiles: acc[m] += X[m] (16×T) · V (T×D in shared).
template <int T, int D, int M>
__device__ void times_rows_m(float (*acc)[D / 8][4], float (*x)[T / 8][4], const bf16_t* v) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        u32 a[M][4];
#pragma unroll
        for (int m = 0; m < M; m++) c_to_a(a[m], x[m], kk);
#pragma unroll
        for (int nd = 0; nd < D / 8; nd += 2) {
            u32 b[4];
            ldsm4_t(b, v + (kk * 16 + (tile & 1) * 8 + row) * LD + (nd + (tile >> 1)) * 8);
#pragma unroll
            for (int m = 0; m < M; m++) {
                mma_bf16(acc[m][nd], a[m], b[0], b[1]);
                mma_bf16(acc[m][nd + 1], a[m], b[2], b[3]);
            }
        }
    }
}

// One key tile's step of the online softmax for a warp's 16 rows (scores
// s in C fragments, rows g and g + 8 of the lane): the running maxima m and
// sums l take the tile, s becomes 2^(s·sl2 − m·sl2) = exp(scale·(s − m))
// (sl2 = scale·log2 e, one fma a score) and the output o is rescaled to the
// new maxima. Shared by the mma.sync and the wgmma forward.
template <int T, int D>
__device__ __forceinline__ void online_softmax(float (*s)[4], float (*o)[4], float& m_lo, float& m_hi, float& l_lo,
                                               float& l_hi, float sl2) {
    float new_lo = m_lo, new_hi = m_hi;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        new_lo = fmaxf(new_lo, fmaxf(s[nt][0], s[nt][1]));
        new_hi = fmaxf(new_hi, fmaxf(s[nt][2], s[nt][3]));
    }
    new_lo = quad_max(new_lo);
    new_hi = quad_max(new_hi);
    float keep_lo = ex2((m_lo - new_lo) * sl2), keep_hi = ex2((m_hi - new_hi) * sl2);
    m_lo = new_lo;
    m_hi = new_hi;
    const float off_lo = new_lo * sl2, off_hi = new_hi * sl2;
    l_lo *= keep_lo;
    l_hi *= keep_hi;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        s[nt][0] = ex2(fmaf(s[nt][0], sl2, -off_lo));
        s[nt][1] = ex2(fmaf(s[nt][1], sl2, -off_lo));
        s[nt][2] = ex2(fmaf(s[nt][2], sl2, -off_hi));
        s[nt][3] = ex2(fmaf(s[nt][3], sl2, -off_hi));
        l_lo += s[nt][0] + s[nt][1];
        l_hi += s[nt][2] + s[nt][3];
    }
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        o[nd][0] *= keep_lo;
        o[nd][1] *= keep_lo;
        o[nd][2] *= keep_hi;
        o[nd][3] *= keep_hi;
    }
}

// The forward's end for a warp's 16 rows: o divided by the rows' sums, each
// row's log-sum-exp (row g's at lse[at], row g + 8's at lse[at + 8], written
// by the quad's first lane) and o stored at rows row_lo and row_lo + 8.
template <int D>
__device__ __forceinline__ void finish_rows(float (*o)[4], float m_lo, float m_hi, float l_lo, float l_hi, float scale,
                                            float* lse, u64 at, void* out, int out_bf, u64 row_lo, u64 stride,
                                            u64 col0) {
    float sum_lo = quad_sum(l_lo), sum_hi = quad_sum(l_hi);
    float inv_lo = 1.0f / sum_lo, inv_hi = 1.0f / sum_hi;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        o[nd][0] *= inv_lo;
        o[nd][1] *= inv_lo;
        o[nd][2] *= inv_hi;
        o[nd][3] *= inv_hi;
    }
    if ((threadIdx.x & 3) == 0) {
        lse[at] = m_lo * scale + logf(sum_lo);
        lse[at + 8] = m_hi * scale + logf(sum_hi);
    }
    store_rows<D>(out, out_bf, o, row_lo, stride, col0);
}

template <int D, int M>
__device__ void flash_forward_m_impl(void* out, int out_bf, float* lse, const bf16_t* qkv, int seq,
                                     int heads, int causal, float scale) {
    extern __shared__ __align__(16) bf16_t smem[];
    const int LD = D + ATT_PAD, TILE_ELEMS = FA_TILE * LD, QROWS = M * FA_TILE;
    // Q (M tiles of rows), then two (K, V) buffers of FA_TILE keys.
    bf16_t* sq = smem;
    bf16_t* skv = sq + M * TILE_ELEMS;
    int qtiles = seq / QROWS;
    u64 bh = blockIdx.x / qtiles;
    int qt = qtiles - 1 - (int)(blockIdx.x % qtiles);
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = bh / heads, h = bh % heads;
    const bf16_t* base = qkv + b * seq * stride + h * D;
    const u64 tile_rows = (u64)FA_TILE * stride;
    load_head_async<QROWS, D, 128>(sq, base + (u64)qt * QROWS * stride, stride);
    load_head_async<FA_TILE, D, 128>(skv, base + hidden, stride);
    load_head_async<FA_TILE, D, 128>(skv + TILE_ELEMS, base + 2 * hidden, stride);
    cp_async_commit();
    int g = (threadIdx.x & 31) >> 2, r0 = (threadIdx.x >> 5) * 16 * M;
    float o[M][D / 8][4];
    float m_lo[M], m_hi[M], l_lo[M], l_hi[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        zero_rows<D>(o[m]);
        m_lo[m] = m_hi[m] = NEG_INF;
        l_lo[m] = l_hi[m] = 0.0f;
    }
    const float sl2 = scale * LOG2E;
    // Key tiles up to the block's last query row (causal).
    int last = causal ? M * qt + M - 1 : seq / FA_TILE - 1;
    for (int kt = 0; kt <= last; kt++) {
        bf16_t* sk = skv + (kt & 1) * 2 * TILE_ELEMS;
        bf16_t* sv = sk + TILE_ELEMS;
        if (kt < last) {
            bf16_t* nk = skv + ((kt + 1) & 1) * 2 * TILE_ELEMS;
            load_head_async<FA_TILE, D, 128>(nk, base + hidden + (u64)(kt + 1) * tile_rows, stride);
            load_head_async<FA_TILE, D, 128>(nk + TILE_ELEMS, base + 2 * hidden + (u64)(kt + 1) * tile_rows, stride);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float s[M][FA_TILE / 8][4];
        scores_m<FA_TILE, D, M>(s, sq, sk, r0);
#pragma unroll
        for (int m = 0; m < M; m++) {
            // Keys after a row are masked where the tile reaches past the
            // block's first row; an m-tile wholly before this key tile gets
            // only −inf here, which leaves its (finite, from key tile 0)
            // running maximum and its sums as they were.
            if (causal && kt >= M * qt) mask_after_diagonal<FA_TILE>(s[m], qt * QROWS + r0 + 16 * m - kt * FA_TILE);
            online_softmax<FA_TILE, D>(s[m], o[m], m_lo[m], m_hi[m], l_lo[m], l_hi[m], sl2);
        }
        times_rows_m<FA_TILE, D, M>(o, s, sv);
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        int q_lo = qt * QROWS + r0 + 16 * m + g;
        finish_rows<D>(o[m], m_lo[m], m_hi[m], l_lo[m], l_hi[m], scale, lse, bh * seq + q_lo, out, out_bf,
                       b * seq + q_lo, hidden, h * D);
    }
}

extern "C" __global__ void __launch_bounds__(128) attention_flash_forward_64_m2(
    void* out, int out_bf, float* lse, const bf16_t* qkv, int seq, int heads, int causal,
    float scale) {
    flash_forward_m_impl<64, 2>(out, out_bf, lse, qkv, seq, heads, causal, scale);
}

// delta[(b·heads + h)·seq + t] = Σ_d dO·O over head h's columns of row b·seq + t
// (O and dO bf16 or f32), and dQ's f32 scratch zeroed for the key-tile kernel's reductions (the same
// rows × hidden layout as O, so one pass does both). Each thread takes eight
// adjacent columns and d/8 neighbouring lanes one (row, head), their parts
// summed by shuffles: every load and store of a warp is contiguous (one
// thread per (row, head) read 32 rows' worth of scattered 16-byte pieces).
// Divisions only where the group's first lane writes Δ.
extern "C" __global__ void flash_backward_delta(float* delta, float* dq, const void* dout, int dout_bf,
                                                const void* o, int o_bf, u64 chunks, u64 hidden, int seq, int d) {
    const int lanes = d / 8;  // 4, 8 or 16: a power of two that divides 32
    const u64 stride = (u64)gridDim.x * blockDim.x;
    // Whole warps go round the loop together, so that the shuffles see every lane.
    const u64 rounded = (chunks + 31) & ~(u64)31;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < rounded; i += stride) {
        const bool on = i < chunks;
        const u64 at = 8 * i;
        float acc = 0.0f;
        if (on) {
            float ov[8], dv[8];
            ldv<4>(ov, o, o_bf, at);
            ldv<4>(ov + 4, o, o_bf, at + 4);
            ldv<4>(dv, dout, dout_bf, at);
            ldv<4>(dv + 4, dout, dout_bf, at + 4);
#pragma unroll
            for (int e = 0; e < 8; e++) acc += ov[e] * dv[e];
            const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            *(float4*)(dq + at) = zero;
            *(float4*)(dq + at + 4) = zero;
        }
        for (int m = lanes / 2; m > 0; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
        if (on && (threadIdx.x & (lanes - 1)) == 0) {
            u64 row = at / hidden, h = (at % hidden) / d, heads = hidden / d;
            u64 b = row / seq, t = row % seq;
            delta[(b * heads + h) * seq + t] = acc;
        }
    }
}

// Rotary positions' inverse rotation ("rotate half": column i pairs with
// i + D/2 at the angle of rotary_table, rope[t·D/2 + i]) of a warp's 16 rows
// in C fragments, rows t and t + 8 of the sequence: column nd·8 + 2c + (e&1)
// is in fragment nd, its partner in fragment nd + D/16 of the same thread.
template <int D>
__device__ __forceinline__ void rotate_back_rows(float (*x)[4], const float2* rope, int t) {
    const int c = threadIdx.x & 3, H = D / 2;
#pragma unroll
    for (int nd = 0; nd < D / 16; nd++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float2 a = rope[(t + (e >> 1) * 8) * H + nd * 8 + 2 * c + (e & 1)];
            float lo = x[nd][e], hi = x[nd + D / 16][e];
            x[nd][e] = lo * a.x + hi * a.y;
            x[nd + D / 16][e] = hi * a.x - lo * a.y;
        }
    }
}

// acc[nd] += A_w · M[0..K, col0..col0+NC): A the warp's 16 rows r0.. of a
// row-major 16×K matrix in shared (row stride LA), M K×D in shared (row
// stride D+PAD). The KB = 2 backward's dQ: dS of 128 keys from shared.
template <int K, int D, int NC, int LA>
__device__ __forceinline__ void shared_times_band(float (*acc)[4], const bf16_t* x, int r0, const bf16_t* m, int col0) {
    int lane = threadIdx.x & 31, tile = lane >> 3, row = lane & 7;
    const int LD = D + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        u32 a[4];
        ldsm4(a, x + (r0 + (tile & 1) * 8 + row) * LA + kk * 16 + (tile >> 1) * 8);
#pragma unroll
        for (int nd = 0; nd < NC / 8; nd += 2) {
            u32 b[4];
            ldsm4_t(b, m + (kk * 16 + (tile & 1) * 8 + row) * LD + col0 + (nd + (tile >> 1)) * 8);
            mma_bf16(acc[nd], a, b[0], b[1]);
            mma_bf16(acc[nd + 1], a, b[2], b[3]);
        }
    }
}

// The backward with KB key tiles a block (64·KB keys, 4·KB warps). Warp w
// forms P and dS for query rows 16·(w mod 4) of each query tile against key
// tile w / 4 of the block, and keeps dK and dV of the block's keys 16·w.. in
// registers. dQ reaches global memory once per block and query row: with
// KB = 1 each warp adds its rows' part from its own dS registers; with
// KB = 2, after the block's dS is in shared, warp w adds rows 16·(w mod 4),
// columns (w / 4)·D/2.. over all 128 keys, so the f32 reductions into dQ are
// half those of KB = 1 for the same work.
template <int D, int KB>
__device__ void flash_backward_impl(void* dqkv, int dqkv_bf, float* dq, const void* dout, int dout_bf,
                                    const bf16_t* qkv, const float* lse, const float* delta, const float2* rope,
                                    int seq, int heads, int causal, float scale) {
    extern __shared__ __align__(16) bf16_t smem[];
    constexpr int KEYS = KB * FA_TILE;
    const int LD = D + ATT_PAD, TILE_ELEMS = FA_TILE * LD;
    constexpr int LT = KEYS + ATT_PAD;
    // K, V (KEYS rows each); two (Q, dO) buffers, the next query tile copied
    // while this one is used; then P and dS of the current tile (64 query rows × KEYS).
    bf16_t* sk = smem;
    bf16_t* sv = sk + KB * TILE_ELEMS;
    bf16_t* sqd = sv + KB * TILE_ELEMS;
    bf16_t* sp = sqd + 4 * TILE_ELEMS;
    bf16_t* sds = sp + FA_TILE * LT;
    int tiles = seq / FA_TILE, blocks = tiles / KB;
    u64 bh = blockIdx.x / blocks;
    // Causal key blocks near the start meet the most queries: they come first.
    int kb = (int)(blockIdx.x % blocks);
    const int warp = threadIdx.x >> 5, kh = KB == 1 ? 0 : warp / 4, kt = kb * KB + kh;
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = bh / heads, h = bh % heads;
    const bf16_t* base = qkv + b * seq * stride + h * D;
    const u64 tile_rows = (u64)FA_TILE * stride;
    int first = causal ? kb * KB : 0;
    load_head_async<KEYS, D, 128 * KB>(sk, base + hidden + (u64)kb * KB * tile_rows, stride);
    load_head_async<KEYS, D, 128 * KB>(sv, base + 2 * hidden + (u64)kb * KB * tile_rows, stride);
    load_head_async<FA_TILE, D, 128 * KB>(sqd, base + (u64)first * tile_rows, stride);
    load_grad_tile<FA_TILE, D, 128 * KB>(sqd + TILE_ELEMS, dout, dout_bf, (b * seq + (u64)first * FA_TILE) * hidden + h * D,
                               hidden);
    cp_async_commit();
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3, r0 = (KB == 1 ? warp : warp % 4) * 16, key0 = 16 * warp;
    const bf16_t* skh = sk + kh * TILE_ELEMS;
    const bf16_t* svh = sv + kh * TILE_ELEMS;
    const float sl2 = scale * LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
    zero_rows<D>(dk);
    zero_rows<D>(dv);
    for (int qt = first; qt < tiles; qt++) {
        bf16_t* sq = sqd + ((qt - first) & 1) * 2 * TILE_ELEMS;
        bf16_t* sdo = sq + TILE_ELEMS;
        __syncthreads();  // every warp is done with the other buffer, P and dS (iteration qt-1)
        if (qt + 1 < tiles) {
            bf16_t* nq = sqd + ((qt + 1 - first) & 1) * 2 * TILE_ELEMS;
            load_head_async<FA_TILE, D, 128 * KB>(nq, base + (u64)(qt + 1) * tile_rows, stride);
            load_grad_tile<FA_TILE, D, 128 * KB>(nq + TILE_ELEMS, dout, dout_bf,
                                       (b * seq + (u64)(qt + 1) * FA_TILE) * hidden + h * D, hidden);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // query tile qt (and K, V) are in shared for every warp
        int q_lo = qt * FA_TILE + r0 + g;
        u64 row_lo = b * seq + q_lo;
        if (KB > 1 && causal && qt < kt) {
            // KB = 2, the block's first query tile: the warp's keys all come
            // after its queries, so its P and dS are zero (a warp-wide branch).
#pragma unroll
            for (int nt = 0; nt < FA_TILE / 8; nt++) {
                int j = kh * FA_TILE + nt * 8 + 2 * c;
                *(u32*)(sp + (r0 + g) * LT + j) = 0u;
                *(u32*)(sp + (r0 + g + 8) * LT + j) = 0u;
                *(u32*)(sds + (r0 + g) * LT + j) = 0u;
                *(u32*)(sds + (r0 + g + 8) * LT + j) = 0u;
            }
        } else {
            float p[FA_TILE / 8][4];
            scores<FA_TILE, D>(p, sq, skh, r0);
            if (causal && qt == kt) mask_after_diagonal<FA_TILE>(p, r0);
            float off_lo = lse[bh * seq + q_lo] * LOG2E, off_hi = lse[bh * seq + q_lo + 8] * LOG2E;
            float d_lo = delta[bh * seq + q_lo], d_hi = delta[bh * seq + q_lo + 8];
#pragma unroll
            for (int nt = 0; nt < FA_TILE / 8; nt++) {
                p[nt][0] = ex2(fmaf(p[nt][0], sl2, -off_lo));
                p[nt][1] = ex2(fmaf(p[nt][1], sl2, -off_lo));
                p[nt][2] = ex2(fmaf(p[nt][2], sl2, -off_hi));
                p[nt][3] = ex2(fmaf(p[nt][3], sl2, -off_hi));
            }
            // dP = dO·Vᵀ, then dS = P ∘ (dP − Δ) · scale.
            float ds[FA_TILE / 8][4];
            scores<FA_TILE, D>(ds, sdo, svh, r0);
#pragma unroll
            for (int nt = 0; nt < FA_TILE / 8; nt++) {
                ds[nt][0] = p[nt][0] * (ds[nt][0] - d_lo) * scale;
                ds[nt][1] = p[nt][1] * (ds[nt][1] - d_lo) * scale;
                ds[nt][2] = p[nt][2] * (ds[nt][2] - d_hi) * scale;
                ds[nt][3] = p[nt][3] * (ds[nt][3] - d_hi) * scale;
                int j = kh * FA_TILE + nt * 8 + 2 * c;
                *(u32*)(sp + (r0 + g) * LT + j) = pack2(p[nt][0], p[nt][1]);
                *(u32*)(sp + (r0 + g + 8) * LT + j) = pack2(p[nt][2], p[nt][3]);
                *(u32*)(sds + (r0 + g) * LT + j) = pack2(ds[nt][0], ds[nt][1]);
                *(u32*)(sds + (r0 + g + 8) * LT + j) = pack2(ds[nt][2], ds[nt][3]);
            }
            if constexpr (KB == 1) {
                // This key tile's part of dQ = dS·K for the warp's 16 query rows.
                constexpr int BAND = D < 64 ? D : 64;
#pragma unroll
                for (int col0 = 0; col0 < D; col0 += BAND) {
                    float acc[BAND / 8][4];
                    zero_rows<BAND>(acc);
                    times_rows_band<FA_TILE, D, BAND>(acc, ds, sk, col0);
#pragma unroll
                    for (int nd = 0; nd < BAND / 8; nd++) {
                        u64 col = h * D + col0 + nd * 8 + 2 * c;
                        red_add2(dq + row_lo * hidden + col, acc[nd][0], acc[nd][1]);
                        red_add2(dq + (row_lo + 8) * hidden + col, acc[nd][2], acc[nd][3]);
                    }
                }
            }
        }
        __syncthreads();  // P and dS of all 64 query rows and KEYS keys are in shared
        if constexpr (KB == 2) {
            // The block's part of dQ: rows r0.., columns kh·D/2.. over all its keys.
            constexpr int NC = D / 2;
            float acc[NC / 8][4];
            zero_rows<NC>(acc);
            shared_times_band<KEYS, D, NC, LT>(acc, sds, r0, sk, kh * NC);
#pragma unroll
            for (int nd = 0; nd < NC / 8; nd++) {
                u64 col = h * D + kh * NC + nd * 8 + 2 * c;
                red_add2(dq + row_lo * hidden + col, acc[nd][0], acc[nd][1]);
                red_add2(dq + (row_lo + 8) * hidden + col, acc[nd][2], acc[nd][3]);
            }
        }
        // dK += dSᵀ·Q and dV += Pᵀ·dO for the warp's 16 keys.
        transposed_times<FA_TILE, D, LT>(dk, sds, sq, key0);
        transposed_times<FA_TILE, D, LT>(dv, sp, sdo, key0);
    }
    int t = kb * KEYS + key0 + g;
    if (rope) rotate_back_rows<D>(dk, rope, t);
    u64 key_lo = b * seq + t;
    store_rows<D>(dqkv, dqkv_bf, dk, key_lo, stride, hidden + h * D);
    store_rows<D>(dqkv, dqkv_bf, dv, key_lo, stride, 2 * hidden + h * D);
}

// dqkv[row, 0..hidden) = dq[row, ·]: the accumulated dQ into dqkv's q columns.
extern "C" __global__ void flash_backward_store_dq(void* dqkv, int dqkv_bf, const float* dq, u64 rows, u64 hidden) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < rows * hidden; i += (u64)gridDim.x * blockDim.x) {
        u64 row = i / hidden, col = i % hidden;
        st(dqkv, dqkv_bf, row * 3 * hidden + col, dq[i]);
    }
}

// The same, four columns per thread with 32-bit indices (hidden a multiple
// of 4, rows·hidden/4 below 2^32: the host checks both); the scalar kernel's
// two 64-bit divisions per value cost more than its memory traffic.
extern "C" __global__ void flash_backward_store_dq4(void* dqkv, int dqkv_bf, const float* dq, u32 rows, u32 hidden) {
    u32 per_row = hidden / 4;
    for (u32 j = blockIdx.x * blockDim.x + threadIdx.x; j < rows * per_row; j += gridDim.x * blockDim.x) {
        u32 row = j / per_row, col = (j - row * per_row) * 4;
        float v[4];
        ldv<4>(v, dq, 0, (u64)row * hidden + col);
        stv<4>(dqkv, dqkv_bf, (u64)row * 3 * hidden + col, v);
    }
}

// flash_backward_store_dq4 with rotary positions: dQ's four pairs (i, i +
// head_dim/2) a thread get the inverse rotation on their way into dqkv (the
// rotary kernel's backward, without its own pass). half a multiple of 4,
// the table 16-byte aligned and n4 = rows·hidden/8 in 32 bits (the host
// checks them).
extern "C" __global__ void flash_backward_store_dq_rotary4(void* dqkv, int dqkv_bf, const float* dq, const float2* table,
                                                           u32 seq, u32 heads, u32 head_dim, u32 n4) {
    u32 half = head_dim / 2, groups = half / 4, hidden = heads * head_dim;
    for (u32 j = blockIdx.x * blockDim.x + threadIdx.x; j < n4; j += gridDim.x * blockDim.x) {
        u32 i = (j % groups) * 4, rest = j / groups;
        u32 h = rest % heads, r = rest / heads, t = r % seq;
        u64 from = (u64)r * hidden + h * head_dim + i, to = (u64)r * 3 * hidden + h * head_dim + i;
        float a[4], b[4], x[4], y[4];
        ldv<4>(a, dq, 0, from);
        ldv<4>(b, dq, 0, from + half);
        const float4* angles = (const float4*)(table + (u64)t * half + i);
        float4 p01 = angles[0], p23 = angles[1];
        float cs[4] = {p01.x, p01.z, p23.x, p23.z};
        float sn[4] = {p01.y, p01.w, p23.y, p23.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            x[k] = a[k] * cs[k] + b[k] * sn[k];
            y[k] = b[k] * cs[k] - a[k] * sn[k];
        }
        stv<4>(dqkv, dqkv_bf, to, x);
        stv<4>(dqkv, dqkv_bf, to + half, y);
    }
}

#define FLASH_ATTENTION(D, B)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attention_flash_forward_##D(                                \
        void* out, int out_bf, float* lse, const bf16_t* qkv, int seq, int heads, int causal,    \
        float scale) {                                                                                            \
        flash_forward_m_impl<D, 1>(out, out_bf, lse, qkv, seq, heads, causal, scale);                         \
    }                                                                                                             \
    extern "C" __global__ void B attention_flash_backward_##D(                                                    \
        void* dqkv, int dqkv_bf, float* dq, const void* dout, int dout_bf, const bf16_t* qkv, const float* lse,   \
        const float* delta, const float2* rope, int seq, int heads, int causal, float scale) {                    \
        flash_backward_impl<D, 1>(dqkv, dqkv_bf, dq, dout, dout_bf, qkv, lse, delta, rope, seq, heads, causal,    \
                                  scale);                                                                         \
    }

// B: the backward's launch bounds. Head width 32 asks ptxas to leave room for
// three blocks an SM: left free it took 232 registers (room for two), where
// the same loop took 128 before the KB template.
FLASH_ATTENTION(32, __launch_bounds__(128, 3))
FLASH_ATTENTION(64, __launch_bounds__(128, 3))
FLASH_ATTENTION(128, __launch_bounds__(128))

// Head width 64 with two key tiles a block (sequences of whole 128-key blocks).
extern "C" __global__ void __launch_bounds__(256) attention_flash_backward_64_k2(
    void* dqkv, int dqkv_bf, float* dq, const void* dout, int dout_bf, const bf16_t* qkv, const float* lse,
    const float* delta, const float2* rope, int seq, int heads, int causal, float scale) {
    flash_backward_impl<64, 2>(dqkv, dqkv_bf, dq, dout, dout_bf, qkv, lse, delta, rope, seq, heads, causal, scale);
}
