// The flash forward on Hopper's warpgroup tensor-core instructions (wgmma,
// sm_90a): head width 64, 128 query rows a block of two warpgroups (64 rows
// each), key tiles of 64 with an online softmax, as the mma.sync forward in
// flash_attention.cu (which comes before this file) but with each product a
// warpgroup's asynchronous 64×64×16 wgmma reading its operands from shared
// memory: S = Q·Kᵀ takes Q and K there, O += P·V takes P from the score
// registers (the accumulator layout is mma.sync's, so c_to_a converts it)
// and V there, transposed by the instruction. One wgmma does the work of 32
// mma.sync of a warpgroup, with no ldmatrix: the issue slots go to the
// softmax. CRAM_FLASH_FORWARD=wgmma: 2.74 against 3.81 ms a gpt-small step on an H100.
//
// Shared memory holds every tile in wgmma's 128-byte swizzled layout: a
// 64-wide bf16 row is 128 bytes, its eight 16-byte chunks stored at chunk
// c ^ (row mod 8), each eight-row group 1024 bytes and 1024-aligned, which
// is what the descriptors' swizzle mode 1 reads without bank conflicts.
// Built only where the architecture has wgmma (sm_90a); elsewhere the
// kernel exists and traps, and the host never launches it.

#define WG_ROW_BYTES 128
#define WG_TILE_BYTES (FA_TILE * WG_ROW_BYTES)
// A staged f32 dQ row of the backward: 64 values and 32 bytes of padding.
#define WG_DQ_ROW_BYTES 288

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// A 16-byte cp.async to a shared-memory address.
__device__ __forceinline__ void cp_async16_to(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" : : "r"(dst), "l"(src));
}

// A bulk reduction (the TMA unit): `bytes` f32 at shared address `src` added
// element by element into global memory at `dst` (both 16-byte aligned),
// one request where per-thread reductions send a sector at a time. Each
// issuing thread commits its own groups and waits for them.
__device__ __forceinline__ void bulk_add_f32(float* dst, u32 src, u32 bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
                 :
                 : "l"(dst), "r"(src), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Until this thread's bulk reductions have read their shared source.
__device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
// Until this thread's bulk reductions are done.
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Rows [0, T) of a 64-wide head slice (row stride `stride` elements) into a
// swizzled tile at shared address `dst` by cp.async, THREADS threads (the
// forward's block of two warpgroups, or the backward's one).
template <int T, int THREADS>
__device__ __forceinline__ void load_tile_sw128(u32 dst, const bf16_t* src, u64 stride) {
#pragma unroll
    for (int j = 0; j < T * 8 / THREADS; j++) {
        int i = j * THREADS + threadIdx.x, row = i >> 3, chunk = i & 7;
        cp_async16_to(dst + row * WG_ROW_BYTES + ((chunk ^ (row & 7)) << 4), src + (u64)row * stride + chunk * 8);
    }
}

// A query tile's 64 log-sum-exps and 64 Δs (f32, consecutive from `q`) into
// 512 bytes at shared address `dst` by cp.async, one 16-byte piece for each
// of the first 32 threads: the backward reads them there in its softmax
// instead of keeping the 32 values a thread needs in registers across the
// products (which held it at two blocks an SM).
__device__ __forceinline__ void load_row_stats(u32 dst, const float* lse, const float* delta, u64 q) {
    const int i = threadIdx.x;
    if (i < 32) cp_async16_to(dst + 16 * i, (i < 16 ? lse : delta) + q + 4 * (i & 15));
}

// A wgmma shared-memory descriptor of a 128-byte-swizzled operand at shared
// address `addr`: eight-row groups 1024 bytes apart. The same 1024 is given
// as both the leading and the stride byte offset: for the K-major Q and K
// (64 wide, one swizzle atom along K) the leading offset is unused, and for
// V read transposed (N = 64, one atom along N) only the step between
// eight-row groups along K matters, whichever field the layout takes it from.
__device__ __forceinline__ u64 wg_desc(u32 addr) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(1024 >> 4) << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// Keeps the compiler from moving accumulator reads or writes across the
// asynchronous products (CUTLASS's warpgroup_fence_operand).
__device__ __forceinline__ void wg_fence_acc(float (*acc)[4]) {
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(acc[i][e])::"memory");
}

#define WG_ACC32(d)                                                                                          \
    "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),     \
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), \
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), \
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])

#define WG_D32                                                                                                   \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"

// d (+)= A·B, A and B from shared memory; accumulate 0 overwrites d. TA = 0
// and TB = 0 read both K-major (S = Q·Kᵀ: Q's and K's rows are 64 contiguous
// values of d); 1 reads that operand transposed, its M or N index
// contiguous (the backward's dQ = dS·K: dS stored as dSᵀ [key][query], K as
// 16 keys × 64 contiguous d).
template <int TA = 0, int TB = 0>
__device__ __forceinline__ void wgmma_ss(float (*d)[4], u64 a, u64 b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32 ", %32, %33, p, 1, 1, %35, %36;\n}\n"
        : WG_ACC32(d)
        : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));
}

// d += A·B, A (16 rows a warp × 16) from registers in mma.sync's A layout,
// B from shared memory read transposed (V: 16 keys × 64 contiguous d).
__device__ __forceinline__ void wgmma_rs_t(float (*d)[4], const u32* a, u64 b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : WG_ACC32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

#endif

extern "C" __global__ void __launch_bounds__(256) attention_flash_forward_64_wgmma(
    void* out, int out_bf, float* lse, const bf16_t* qkv, int seq, int heads, int causal, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int D = 64, QROWS = 2 * FA_TILE;
    extern __shared__ __align__(16) unsigned char wg_smem[];
    // Q (two 64-row halves), then two (K, V) buffers, from a 1024-aligned start.
    const u32 sq = (smem_u32(wg_smem) + 1023) & ~1023u;
    const u32 skv = sq + 2 * WG_TILE_BYTES;
    int qtiles = seq / QROWS;
    u64 bh = blockIdx.x / qtiles;
    int qt = qtiles - 1 - (int)(blockIdx.x % qtiles);
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = bh / heads, h = bh % heads;
    const bf16_t* base = qkv + b * seq * stride + h * D;
    const u64 tile_rows = (u64)FA_TILE * stride;
    load_tile_sw128<QROWS, 256>(sq, base + (u64)qt * QROWS * stride, stride);
    load_tile_sw128<FA_TILE, 256>(skv, base + hidden, stride);
    load_tile_sw128<FA_TILE, 256>(skv + WG_TILE_BYTES, base + 2 * hidden, stride);
    cp_async_commit();
    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3;
    const int g = (threadIdx.x & 31) >> 2;
    // This warpgroup's 64 query rows are tile 2·qt + wg; the warp's 16 of them start at r0.
    const int my_tile = 2 * qt + wg, r0 = my_tile * FA_TILE + 16 * warp;
    const u32 my_q = sq + wg * WG_TILE_BYTES;
    float o[D / 8][4];
    zero_rows<D>(o);
    float m_lo = NEG_INF, m_hi = NEG_INF, l_lo = 0.0f, l_hi = 0.0f;
    const float sl2 = scale * LOG2E;
    int last = causal ? 2 * qt + 1 : seq / FA_TILE - 1;
    for (int kt = 0; kt <= last; kt++) {
        const u32 sk = skv + (kt & 1) * 2 * WG_TILE_BYTES, sv = sk + WG_TILE_BYTES;
        if (kt < last) {
            const u32 nk = skv + ((kt + 1) & 1) * 2 * WG_TILE_BYTES;
            load_tile_sw128<FA_TILE, 256>(nk, base + hidden + (u64)(kt + 1) * tile_rows, stride);
            load_tile_sw128<FA_TILE, 256>(nk + WG_TILE_BYTES, base + 2 * hidden + (u64)(kt + 1) * tile_rows, stride);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        // The tiles were written through the generic proxy; wgmma reads
        // through the async proxy.
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        // Key tiles after the warpgroup's rows (causal: the block's second
        // diagonal tile, for its first warpgroup) add nothing.
        if (!causal || kt <= my_tile) {
            float s[FA_TILE / 8][4];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wgmma_ss(s, wg_desc(my_q + kk * 32), wg_desc(sk + kk * 32), kk > 0);
            wg_commit();
            wg_wait0();
            wg_fence_acc(s);
            if (causal && kt == my_tile) mask_after_diagonal<FA_TILE>(s, 16 * warp);
            online_softmax<FA_TILE, D>(s, o, m_lo, m_hi, l_lo, l_hi, sl2);
            u32 p[FA_TILE / 16][4];
#pragma unroll
            for (int kk = 0; kk < FA_TILE / 16; kk++) c_to_a(p[kk], s, kk);
            wg_fence_acc(o);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < FA_TILE / 16; kk++) wgmma_rs_t(o, p[kk], wg_desc(sv + kk * 16 * WG_ROW_BYTES));
            wg_commit();
            wg_wait0();
            wg_fence_acc(o);
        }
        __syncthreads();  // every warpgroup is done with this buffer before it is refilled
    }
    int q_lo = r0 + g;
    finish_rows<D>(o, m_lo, m_hi, l_lo, l_hi, scale, lse, bh * seq + q_lo, out, out_bf, b * seq + q_lo, hidden, h * D);
#else
    __trap();
#endif
}

// The flash backward on wgmma (CRAM_FLASH_BACKWARD=wgmma, head width 64,
// Hopper; bf16 output gradient): one warpgroup a block keeps dK and dV of
// 64 keys in registers over the query tiles, the FlashAttention-2 split of
// flash_attention.cu, with every product a 64×64×16 wgmma. It works on the
// transposed scores so that the key rows are the warpgroup's M: Sᵀ = K·Qᵀ
// and dPᵀ = V·dOᵀ from shared memory; Pᵀ and dSᵀ stay in registers as the A
// of dV += Pᵀ·dO and dK += dSᵀ·Q (dO and Q read transposed); dSᵀ also goes
// to shared memory, from where dQ = dS·K reads it transposed, and dQ's part
// reaches the f32 scratch by bulk reductions (`bulk_dq`, the default: each
// warp stages its rows, eight at a time, in shared memory, and eight lanes
// each send one 256-byte row to the TMA unit) or by two-wide per-thread
// reductions as in the mma.sync kernel (CRAM_FLASH_DQ=red). The per-thread
// reductions send every f32 sector on its own: ncu put the kernel at 82% of
// L2 throughput and 22% of DRAM.
// Each query's log-sum-exp and Δ are a column of Sᵀ: a thread reads the 16
// of its columns, from shared memory, where each query tile's 64 of each
// arrive with its Q and dO. Tiles in shared memory are 128-byte swizzled as in the
// forward: K, V, two (Q, dO) buffers, dSᵀ; then two buffers of those 128
// floats. Bounded to 168 registers, three blocks an SM (at two the
// warpgroups' serial phases, products then softmax then dQ, left the tensor
// cores idle most of the time).
extern "C" __global__ void __launch_bounds__(128, 3) attention_flash_backward_64_wgmma(
    void* dqkv, int dqkv_bf, float* dq, const void* dout, int dout_bf, const bf16_t* qkv, const float* lse,
    const float* delta, const float2* rope, int seq, int heads, int causal, float scale, int bulk_dq) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int D = 64;
    extern __shared__ __align__(16) unsigned char wg_smem[];
    const u32 sk = (smem_u32(wg_smem) + 1023) & ~1023u, sv = sk + WG_TILE_BYTES;
    const u32 sqd = sv + WG_TILE_BYTES, sds = sqd + 4 * WG_TILE_BYTES, sstats = sds + WG_TILE_BYTES;
    // Each warp's eight staged dQ rows (bulk_dq), after the two stats buffers.
    const u32 sstage = sstats + 4 * FA_TILE * 4 + (threadIdx.x >> 5) * 8 * WG_DQ_ROW_BYTES;
    const float* stats_base = (const float*)(wg_smem + (sstats - smem_u32(wg_smem)));
    int tiles = seq / FA_TILE;
    u64 bh = blockIdx.x / tiles;
    int kt = (int)(blockIdx.x % tiles);
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = bh / heads, h = bh % heads;
    const bf16_t* base = qkv + b * seq * stride + h * D;
    const bf16_t* grad = (const bf16_t*)dout + b * seq * hidden + h * D;
    const u64 tile_rows = (u64)FA_TILE * stride, grad_rows = (u64)FA_TILE * hidden;
    int first = causal ? kt : 0;
    load_tile_sw128<FA_TILE, 128>(sk, base + hidden + (u64)kt * tile_rows, stride);
    load_tile_sw128<FA_TILE, 128>(sv, base + 2 * hidden + (u64)kt * tile_rows, stride);
    load_tile_sw128<FA_TILE, 128>(sqd, base + (u64)first * tile_rows, stride);
    load_tile_sw128<FA_TILE, 128>(sqd + WG_TILE_BYTES, grad + (u64)first * grad_rows, hidden);
    load_row_stats(sstats, lse, delta, bh * seq + (u64)first * FA_TILE);
    cp_async_commit();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const float sl2 = scale * LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
    zero_rows<D>(dk);
    zero_rows<D>(dv);
    for (int qt = first; qt < tiles; qt++) {
        const u32 sq = sqd + ((qt - first) & 1) * 2 * WG_TILE_BYTES, sdo = sq + WG_TILE_BYTES;
        const float* stats = stats_base + ((qt - first) & 1) * 2 * FA_TILE;
        __syncthreads();  // the other (Q, dO) buffer and dSᵀ are free (iteration qt-1 is done)
        if (qt + 1 < tiles) {
            const u32 nq = sqd + ((qt + 1 - first) & 1) * 2 * WG_TILE_BYTES;
            load_tile_sw128<FA_TILE, 128>(nq, base + (u64)(qt + 1) * tile_rows, stride);
            load_tile_sw128<FA_TILE, 128>(nq + WG_TILE_BYTES, grad + (u64)(qt + 1) * grad_rows, hidden);
            load_row_stats(sstats + ((qt + 1 - first) & 1) * 512, lse, delta, bh * seq + (u64)(qt + 1) * FA_TILE);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();  // query tile qt (and K, V) are in shared memory
        float s[FA_TILE / 8][4], dp[FA_TILE / 8][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) wgmma_ss(s, wg_desc(sk + kk * 32), wg_desc(sq + kk * 32), kk > 0);
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) wgmma_ss(dp, wg_desc(sv + kk * 32), wg_desc(sdo + kk * 32), kk > 0);
        wg_commit();
        wg_wait0();
        wg_fence_acc(s);
        wg_fence_acc(dp);
        // Pᵀ and dSᵀ = Pᵀ ∘ (dPᵀ − Δ) · scale; on the diagonal tile a key
        // after its query (row past column) has P = 0.
        // This thread's 16 queries are columns nt·8 + 2c and + 1: a float2 of
        // log-sum-exps and one of Δs each.
        const int key_lo = 16 * warp + g;
#pragma unroll
        for (int nt = 0; nt < FA_TILE / 8; nt++) {
            const float2 l2 = *(const float2*)(stats + nt * 8 + 2 * c);
            const float2 d2 = *(const float2*)(stats + FA_TILE + nt * 8 + 2 * c);
            const float off[2] = {l2.x * LOG2E, l2.y * LOG2E}, dl[2] = {d2.x, d2.y};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = key_lo + (e >> 1) * 8, query = nt * 8 + 2 * c + (e & 1);
                float p = ex2(fmaf(s[nt][e], sl2, -off[e & 1]));
                if (causal && qt == kt && key > query) p = 0.0f;
                s[nt][e] = p;
                dp[nt][e] = p * (dp[nt][e] - dl[e & 1]) * scale;
            }
        }
        u32 pa[FA_TILE / 16][4], da[FA_TILE / 16][4];
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; kk++) {
            c_to_a(pa[kk], s, kk);
            c_to_a(da[kk], dp, kk);
        }
        wg_fence_acc(dv);
        wg_fence_acc(dk);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; kk++) wgmma_rs_t(dv, pa[kk], wg_desc(sdo + kk * 16 * WG_ROW_BYTES));
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; kk++) wgmma_rs_t(dk, da[kk], wg_desc(sq + kk * 16 * WG_ROW_BYTES));
        wg_commit();
        // dSᵀ into shared memory ([key][query], swizzled) for dQ = dS·K.
#pragma unroll
        for (int nt = 0; nt < FA_TILE / 8; nt++) {
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int key = key_lo + half * 8;
                u32 at = sds + key * WG_ROW_BYTES + ((nt ^ (key & 7)) << 4) + 4 * c;
                u32 pair = da[nt / 2][(nt & 1) * 2 + half];  // c_to_a's order: (row g, g+8) per n-tile
                asm volatile("st.shared.b32 [%0], %1;\n" : : "r"(at), "r"(pair) : "memory");
            }
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();  // all of dSᵀ is in shared memory
        float acc[D / 8][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; kk++)
            wgmma_ss<1, 1>(acc, wg_desc(sds + kk * 16 * WG_ROW_BYTES), wg_desc(sk + kk * 16 * WG_ROW_BYTES), kk > 0);
        wg_commit();
        wg_wait0();
        wg_fence_acc(acc);
        wg_fence_acc(dv);
        wg_fence_acc(dk);
        // This key tile's part of dQ for the tile's 64 queries: the warp's 16 rows.
        u64 row_lo = b * seq + (u64)qt * FA_TILE + 16 * warp + g;
        if (bulk_dq) {
            // Rows g (half 0) and g + 8 (half 1) of the warp's 16, staged
            // 288 bytes apart so that a half-warp's eight-byte stores fall in
            // distinct banks; lane r < 8 sends staged row r.
            const u64 first_row = row_lo - g;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                if (lane < 8) bulk_wait_read();  // the staging's last rows are read
                __syncwarp();
#pragma unroll
                for (int nd = 0; nd < D / 8; nd++) {
                    u32 at = sstage + g * WG_DQ_ROW_BYTES + (nd * 8 + 2 * c) * 4;
                    asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n"
                                 :
                                 : "r"(at), "f"(acc[nd][2 * half]), "f"(acc[nd][2 * half + 1])
                                 : "memory");
                }
                asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
                __syncwarp();
                if (lane < 8)
                    bulk_add_f32(dq + (first_row + half * 8 + lane) * hidden + h * D,
                                 sstage + lane * WG_DQ_ROW_BYTES, D * 4);
            }
        } else {
#pragma unroll
            for (int nd = 0; nd < D / 8; nd++) {
                u64 col = h * D + nd * 8 + 2 * c;
                red_add2(dq + row_lo * hidden + col, acc[nd][0], acc[nd][1]);
                red_add2(dq + (row_lo + 8) * hidden + col, acc[nd][2], acc[nd][3]);
            }
        }
    }
    // The block's shared memory (the staging) must outlive the reductions.
    if (bulk_dq && lane < 8) bulk_wait();
    int t = kt * FA_TILE + 16 * warp + g;
    if (rope) rotate_back_rows<D>(dk, rope, t);
    u64 key_row = b * seq + t;
    store_rows<D>(dqkv, dqkv_bf, dk, key_row, stride, hidden + h * D);
    store_rows<D>(dqkv, dqkv_bf, dv, key_row, stride, 2 * hidden + h * D);
#else
    __trap();
#endif
}
