// FP8 copies of matmul operands with one scale per tensor ("current
// scaling"): `fp8_amax_partials` writes each block's max |x|, then
// `fp8_cast` reduces those partial maxima itself (a few hundred floats,
// from L2), scales x so that its largest magnitude lands on the format's
// largest finite value, rounds to nearest with saturation, and leaves the
// inverse scale (what cuBLASLt multiplies the product by) in `descale[0]`.
// No host round trip and no atomics. (The norm forward in norm.cu writes
// its output's E4M3 copy with `fp8x2` too, scaled from its parameters.)
//
// Formats: 0 = E4M3 (largest 448, the forward's operands), 1 = E5M2 (57344,
// gradients). The conversions are Hopper/Ada PTX (sm_89 and later); on
// older GPUs these kernels trap, and the host never asks for them there.

__device__ __forceinline__ float fp8_max(int fmt) { return fmt ? 57344.0f : 448.0f; }

// Two floats into two FP8 bytes, `lo` at the lower address.
__device__ __forceinline__ unsigned short fp8x2(float lo, float hi, int fmt) {
#if __CUDA_ARCH__ >= 890
    unsigned short d;
    if (fmt) asm volatile("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(d) : "f"(hi), "f"(lo));
    else asm volatile("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(d) : "f"(hi), "f"(lo));
    return d;
#else
    __trap();
    return 0;
#endif
}

// Both kernels read x eight values at a time (`FOR_EACH8`, `ldv<8>`): n is a
// multiple of 8 and x 16-byte aligned, as every matmul operand is.

extern "C" __global__ void fp8_amax_partials(float* partials, const void* x, int x_bf, u64 n) {
    __shared__ float shared[32];
    float m = 0.0f;
    FOR_EACH8(g, n) {
        float v[8];
        ldv<8>(v, x, x_bf, 8 * g);
        for (int k = 0; k < 8; k++) m = fmaxf(m, fabsf(v[k]));
    }
    m = block_max(m, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

// The scale from the partial maxima of `fp8_amax_partials`, the same in
// every block; block 0 records its inverse. An all-zero tensor gets scale 1.
__device__ float fp8_scale(const float* partials, u32 parts, float* descale, int fmt) {
    __shared__ float shared[32];
    float m = 0.0f;
    for (u32 p = threadIdx.x; p < parts; p += blockDim.x) m = fmaxf(m, partials[p]);
    m = block_max(m, shared);
    float scale = m > 0.0f ? fp8_max(fmt) / m : 1.0f;
    if (blockIdx.x == 0 && threadIdx.x == 0) descale[0] = 1.0f / scale;
    return scale;
}

// out[i] = fp8(x[i]·scale), eight elements (one 8-byte store) a step.
extern "C" __global__ void fp8_cast(uint2* out, const void* x, int x_bf, u64 n, const float* partials, u32 parts,
                                    float* descale, int fmt) {
    float scale = fp8_scale(partials, parts, descale, fmt);
    FOR_EACH8(g, n) {
        float v[8];
        ldv<8>(v, x, x_bf, 8 * g);
        u32 w[2];
        for (int k = 0; k < 2; k++)
            w[k] = (u32)fp8x2(v[4 * k] * scale, v[4 * k + 1] * scale, fmt) |
                   ((u32)fp8x2(v[4 * k + 2] * scale, v[4 * k + 3] * scale, fmt) << 16);
        out[g] = make_uint2(w[0], w[1]);
    }
}
