// Sparse-prediction row gather and softmax cross-entropy.

// out[j, c] = inp[idx[j], c]
extern "C" __global__ void gather_rows(void* out, int out_bf, const void* inp, int inp_bf, const u32* idx, u64 cols, u64 n) {
    FOR_EACH(i, n) {
        u64 j = i / cols, c = i - j * cols;
        st(out, out_bf, i, ld(inp, inp_bf, (u64)idx[j] * cols + c));
    }
}

// dinp[idx[j], c] = dout[j, c] (dinp zeroed before; indices are distinct).
extern "C" __global__ void scatter_rows(void* dinp, int dinp_bf, const void* dout, int dout_bf, const u32* idx, u64 cols, u64 n) {
    FOR_EACH(i, n) {
        u64 j = i / cols, c = i - j * cols;
        st(dinp, dinp_bf, (u64)idx[j] * cols + c, ld(dout, dout_bf, i));
    }
}

// Adds V values to a running (max m, sum of exp(· − m)) pair: the online
// softmax, which needs one pass over the row where max-then-sum needed two.
// The group's own maximum rescales the sum at most once per group.
template <int V>
__device__ __forceinline__ void online_softmax_add(float& m, float& s, const float* x) {
    float mx = x[0];
#pragma unroll
    for (int k = 1; k < V; k++) mx = fmaxf(mx, x[k]);
    if (mx > m) {
        s *= __expf(m - mx);
        m = mx;
    }
#pragma unroll
    for (int k = 0; k < V; k++) s += __expf(x[k] - m);
}

// The row's loss and, with write_grad, its gradient in place, V values a
// thread per access (V = 8 or 4: vocab a multiple of V and the buffer
// 16-byte aligned; else 1).
template <int V>
__device__ __forceinline__ void cross_entropy_row(float* losses, void* logits, int logits_bf, u32 target, u64 r,
                                                  u64 vocab, int write_grad, float dscale) {
    __shared__ float shared[32];
    u64 base = r * vocab;
    float m = NEG_INF, s = 0.0f;
    for (u64 c = V * threadIdx.x; c < vocab; c += V * blockDim.x) {
        float v[V];
        ldv<V>(v, logits, logits_bf, base + c);
        online_softmax_add<V>(m, s, v);
    }
    float row_max = block_max(m, shared);
    // A thread with no columns has s = 0 (and m = −inf, whose rescale would be NaN).
    s = block_sum(s == 0.0f ? 0.0f : s * __expf(m - row_max), shared);
    float xt = ld(logits, logits_bf, base + target);
    __syncthreads();
    if (threadIdx.x == 0) losses[r] = logf(s) - (xt - row_max);
    if (!write_grad) return;
    float factor = dscale / s;
    for (u64 c = V * threadIdx.x; c < vocab; c += V * blockDim.x) {
        float v[V];
        ldv<V>(v, logits, logits_bf, base + c);
#pragma unroll
        for (int k = 0; k < V; k++) {
            v[k] = __expf(v[k] - row_max) * factor;
            if (c + k == target) v[k] -= dscale;
        }
        stv<V>(logits, logits_bf, base + c, v);
    }
}

// One block per row: losses[r] = logsumexp(x) − x[target]; with `write_grad`
// the row becomes dscale·(softmax − onehot). Ignored rows get 0 (and a zero
// gradient). The row is read once for its maximum and sum (online), and once
// more, mostly from L2, to write the gradient in place. `width` (8, 4 or 1,
// the host's choice) values move in one access: at a 32,768-wide head the
// scalar loop was instruction-bound, not memory-bound, and 16-byte accesses
// keep more bytes in flight than 8-byte ones.
extern "C" __global__ void cross_entropy(float* losses, void* logits, int logits_bf, const u32* targets,
                                         u64 vocab, int write_grad, float dscale, int width) {
    u64 r = blockIdx.x;
    u32 target = targets[r];
    if (target == 0xffffffffu) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        if (write_grad)
            for (u64 c = threadIdx.x; c < vocab; c += blockDim.x) st(logits, logits_bf, r * vocab + c, 0.0f);
        return;
    }
    if (width == 8) cross_entropy_row<8>(losses, logits, logits_bf, target, r, vocab, write_grad, dscale);
    else if (width == 4) cross_entropy_row<4>(losses, logits, logits_bf, target, r, vocab, write_grad, dscale);
    else cross_entropy_row<1>(losses, logits, logits_bf, target, r, vocab, write_grad, dscale);
}

// cross_entropy for bf16 rows that fit a block's registers (vocab a multiple
// of 8, at most CE_HELD_CHUNKS·8·512 = 32,768; the host checks): each thread
// keeps its pieces of the row as packed bf16 (16 bytes a piece, 32 registers
// at most), so the row is read from memory once, where `cross_entropy` reads
// it again to write the gradient (after the other rows in flight had pushed
// much of it out of L2 at gpt-small's 32,768 × 4,096 chunks).
#define CE_HELD_CHUNKS 8
extern "C" __global__ void __launch_bounds__(512) cross_entropy_held(float* losses, bf16_t* logits, const u32* targets,
                                                                     u64 vocab, int write_grad, float dscale) {
    __shared__ float shared[32];
    const u64 r = blockIdx.x;
    const u32 target = targets[r];
    bf16_t* row = logits + r * vocab;
    const int pieces = (int)(vocab / 8);
    if (target == 0xffffffffu) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        if (write_grad)
            for (int k = threadIdx.x; k < pieces; k += blockDim.x) *(uint4*)(row + 8 * k) = make_uint4(0, 0, 0, 0);
        return;
    }
    uint4 held[CE_HELD_CHUNKS];
    float m = NEG_INF, s = 0.0f;
#pragma unroll
    for (int j = 0; j < CE_HELD_CHUNKS; j++) {
        const int k = j * 512 + threadIdx.x;
        if (k < pieces) held[j] = *(const uint4*)(row + 8 * k);
    }
#pragma unroll
    for (int j = 0; j < CE_HELD_CHUNKS; j++) {
        if (j * 512 + (int)threadIdx.x < pieces) {
            float v[8];
            unpack8(v, held[j]);
            online_softmax_add<8>(m, s, v);
        }
    }
    const float row_max = block_max(m, shared);
    s = block_sum(s == 0.0f ? 0.0f : s * __expf(m - row_max), shared);
    const float xt = bf16_to_f32(row[target]);
    __syncthreads();  // every thread has read x[target] before any gradient overwrites it
    if (threadIdx.x == 0) losses[r] = logf(s) - (xt - row_max);
    if (!write_grad) return;
    const float factor = dscale / s;
#pragma unroll
    for (int j = 0; j < CE_HELD_CHUNKS; j++) {
        const int k = j * 512 + threadIdx.x;
        if (k < pieces) {
            float v[8];
            unpack8(v, held[j]);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] = __expf(v[e] - row_max) * factor;
                if (8 * k + e == (int)target) v[e] -= dscale;
            }
            stv<8>(row, 1, 8 * (u64)k, v);
        }
    }
}

// One block per row: hits[r] = 1 when the target is the row's first arg-max,
// that is x[t] > x[c] for every c < t and x[t] >= x[c] for every c > t (the
// host's tie rule); 0 otherwise and on ignored rows. Counting the columns that
// beat the target needs no index reduction.
extern "C" __global__ void top1_hits(float* hits, const void* logits, int logits_bf, const u32* targets, u64 vocab) {
    __shared__ float shared[32];
    u64 r = blockIdx.x;
    u32 target = targets[r];
    if (target == 0xffffffffu) {
        if (threadIdx.x == 0) hits[r] = 0.0f;
        return;
    }
    u64 base = r * vocab;
    float xt = ld(logits, logits_bf, base + target);
    float beaten = 0.0f;
    for (u64 c = threadIdx.x; c < vocab; c += blockDim.x) {
        float x = ld(logits, logits_bf, base + c);
        if (c < target ? x >= xt : x > xt) beaten += 1.0f;
    }
    beaten = block_sum(beaten, shared);
    if (threadIdx.x == 0) hits[r] = beaten == 0.0f ? 1.0f : 0.0f;
}

// Squared error of a one-output regression head; with `write_grad`, preds
// becomes dscale·2·(preds − targets).
extern "C" __global__ void mse_loss(float* losses, void* preds, int preds_bf, const void* targets, int targets_bf,
                                    int write_grad, float dscale, u64 n) {
    FOR_EACH(i, n) {
        float diff = ld(preds, preds_bf, i) - ld(targets, targets_bf, i);
        losses[i] = diff * diff;
        if (write_grad) st(preds, preds_bf, i, dscale * 2.0f * diff);
    }
}
