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

__device__ __forceinline__ u32 pack2(float lo, float hi) {
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
}

__device__ __forceinline__ u32 pack_bf(bf16_t lo, bf16_t hi) {
    return (u32)lo | ((u32)hi << 16);
}

// Two consecutive bf16 at p (4-byte aligned).
__device__ __forceinline__ u32 ld2(const bf16_t* p) { return *(const u32*)p; }

// Copies rows [0, T) of a D-wide head slice (row stride `stride` elements in
// global memory) into shared memory with row stride D + ATT_PAD.
template <int T, int D>
__device__ void load_head(bf16_t* dst, const bf16_t* src, u64 stride) {
    for (int i = threadIdx.x; i < T * D / 2; i += blockDim.x) {
        int t = i / (D / 2), d = 2 * (i % (D / 2));
        *(u32*)(dst + t * (D + ATT_PAD) + d) = ld2(src + (u64)t * stride + d);
    }
}

// Same from an f32-or-bf16 buffer (the output gradient).
template <int T, int D>
__device__ void load_head_any(bf16_t* dst, const void* src, int src_bf, u64 base, u64 stride) {
    for (int i = threadIdx.x; i < T * D; i += blockDim.x) {
        int t = i / D, d = i % D;
        dst[t * (D + ATT_PAD) + d] = f32_to_bf16(ld(src, src_bf, base + (u64)t * stride + d));
    }
}

// S = Q_w·Kᵀ for the warp's 16 rows (Q rows from shared `sq`, keys from `sk`),
// scaled and masked: s[nt][.] covers keys nt·8 .. nt·8+7.
template <int T, int D>
__device__ void scores(float (*s)[4], const bf16_t* sq, const bf16_t* sk, int r0, float scale, int causal) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int LD = D + ATT_PAD;
    u32 a[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        a[kk][0] = ld2(sq + (r0 + g) * LD + kk * 16 + 2 * c);
        a[kk][1] = ld2(sq + (r0 + g + 8) * LD + kk * 16 + 2 * c);
        a[kk][2] = ld2(sq + (r0 + g) * LD + kk * 16 + 2 * c + 8);
        a[kk][3] = ld2(sq + (r0 + g + 8) * LD + kk * 16 + 2 * c + 8);
    }
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const bf16_t* krow = sk + (nt * 8 + g) * LD + kk * 16 + 2 * c;
            mma_bf16(s[nt], a[kk], ld2(krow), ld2(krow + 8));
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int i = r0 + g + (e >= 2 ? 8 : 0), j = nt * 8 + 2 * c + (e & 1);
            s[nt][e] = (causal && j > i) ? NEG_INF : s[nt][e] * scale;
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

// acc[nd] += X_w (16×T, C fragments in x) · M (T×D in shared, row stride D+PAD).
template <int T, int D>
__device__ void times_rows(float (*acc)[4], float (*x)[4], const bf16_t* m) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int LD = D + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        u32 a[4];
        c_to_a(a, x, kk);
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            const bf16_t* col = m + (kk * 16 + 2 * c) * LD + nd * 8 + g;
            u32 b0 = pack_bf(col[0], col[LD]);
            u32 b1 = pack_bf(col[8 * LD], col[9 * LD]);
            mma_bf16(acc[nd], a, b0, b1);
        }
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
    load_head<T, D>(sq, base, stride);
    load_head<T, D>(sk, base + hidden, stride);
    load_head<T, D>(sv, base + 2 * hidden, stride);
    __syncthreads();
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3, r0 = (threadIdx.x >> 5) * 16;
    float s[T / 8][4];
    scores<T, D>(s, sq, sk, r0, scale, causal);
    float m_lo = NEG_INF, m_hi = NEG_INF;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        m_lo = fmaxf(m_lo, fmaxf(s[nt][0], s[nt][1]));
        m_hi = fmaxf(m_hi, fmaxf(s[nt][2], s[nt][3]));
    }
    m_lo = quad_max(m_lo);
    m_hi = quad_max(m_hi);
    float l_lo = 0.0f, l_hi = 0.0f;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        s[nt][0] = __expf(s[nt][0] - m_lo);
        s[nt][1] = __expf(s[nt][1] - m_lo);
        s[nt][2] = __expf(s[nt][2] - m_hi);
        s[nt][3] = __expf(s[nt][3] - m_hi);
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
    u64 row_lo = b * T + r0 + g, row_hi = row_lo + 8;
    if (c == 0) {
        lse[blockIdx.x * T + r0 + g] = m_lo + logf(l_lo);
        lse[blockIdx.x * T + r0 + g + 8] = m_hi + logf(l_hi);
    }
    float o[D / 8][4];
    zero_rows<D>(o);
    times_rows<T, D>(o, s, sv);
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        u64 col = h * D + nd * 8 + 2 * c;
        st(out, out_bf, row_lo * hidden + col, o[nd][0]);
        st(out, out_bf, row_lo * hidden + col + 1, o[nd][1]);
        st(out, out_bf, row_hi * hidden + col, o[nd][2]);
        st(out, out_bf, row_hi * hidden + col + 1, o[nd][3]);
    }
}

// acc[nd] += Mᵀ_w · N where M (T×T, shared, row stride T+PAD) supplies the
// warp's 16 columns r0.. as rows, and N is T×D in shared.
template <int T, int D>
__device__ void transposed_times(float (*acc)[4], const bf16_t* m, const bf16_t* n, int r0) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int LM = T + ATT_PAD, LN = D + ATT_PAD;
#pragma unroll
    for (int kk = 0; kk < T / 16; kk++) {
        int i = kk * 16 + 2 * c;
        u32 a[4];
        a[0] = pack_bf(m[i * LM + r0 + g], m[(i + 1) * LM + r0 + g]);
        a[1] = pack_bf(m[i * LM + r0 + g + 8], m[(i + 1) * LM + r0 + g + 8]);
        a[2] = pack_bf(m[(i + 8) * LM + r0 + g], m[(i + 9) * LM + r0 + g]);
        a[3] = pack_bf(m[(i + 8) * LM + r0 + g + 8], m[(i + 9) * LM + r0 + g + 8]);
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            const bf16_t* col = n + i * LN + nd * 8 + g;
            mma_bf16(acc[nd], a, pack_bf(col[0], col[LN]), pack_bf(col[8 * LN], col[9 * LN]));
        }
    }
}

// Writes a warp's 16×D result (C fragments) into rows of the packed dqkv
// buffer at column offset `col0`.
template <int D>
__device__ void store_rows(void* dst, int dst_bf, float (*acc)[4], u64 row_lo, u64 stride, u64 col0) {
    int lane = threadIdx.x & 31, c = lane & 3;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        u64 col = col0 + nd * 8 + 2 * c;
        st(dst, dst_bf, row_lo * stride + col, acc[nd][0]);
        st(dst, dst_bf, row_lo * stride + col + 1, acc[nd][1]);
        st(dst, dst_bf, (row_lo + 8) * stride + col, acc[nd][2]);
        st(dst, dst_bf, (row_lo + 8) * stride + col + 1, acc[nd][3]);
    }
}

template <int T, int D>
__device__ void attention_backward_impl(void* dqkv, int dqkv_bf, const void* dout, int dout_bf, const bf16_t* qkv,
                                        const float* lse, int heads, int causal, float scale) {
    extern __shared__ __align__(16) bf16_t smem[];
    const int LD = D + ATT_PAD, LT = T + ATT_PAD;
    bf16_t* sq = smem;
    bf16_t* sk = sq + T * LD;
    bf16_t* sv = sk + T * LD;
    bf16_t* sdo = sv + T * LD;
    bf16_t* sp = sdo + T * LD;
    bf16_t* sds = sp + T * LT;
    u64 hidden = (u64)heads * D, stride = 3 * hidden;
    u64 b = blockIdx.x / heads, h = blockIdx.x % heads;
    const bf16_t* base = qkv + b * T * stride + h * D;
    load_head<T, D>(sq, base, stride);
    load_head<T, D>(sk, base + hidden, stride);
    load_head<T, D>(sv, base + 2 * hidden, stride);
    load_head_any<T, D>(sdo, dout, dout_bf, b * T * hidden + h * D, hidden);
    __syncthreads();
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3, r0 = (threadIdx.x >> 5) * 16;
    float p[T / 8][4];
    scores<T, D>(p, sq, sk, r0, scale, causal);
    float lse_lo = lse[blockIdx.x * T + r0 + g], lse_hi = lse[blockIdx.x * T + r0 + g + 8];
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        p[nt][0] = __expf(p[nt][0] - lse_lo);
        p[nt][1] = __expf(p[nt][1] - lse_lo);
        p[nt][2] = __expf(p[nt][2] - lse_hi);
        p[nt][3] = __expf(p[nt][3] - lse_hi);
    }
    // dP = dO_w·Vᵀ: the same product as the scores, with dO for Q and V for K.
    float dp[T / 8][4];
    scores<T, D>(dp, sdo, sv, r0, 1.0f, 0);
    float d_lo = 0.0f, d_hi = 0.0f;
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        d_lo += p[nt][0] * dp[nt][0] + p[nt][1] * dp[nt][1];
        d_hi += p[nt][2] * dp[nt][2] + p[nt][3] * dp[nt][3];
    }
    d_lo = quad_sum(d_lo);
    d_hi = quad_sum(d_hi);
#pragma unroll
    for (int nt = 0; nt < T / 8; nt++) {
        dp[nt][0] = p[nt][0] * (dp[nt][0] - d_lo) * scale;
        dp[nt][1] = p[nt][1] * (dp[nt][1] - d_lo) * scale;
        dp[nt][2] = p[nt][2] * (dp[nt][2] - d_hi) * scale;
        dp[nt][3] = p[nt][3] * (dp[nt][3] - d_hi) * scale;
        int j = nt * 8 + 2 * c;
        *(u32*)(sp + (r0 + g) * LT + j) = pack2(p[nt][0], p[nt][1]);
        *(u32*)(sp + (r0 + g + 8) * LT + j) = pack2(p[nt][2], p[nt][3]);
        *(u32*)(sds + (r0 + g) * LT + j) = pack2(dp[nt][0], dp[nt][1]);
        *(u32*)(sds + (r0 + g + 8) * LT + j) = pack2(dp[nt][2], dp[nt][3]);
    }
    u64 row_lo = b * T + r0 + g;
    float acc[D / 8][4];
    // dQ = dS·K
    zero_rows<D>(acc);
    times_rows<T, D>(acc, dp, sk);
    store_rows<D>(dqkv, dqkv_bf, acc, row_lo, stride, h * D);
    __syncthreads();
    // dK = dSᵀ·Q and dV = Pᵀ·dO for the warp's 16 keys.
    zero_rows<D>(acc);
    transposed_times<T, D>(acc, sds, sq, r0);
    store_rows<D>(dqkv, dqkv_bf, acc, row_lo, stride, hidden + h * D);
    zero_rows<D>(acc);
    transposed_times<T, D>(acc, sp, sdo, r0);
    store_rows<D>(dqkv, dqkv_bf, acc, row_lo, stride, 2 * hidden + h * D);
}

#define FUSED_ATTENTION(T, D)                                                                              \
    extern "C" __global__ void __launch_bounds__(T * 2)                                                   \
        attention_fused_forward_##T##_##D(void* out, int out_bf, float* lse, const bf16_t* qkv, int heads, \
                                          int causal, float scale) {                                       \
        attention_forward_impl<T, D>(out, out_bf, lse, qkv, heads, causal, scale);                         \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(T * 2) attention_fused_backward_##T##_##D(                \
        void* dqkv, int dqkv_bf, const void* dout, int dout_bf, const bf16_t* qkv, const float* lse,       \
        int heads, int causal, float scale) {                                                              \
        attention_backward_impl<T, D>(dqkv, dqkv_bf, dout, dout_bf, qkv, lse, heads, causal, scale);       \
    }

FUSED_ATTENTION(32, 32)
FUSED_ATTENTION(64, 32)
FUSED_ATTENTION(128, 32)
FUSED_ATTENTION(32, 64)
FUSED_ATTENTION(64, 64)
FUSED_ATTENTION(128, 64)
