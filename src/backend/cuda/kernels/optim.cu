// Reductions for statistics and the gradient norm, and AdamW over the flat
// buffer. Sums are two-stage (per-block partials, then one block) so they
// are deterministic for a given launch shape.

// partials[block] = Σ x (squared when `square`) over the block's grid-stride share.
extern "C" __global__ void sum_partials(float* partials, const void* x, int x_bf, u64 n, int square) {
    __shared__ float shared[32];
    float s = 0.0f;
    FOR_EACH(i, n) {
        float v = ld(x, x_bf, i);
        s += square ? v * v : v;
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// dst[index] = (accumulate ? dst[index] : 0) + scale · Σ partials; one block.
extern "C" __global__ void finish_sum(float* dst, u64 index, const float* partials, u64 n, float scale, int accumulate) {
    __shared__ float shared[32];
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) dst[index] = (accumulate ? dst[index] : 0.0f) + scale * s;
}

// One AdamW step with decoupled weight decay on elements [0, decay_len) and
// the clip factor min(1, max_norm/‖g‖) read from norm_sq on the device. Also
// refreshes the bf16 copy of the weights that the matmuls read. A non-finite
// norm skips the step: nothing is written but, once, norm_sq[skipped_slot] += 1
// (skipped_slot = ~0: not counted), which the trainer reads at logging.
extern "C" __global__ void adamw(float* params, bf16_t* shadow, const float* grads, float* m, float* v,
                                 float* norm_sq, u64 norm_index, u64 skipped_slot, float lr, float beta1,
                                 float beta2, float eps, float weight_decay, float bias1, float bias2,
                                 float max_norm, u64 decay_len, u64 n) {
    float norm_squared = norm_sq[norm_index];
    // Uniform over the launch: every thread reads the same value. NaN fails the comparison.
    if (!(norm_squared <= 3.402823466e38f)) {
        if (skipped_slot != ~0ull && blockIdx.x == 0 && threadIdx.x == 0) norm_sq[skipped_slot] += 1.0f;
        return;
    }
    float norm = sqrtf(norm_squared);
    float clip = (max_norm > 0.0f && norm > max_norm) ? max_norm / norm : 1.0f;
    FOR_EACH(i, n) {
        float g = grads[i] * clip;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float decay = i < decay_len ? weight_decay : 0.0f;
        float p = params[i];
        p -= lr * ((mi / bias1) / (sqrtf(vi / bias2) + eps) + decay * p);
        params[i] = p;
        if (shadow) shadow[i] = f32_to_bf16(p);
    }
}
