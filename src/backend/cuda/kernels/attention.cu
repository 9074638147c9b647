// The parts of attention around cuBLASLt's batched matmuls: q|k|v are
// permuted from the packed [batch, seq, 3, heads, head_dim] rows into
// [3][batch·heads, seq, head_dim] (bf16), the softmax turns f32 scores into
// bf16 probabilities (kept for the backward), and the output is permuted back.

// dst[which][b·heads + h][t][d] = qkv[b·seq + t][which·hidden + h·head_dim + d]
extern "C" __global__ void qkv_to_heads(bf16_t* dst, const void* qkv, int qkv_bf, u64 batch, u64 seq, u64 heads, u64 head_dim) {
    u64 hidden = heads * head_dim, rows = batch * seq, n = 3 * rows * hidden;
    FOR_EACH(i, n) {
        u64 d = i % head_dim, rest = i / head_dim;
        u64 t = rest % seq; rest /= seq;
        u64 h = rest % heads; rest /= heads;
        u64 b = rest % batch, which = rest / batch;
        u64 src = (b * seq + t) * 3 * hidden + which * hidden + h * head_dim + d;
        dst[i] = f32_to_bf16(ld(qkv, qkv_bf, src));
    }
}

// The inverse: dqkv[b·seq + t][which·hidden + h·head_dim + d] = src[which][b·heads + h][t][d].
extern "C" __global__ void heads_to_qkv(void* dqkv, int dqkv_bf, const bf16_t* src, u64 batch, u64 seq, u64 heads, u64 head_dim) {
    u64 hidden = heads * head_dim, rows = batch * seq, n = 3 * rows * hidden;
    FOR_EACH(i, n) {
        u64 c = i % (3 * hidden), r = i / (3 * hidden);
        u64 which = c / hidden, hc = c % hidden;
        u64 h = hc / head_dim, d = hc % head_dim;
        u64 b = r / seq, t = r % seq;
        u64 s = ((which * batch + b) * heads + h) * seq * head_dim + t * head_dim + d;
        st(dqkv, dqkv_bf, i, bf16_to_f32(src[s]));
    }
}

// out[b·seq + t][h·head_dim + d] = o[b·heads + h][t][d]
extern "C" __global__ void heads_to_rows(void* out, int out_bf, const bf16_t* o, u64 batch, u64 seq, u64 heads, u64 head_dim) {
    u64 hidden = heads * head_dim, n = batch * seq * hidden;
    FOR_EACH(i, n) {
        u64 c = i % hidden, r = i / hidden;
        u64 h = c / head_dim, d = c % head_dim;
        u64 b = r / seq, t = r % seq;
        st(out, out_bf, i, bf16_to_f32(o[((b * heads + h) * seq + t) * head_dim + d]));
    }
}

// The inverse, for the output gradient: do[b·heads + h][t][d] = dout[b·seq + t][h·head_dim + d].
extern "C" __global__ void rows_to_heads(bf16_t* dst, const void* dout, int dout_bf, u64 batch, u64 seq, u64 heads, u64 head_dim) {
    u64 hidden = heads * head_dim, n = batch * seq * hidden;
    FOR_EACH(i, n) {
        u64 d = i % head_dim, rest = i / head_dim;
        u64 t = rest % seq; rest /= seq;
        u64 h = rest % heads, b = rest / heads;
        dst[i] = f32_to_bf16(ld(dout, dout_bf, (b * seq + t) * hidden + h * head_dim + d));
    }
}

// probs[row] = softmax(scores[row]) over `seq` columns, one warp per row;
// with `causal`, row t of each matrix sees columns 0..=t only.
extern "C" __global__ void attention_softmax(bf16_t* probs, const float* scores, u64 rows, u64 seq, int causal) {
    u64 r = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    u64 t = r % seq, limit = causal ? t + 1 : seq;
    const float* s = scores + r * seq;
    float m = NEG_INF;
    for (u64 j = lane; j < limit; j += 32) m = fmaxf(m, s[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (u64 j = lane; j < limit; j += 32) sum += __expf(s[j] - m);
    float inv = 1.0f / warp_sum(sum);
    for (u64 j = lane; j < seq; j += 32) probs[r * seq + j] = f32_to_bf16(j < limit ? __expf(s[j] - m) * inv : 0.0f);
}

// ds = p ⊙ (dp − Σ_j dp·p) · scale, the softmax backward folded with the
// 1/√d of the scores; in place over the f32 dp, written as bf16.
extern "C" __global__ void attention_softmax_backward(bf16_t* ds, const float* dp, const bf16_t* probs, u64 rows, u64 seq, float scale) {
    u64 r = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float* g = dp + r * seq;
    const bf16_t* p = probs + r * seq;
    float dot = 0.0f;
    for (u64 j = lane; j < seq; j += 32) dot += g[j] * bf16_to_f32(p[j]);
    dot = warp_sum(dot);
    for (u64 j = lane; j < seq; j += 32) ds[r * seq + j] = f32_to_bf16(bf16_to_f32(p[j]) * (g[j] - dot) * scale);
}
