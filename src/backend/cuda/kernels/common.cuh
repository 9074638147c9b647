// Shared helpers of every kernel. Compiled by NVRTC with no system headers,
// so the bf16 conversions are written out here (round to nearest even, as
// __float2bfloat16 does).
//
// Every buffer argument comes as a pointer plus a flag `bf` (1: bf16 stored
// as unsigned short, 0: f32). The flag is uniform over a launch, so the
// branch costs nothing measurable in these memory-bound kernels and one
// kernel serves every precision the model mixes (bf16 activations, f32
// residual stream, statistics and master weights).

typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef unsigned long long u64;
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((u32)h) << 16);
}

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float ld(const void* p, int bf, u64 i) {
    return bf ? bf16_to_f32(((const bf16_t*)p)[i]) : ((const float*)p)[i];
}

__device__ __forceinline__ void st(void* p, int bf, u64 i, float v) {
    if (bf) ((bf16_t*)p)[i] = f32_to_bf16(v);
    else ((float*)p)[i] = v;
}

// Eight bf16 values packed in 16 bytes, as floats.
__device__ __forceinline__ void unpack8(float* v, uint4 u) {
    u32 w[4] = {u.x, u.y, u.z, u.w};
    for (int k = 0; k < 4; k++) {
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}

// V consecutive values (V = 1, 4 or 8) at element i of an f32-or-bf16
// buffer; for V = 4 or 8, i is a multiple of V and the buffer 16-byte
// aligned, so one 8- or 16-byte access moves four values and one 16-byte
// access (two for f32) moves eight (the host checks the alignment).
template <int V>
__device__ __forceinline__ void ldv(float* v, const void* p, int bf, u64 i) {
    if constexpr (V == 8) {
        if (bf) {
            unpack8(v, *(const uint4*)((const bf16_t*)p + i));
        } else {
            ldv<4>(v, p, 0, i);
            ldv<4>(v + 4, p, 0, i + 4);
        }
    } else if constexpr (V == 4) {
        if (bf) {
            uint2 u = *(const uint2*)((const bf16_t*)p + i);
            v[0] = __uint_as_float(u.x << 16);
            v[1] = __uint_as_float(u.x & 0xffff0000u);
            v[2] = __uint_as_float(u.y << 16);
            v[3] = __uint_as_float(u.y & 0xffff0000u);
        } else {
            float4 f = *(const float4*)((const float*)p + i);
            v[0] = f.x;
            v[1] = f.y;
            v[2] = f.z;
            v[3] = f.w;
        }
    } else {
        for (int k = 0; k < V; k++) v[k] = ld(p, bf, i + k);
    }
}

template <int V>
__device__ __forceinline__ void stv(void* p, int bf, u64 i, const float* v) {
    if constexpr (V == 8) {
        if (bf) {
            uint4 u;
            u.x = (u32)f32_to_bf16(v[0]) | ((u32)f32_to_bf16(v[1]) << 16);
            u.y = (u32)f32_to_bf16(v[2]) | ((u32)f32_to_bf16(v[3]) << 16);
            u.z = (u32)f32_to_bf16(v[4]) | ((u32)f32_to_bf16(v[5]) << 16);
            u.w = (u32)f32_to_bf16(v[6]) | ((u32)f32_to_bf16(v[7]) << 16);
            *(uint4*)((bf16_t*)p + i) = u;
        } else {
            stv<4>(p, 0, i, v);
            stv<4>(p, 0, i + 4, v + 4);
        }
    } else if constexpr (V == 4) {
        if (bf) {
            uint2 u;
            u.x = (u32)f32_to_bf16(v[0]) | ((u32)f32_to_bf16(v[1]) << 16);
            u.y = (u32)f32_to_bf16(v[2]) | ((u32)f32_to_bf16(v[3]) << 16);
            *(uint2*)((bf16_t*)p + i) = u;
        } else {
            *(float4*)((float*)p + i) = make_float4(v[0], v[1], v[2], v[3]);
        }
    } else {
        for (int k = 0; k < V; k++) st(p, bf, i + k, v[k]);
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024); every
// thread gets the result. `shared` holds 32 floats.
__device__ float block_sum(float v, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.0f;
    return warp_sum(v);
}

__device__ float block_max(float v, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : NEG_INF;
    return warp_max(v);
}

// Grid-stride loop over n elements.
#define FOR_EACH(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)gridDim.x * blockDim.x)

// Grid-stride loop over n elements four at a time: i is each group's first
// element. The host launches n/4 threads' worth of blocks (`launch_vec4`)
// and n is a multiple of 4.
#define FOR_EACH4(i, n) for (u64 i = 4 * ((u64)blockIdx.x * blockDim.x + threadIdx.x); i < (u64)(n); i += 4 * (u64)gridDim.x * blockDim.x)

// Grid-stride loop over the n/8 groups of eight values (n a multiple of 8):
// g is the group's index, its first element 8·g.
#define FOR_EACH8(g, n) for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < (u64)(n) / 8; g += (u64)gridDim.x * blockDim.x)

// The dropout mask of backend::dropout_keep: splitmix64 of (seed, index),
// kept when the top 24 bits, as a fraction, are at least p.
__device__ __forceinline__ bool dropout_keep(u64 seed, u64 index, float p) {
    u64 z = seed ^ (index * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float u = (float)(z >> 40) / 16777216.0f;
    return u >= p;
}

__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

__device__ __forceinline__ float silu(float x) {
    return x / (1.0f + expf(-x));
}

__device__ __forceinline__ float silu_grad(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

// act: 0 = GELU (erf), 1 = SiLU.
__device__ __forceinline__ float act_fwd(int act, float x) { return act ? silu(x) : gelu(x); }
__device__ __forceinline__ float act_grad(int act, float x) { return act ? silu_grad(x) : gelu_grad(x); }
