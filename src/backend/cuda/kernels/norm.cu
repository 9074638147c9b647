// LayerNorm (centred = 1) and RMSNorm (centred = 0) over rows of `cols`.
// One warp per row; statistics in f32, saved for the backward. V columns
// per lane and access: 4 when cols is a multiple of 4 (every model width;
// the host checks alignment), else 1. Lane l owns columns V·l + 32·V·j.

// Under `CRAM_FP8` the forward also writes an E4M3 copy of its output `q`
// (scaled by `q_scale`), the input of the FP8 product that follows it
// (`norm_matmul_forward`), so that product needs no cast pass of its own.
template <int V>
__device__ __forceinline__ void st_e4m3(unsigned char* q, u64 i, const float* v, float s) {
    if constexpr (V == 4) {
        *(u32*)(q + i) = (u32)fp8x2(v[0] * s, v[1] * s, 0) | ((u32)fp8x2(v[2] * s, v[3] * s, 0) << 16);
    } else {
        for (int k = 0; k < V; k++) q[i + k] = (unsigned char)fp8x2(v[k] * s, 0.0f, 0);
    }
}

// The E4M3 scale of a norm's output from the norm's parameters alone, the
// same in every block: |x̂| < √cols for LayerNorm (Σ x̂² = cols·var/(var+eps))
// and RMSNorm alike, so |y_c| ≤ √cols·|w_c| + |b_c| bounds every output
// without a pass over it, and the largest bound lands on E4M3's 448. Block
// 0 records the inverse (what the product multiplies by) in `descale[0]`.
__device__ float fp8_norm_scale(const float* weight, const float* bias, u64 cols, float* descale) {
    __shared__ float shared[32];
    float root = sqrtf((float)cols), bound = 0.0f;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x)
        bound = fmaxf(bound, root * fabsf(weight[c]) + (bias ? fabsf(bias[c]) : 0.0f));
    bound = block_max(bound, shared);
    float scale = bound > 0.0f ? fp8_max(0) / bound : 1.0f;
    if (blockIdx.x == 0 && threadIdx.x == 0) descale[0] = 1.0f / scale;
    return scale;
}

template <int V>
__device__ void norm_forward_impl(void* out, int out_bf, float* mean, float* rstd, const void* inp, int inp_bf,
                                  const float* weight, const float* bias, int centred, float eps, u64 rows,
                                  u64 cols, unsigned char* q, float q_scale) {
    u64 warps = blockDim.x / 32;
    u64 r = (u64)blockIdx.x * warps + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    u64 base = r * cols;
    float m = 0.0f, x[V];
    if (centred) {
        float s = 0.0f;
        for (u64 c = V * lane; c < cols; c += 32 * V) {
            ldv<V>(x, inp, inp_bf, base + c);
            for (int k = 0; k < V; k++) s += x[k];
        }
        m = warp_sum(s) / (float)cols;
    }
    float v = 0.0f;
    for (u64 c = V * lane; c < cols; c += 32 * V) {
        ldv<V>(x, inp, inp_bf, base + c);
        for (int k = 0; k < V; k++) v += (x[k] - m) * (x[k] - m);
    }
    float rs = rsqrtf(warp_sum(v) / (float)cols + eps);
    for (u64 c = V * lane; c < cols; c += 32 * V) {
        ldv<V>(x, inp, inp_bf, base + c);
        // weight and bias are views into the parameter buffer at any offset:
        // read one by one (cached), not as vectors.
        for (int k = 0; k < V; k++) x[k] = (x[k] - m) * rs * weight[c + k] + (bias ? bias[c + k] : 0.0f);
        stv<V>(out, out_bf, base + c, x);
        if (q) st_e4m3<V>(q, base + c, x, q_scale);
    }
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

// norm_forward_impl for rows of 256·N columns (N ≤ 4, the widths of every
// preset): each lane holds its 8·N values in registers, so the row is read
// from memory once, 16 bytes an access (bf16); the general path reads it
// two or three times, 8 bytes an access. Lane l owns columns 8l + 256j .. +8.
template <int N>
__device__ void norm_forward_rows(void* out, int out_bf, float* mean, float* rstd, const void* inp, int inp_bf,
                                  const float* weight, const float* bias, int centred, float eps, u64 rows,
                                  unsigned char* q, float q_scale) {
    constexpr u64 cols = 256 * N;
    u64 r = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    u64 base = r * cols;
    float x[N][8];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < N; j++) {
        ldv<8>(x[j], inp, inp_bf, base + 8 * lane + 256 * j);
#pragma unroll
        for (int k = 0; k < 8; k++) s += x[j][k];
    }
    float m = centred ? warp_sum(s) / (float)cols : 0.0f;
    float v = 0.0f;
#pragma unroll
    for (int j = 0; j < N; j++)
#pragma unroll
        for (int k = 0; k < 8; k++) v += (x[j][k] - m) * (x[j][k] - m);
    float rs = rsqrtf(warp_sum(v) / (float)cols + eps);
#pragma unroll
    for (int j = 0; j < N; j++) {
        u64 c = 8 * lane + 256 * j;
#pragma unroll
        for (int k = 0; k < 8; k++) x[j][k] = (x[j][k] - m) * rs * weight[c + k] + (bias ? bias[c + k] : 0.0f);
        stv<8>(out, out_bf, base + c, x[j]);
        if (q) {
            st_e4m3<4>(q, base + c, x[j], q_scale);
            st_e4m3<4>(q, base + c + 4, x[j] + 4, q_scale);
        }
    }
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

// `q` (E4M3 copy of out, 4-byte aligned) and `q_descale` are null unless asked.
extern "C" __global__ void norm_forward(void* out, int out_bf, float* mean, float* rstd, const void* inp, int inp_bf,
                                        const float* weight, const float* bias, int centred, float eps, u64 rows,
                                        u64 cols, unsigned char* q, float* q_descale) {
    // Before any warp leaves: the scale's reduction needs the whole block.
    float q_scale = q ? fp8_norm_scale(weight, bias, cols, q_descale) : 0.0f;
    if (cols % 256 == 0 && cols <= 1024) {
#define NORM_FORWARD_ROWS(N) \
    norm_forward_rows<N>(out, out_bf, mean, rstd, inp, inp_bf, weight, bias, centred, eps, rows, q, q_scale)
        switch (cols / 256) {
            case 1: NORM_FORWARD_ROWS(1); return;
            case 2: NORM_FORWARD_ROWS(2); return;
            case 3: NORM_FORWARD_ROWS(3); return;
            default: NORM_FORWARD_ROWS(4); return;
        }
#undef NORM_FORWARD_ROWS
    }
    if (cols % 4 == 0)
        norm_forward_impl<4>(out, out_bf, mean, rstd, inp, inp_bf, weight, bias, centred, eps, rows, cols, q, q_scale);
    else
        norm_forward_impl<1>(out, out_bf, mean, rstd, inp, inp_bf, weight, bias, centred, eps, rows, cols, q, q_scale);
}

// acc[0..V) += v, one 16-byte shared access for V = 4.
template <int V>
__device__ __forceinline__ void add_to_shared(float* acc, const float* v) {
    if constexpr (V == 4) {
        float4 a = *(float4*)acc;
        *(float4*)acc = make_float4(a.x + v[0], a.y + v[1], a.z + v[2], a.w + v[3]);
    } else {
        for (int k = 0; k < V; k++) acc[k] += v[k];
    }
}

// The norm backward's parameter gradients in shared memory: each warp has
// a dw slice of `cols` floats and a db slice after it. This warp's slices,
// zeroed by its lanes.
__device__ __forceinline__ float* zeroed_param_slices(float* acc, u64 cols) {
    float* dw = acc + (threadIdx.x >> 5) * 2 * cols;
    for (u64 c = threadIdx.x & 31; c < 2 * cols; c += 32) dw[c] = 0.0f;
    return dw;
}

// Once every warp is done with its rows: the warps' slices summed for each
// column c (stored at `slot(c)` of a slice) and added to the f32 gradients,
// one atomic a column and parameter.
template <typename Slot>
__device__ __forceinline__ void add_param_slices(float* dweight, float* dbias, const float* acc, u64 cols,
                                                 Slot slot) {
    __syncthreads();
    const int warps = blockDim.x >> 5;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        u64 at = slot(c);
        float w = 0.0f, b = 0.0f;
        for (int k = 0; k < warps; k++) {
            w += acc[k * 2 * cols + at];
            b += acc[k * 2 * cols + cols + at];
        }
        atomicAdd(&dweight[c], w);
        if (dbias) atomicAdd(&dbias[c], b);
    }
}

// dinp += rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dout·w (RMSNorm drops
// mean(g)); dw += Σ dout·x̂ and db += Σ dout. One warp per row, each warp
// walking many rows and summing dw/db into its own slice of shared memory
// (no atomics, no bank conflicts: lane l owns its V-column groups). The
// block then adds its warps' slices to the f32 gradients once per column.
// Shared memory: 2·cols floats per warp. Where `dcopy` is not null the new
// dinp also goes there in bf16: the next product's output gradient, which
// would otherwise be a cast pass over an f32 dinp (norm_backward_copy).
template <int V>
__device__ void norm_backward_impl(void* dinp, int dinp_bf, float* dweight, float* dbias, const void* dout,
                                   int dout_bf, const void* inp, int inp_bf, const float* weight, const float* mean,
                                   const float* rstd, int centred, u64 rows, u64 cols, void* dcopy) {
    extern __shared__ __align__(16) float acc[];
    int lane = threadIdx.x & 31, warp_in_block = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float* dw = zeroed_param_slices(acc, cols);
    float* db = dw + cols;
    u64 warps_total = (u64)gridDim.x * warps;
    for (u64 r = (u64)blockIdx.x * warps + warp_in_block; r < rows; r += warps_total) {
        u64 base = r * cols;
        float m = mean[r], rs = rstd[r];
        float sum_g = 0.0f, sum_gx = 0.0f;
        // Unrolled so that several loads are in flight per warp: the kernel
        // is bound by memory latency, not bandwidth, at this occupancy.
#pragma unroll 2
        for (u64 c = V * lane; c < cols; c += 32 * V) {
            float dy[V], xh[V], dyxh[V];
            ldv<V>(dy, dout, dout_bf, base + c);
            ldv<V>(xh, inp, inp_bf, base + c);
            for (int k = 0; k < V; k++) {
                xh[k] = (xh[k] - m) * rs;
                float g = dy[k] * weight[c + k];
                sum_g += g;
                sum_gx += g * xh[k];
                dyxh[k] = dy[k] * xh[k];
            }
            add_to_shared<V>(dw + c, dyxh);
            add_to_shared<V>(db + c, dy);
        }
        float mean_g = centred ? warp_sum(sum_g) / (float)cols : 0.0f;
        float mean_gx = warp_sum(sum_gx) / (float)cols;
#pragma unroll 2
        for (u64 c = V * lane; c < cols; c += 32 * V) {
            float dy[V], xh[V], dx[V];
            ldv<V>(dy, dout, dout_bf, base + c);
            ldv<V>(xh, inp, inp_bf, base + c);
            ldv<V>(dx, dinp, dinp_bf, base + c);
            for (int k = 0; k < V; k++) dx[k] += rs * (dy[k] * weight[c + k] - mean_g - (xh[k] - m) * rs * mean_gx);
            stv<V>(dinp, dinp_bf, base + c, dx);
            if (dcopy) stv<V>(dcopy, 1, base + c, dx);
        }
    }
    add_param_slices(dweight, dbias, acc, cols, [](u64 c) { return c; });
}

// norm_backward_impl for rows of 256·N columns (N ≤ 4: the widths 256,
// 512, 768, 1024 of every preset), where each lane holds its 8·N values of
// dout, x and dinp in registers: every value is read from memory once, 16
// bytes an access (bf16), a row's dout and x loads in flight together. The
// general kernel reads dout and x twice, 8 bytes an access, and its loads of
// the second pass wait on the first's sums (ncu: 22 cycles a warp between
// instructions, 67% of DRAM bandwidth at crammed-bert's 768).
// Lane l owns columns 8l + 256j .. +8 (j < N). Its dw and db slices in
// shared memory are split into halves so that each float4 access of a warp
// is conflict-free: columns 8q .. 8q+3 go to float4 q of the low half,
// 8q+4 .. 8q+7 to float4 q of the high half (`norm_param_slot`).
__device__ __forceinline__ u64 norm_param_slot(u64 c, u64 cols) {
    return (c & 4 ? cols / 2 : 0) + (c / 8) * 4 + (c & 3);
}

template <int N>
__device__ void norm_backward_rows(void* dinp, int dinp_bf, float* dweight, float* dbias, const void* dout,
                                   int dout_bf, const void* inp, int inp_bf, const float* weight, const float* mean,
                                   const float* rstd, int centred, u64 rows, void* dcopy) {
    constexpr u64 cols = 256 * N;
    extern __shared__ __align__(16) float acc[];
    int lane = threadIdx.x & 31, warp_in_block = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float* dw = zeroed_param_slices(acc, cols);
    float* db = dw + cols;
    u64 warps_total = (u64)gridDim.x * warps;
    for (u64 r = (u64)blockIdx.x * warps + warp_in_block; r < rows; r += warps_total) {
        u64 base = r * cols;
        float dy[N][8], xh[N][8], dx[N][8];
#pragma unroll
        for (int j = 0; j < N; j++) {
            u64 c = base + 8 * lane + 256 * j;
            ldv<8>(dy[j], dout, dout_bf, c);
            ldv<8>(xh[j], inp, inp_bf, c);
        }
        float m = mean[r], rs = rstd[r];
        float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
        for (int j = 0; j < N; j++) {
            float dyxh[8];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                xh[j][k] = (xh[j][k] - m) * rs;
                float g = dy[j][k] * weight[8 * lane + 256 * j + k];
                sum_g += g;
                sum_gx += g * xh[j][k];
                dyxh[k] = dy[j][k] * xh[j][k];
            }
            u64 q = 4 * (u64)(lane + 32 * j);
            add_to_shared<4>(dw + q, dyxh);
            add_to_shared<4>(dw + cols / 2 + q, dyxh + 4);
            add_to_shared<4>(db + q, dy[j]);
            add_to_shared<4>(db + cols / 2 + q, dy[j] + 4);
        }
        // The residual gradient's loads go out before the warp's sums.
#pragma unroll
        for (int j = 0; j < N; j++) ldv<8>(dx[j], dinp, dinp_bf, base + 8 * lane + 256 * j);
        float mean_g = centred ? warp_sum(sum_g) / (float)cols : 0.0f;
        float mean_gx = warp_sum(sum_gx) / (float)cols;
#pragma unroll
        for (int j = 0; j < N; j++) {
#pragma unroll
            for (int k = 0; k < 8; k++) dx[j][k] += rs * (dy[j][k] * weight[8 * lane + 256 * j + k] - mean_g - xh[j][k] * mean_gx);
            stv<8>(dinp, dinp_bf, base + 8 * lane + 256 * j, dx[j]);
            if (dcopy) stv<8>(dcopy, 1, base + 8 * lane + 256 * j, dx[j]);
        }
    }
    add_param_slices(dweight, dbias, acc, cols, [](u64 c) { return norm_param_slot(c, cols); });
}

extern "C" __global__ void norm_backward(void* dinp, int dinp_bf, float* dweight, float* dbias, const void* dout,
                                         int dout_bf, const void* inp, int inp_bf, const float* weight,
                                         const float* mean, const float* rstd, int centred, u64 rows, u64 cols,
                                         void* dcopy) {
    if (cols % 4 == 0)
        norm_backward_impl<4>(dinp, dinp_bf, dweight, dbias, dout, dout_bf, inp, inp_bf, weight, mean, rstd, centred,
                              rows, cols, dcopy);
    else
        norm_backward_impl<1>(dinp, dinp_bf, dweight, dbias, dout, dout_bf, inp, inp_bf, weight, mean, rstd, centred,
                              rows, cols, dcopy);
}

// norm_backward for rows of exactly 256·N columns, a kernel for each N so
// that each has the registers of its own row (the host picks by width). The
// arguments are the general kernel's, so that the host passes one list;
// `cols` is 256·N here. Bounded to five blocks an SM (four at N = 4).
#define NORM_BACKWARD_ROWS(N)                                                                                \
    extern "C" __global__ void __launch_bounds__(128, N == 4 ? 4 : 5)                                        \
        norm_backward_##N(void* dinp, int dinp_bf, float* dweight, float* dbias, const void* dout, int dout_bf, \
                          const void* inp, int inp_bf, const float* weight, const float* mean, const float* rstd, \
                          int centred, u64 rows, u64 cols, void* dcopy) {                                    \
        norm_backward_rows<N>(dinp, dinp_bf, dweight, dbias, dout, dout_bf, inp, inp_bf, weight, mean, rstd, \
                              centred, rows, dcopy);                                                         \
    }
NORM_BACKWARD_ROWS(1)
NORM_BACKWARD_ROWS(2)
NORM_BACKWARD_ROWS(3)
NORM_BACKWARD_ROWS(4)
