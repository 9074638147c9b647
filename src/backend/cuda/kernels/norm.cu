// LayerNorm (centred = 1) and RMSNorm (centred = 0) over rows of `cols`.
// One warp per row; statistics in f32, saved for the backward.

extern "C" __global__ void norm_forward(void* out, int out_bf, float* mean, float* rstd,
                                        const void* inp, int inp_bf, const float* weight, const float* bias,
                                        int centred, float eps, u64 rows, u64 cols) {
    u64 warps = blockDim.x / 32;
    u64 r = (u64)blockIdx.x * warps + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    u64 base = r * cols;
    float m = 0.0f;
    if (centred) {
        float s = 0.0f;
        for (u64 c = lane; c < cols; c += 32) s += ld(inp, inp_bf, base + c);
        m = warp_sum(s) / (float)cols;
    }
    float v = 0.0f;
    for (u64 c = lane; c < cols; c += 32) {
        float d = ld(inp, inp_bf, base + c) - m;
        v += d * d;
    }
    float rs = rsqrtf(warp_sum(v) / (float)cols + eps);
    for (u64 c = lane; c < cols; c += 32) {
        float y = (ld(inp, inp_bf, base + c) - m) * rs * weight[c];
        if (bias) y += bias[c];
        st(out, out_bf, base + c, y);
    }
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

// dinp += rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dout·w (RMSNorm drops
// mean(g)); dw += Σ dout·x̂ and db += Σ dout. One warp per row, each warp
// walking many rows and summing dw/db into its own slice of shared memory
// (no atomics, no bank conflicts: lane l owns columns l, l+32, ...). The
// block then adds its warps' slices to the f32 gradients once per column.
// Shared memory: 2·cols floats per warp.
extern "C" __global__ void norm_backward(void* dinp, int dinp_bf, float* dweight, float* dbias,
                                         const void* dout, int dout_bf, const void* inp, int inp_bf,
                                         const float* weight, const float* mean, const float* rstd,
                                         int centred, u64 rows, u64 cols) {
    extern __shared__ float acc[];
    int lane = threadIdx.x & 31, warp_in_block = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float* dw = acc + warp_in_block * 2 * cols;
    float* db = dw + cols;
    for (u64 c = lane; c < 2 * cols; c += 32) dw[c] = 0.0f;
    u64 warps_total = (u64)gridDim.x * warps;
    for (u64 r = (u64)blockIdx.x * warps + warp_in_block; r < rows; r += warps_total) {
        u64 base = r * cols;
        float m = mean[r], rs = rstd[r];
        float sum_g = 0.0f, sum_gx = 0.0f;
        // Unrolled so that several loads are in flight per warp: the kernel
        // is bound by memory latency, not bandwidth, at this occupancy.
#pragma unroll 4
        for (u64 c = lane; c < cols; c += 32) {
            float dy = ld(dout, dout_bf, base + c);
            float xh = (ld(inp, inp_bf, base + c) - m) * rs;
            float g = dy * weight[c];
            sum_g += g;
            sum_gx += g * xh;
            dw[c] += dy * xh;
            db[c] += dy;
        }
        float mean_g = centred ? warp_sum(sum_g) / (float)cols : 0.0f;
        float mean_gx = warp_sum(sum_gx) / (float)cols;
#pragma unroll 4
        for (u64 c = lane; c < cols; c += 32) {
            float dy = ld(dout, dout_bf, base + c);
            float xh = (ld(inp, inp_bf, base + c) - m) * rs;
            float dx = rs * (dy * weight[c] - mean_g - xh * mean_gx);
            st(dinp, dinp_bf, base + c, ld(dinp, dinp_bf, base + c) + dx);
        }
    }
    __syncthreads();
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float w = 0.0f, b = 0.0f;
        for (int k = 0; k < warps; k++) {
            w += acc[k * 2 * cols + c];
            b += acc[k * 2 * cols + cols + c];
        }
        atomicAdd(&dweight[c], w);
        if (dbias) atomicAdd(&dbias[c], b);
    }
}
