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
// mean(g)); dw += Σ dout·x̂ and db += Σ dout. Each block walks a contiguous
// range of rows, one warp per row, collects dw/db in shared memory and adds
// them to the f32 gradients once (atomically: blocks overlap in columns).
// Shared memory: 2·cols floats.
extern "C" __global__ void norm_backward(void* dinp, int dinp_bf, float* dweight, float* dbias,
                                         const void* dout, int dout_bf, const void* inp, int inp_bf,
                                         const float* weight, const float* mean, const float* rstd,
                                         int centred, u64 rows, u64 cols, u64 rows_per_block) {
    extern __shared__ float acc[];
    float* dw = acc;
    float* db = acc + cols;
    for (u64 c = threadIdx.x; c < 2 * cols; c += blockDim.x) acc[c] = 0.0f;
    __syncthreads();
    u64 warps = blockDim.x / 32;
    int lane = threadIdx.x & 31;
    u64 first = (u64)blockIdx.x * rows_per_block;
    u64 last = min(first + rows_per_block, rows);
    for (u64 r = first + threadIdx.x / 32; r < last; r += warps) {
        u64 base = r * cols;
        float m = mean[r], rs = rstd[r];
        float sum_g = 0.0f, sum_gx = 0.0f;
        for (u64 c = lane; c < cols; c += 32) {
            float dy = ld(dout, dout_bf, base + c);
            float xhat = (ld(inp, inp_bf, base + c) - m) * rs;
            float g = dy * weight[c];
            sum_g += g;
            sum_gx += g * xhat;
            atomicAdd(&dw[c], dy * xhat);
            atomicAdd(&db[c], dy);
        }
        float mean_g = centred ? warp_sum(sum_g) / (float)cols : 0.0f;
        float mean_gx = warp_sum(sum_gx) / (float)cols;
        for (u64 c = lane; c < cols; c += 32) {
            float dy = ld(dout, dout_bf, base + c);
            float xhat = (ld(inp, inp_bf, base + c) - m) * rs;
            float dx = rs * (dy * weight[c] - mean_g - xhat * mean_gx);
            st(dinp, dinp_bf, base + c, ld(dinp, dinp_bf, base + c) + dx);
        }
    }
    __syncthreads();
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        atomicAdd(&dweight[c], dw[c]);
        if (dbias) atomicAdd(&dbias[c], db[c]);
    }
}
