// Token and position embeddings, and rotary positions.

// out[r, c] = table[ids[r], c]
extern "C" __global__ void embedding_forward(void* out, int out_bf, const u32* ids, const float* table, u64 cols, u64 n) {
    FOR_EACH(i, n) {
        u64 r = i / cols, c = i - r * cols;
        st(out, out_bf, i, table[(u64)ids[r] * cols + c]);
    }
}

// grads[ids[r], c] += dout[r, c]. Atomic: rows sharing a token meet here.
extern "C" __global__ void embedding_backward(float* grads, const void* dout, int dout_bf, const u32* ids, u64 cols, u64 n) {
    FOR_EACH(i, n) {
        u64 r = i / cols, c = i - r * cols;
        atomicAdd(&grads[(u64)ids[r] * cols + c], ld(dout, dout_bf, i));
    }
}

// x[b, t, c] += table[t, c]
extern "C" __global__ void learned_positions_forward(void* x, int x_bf, const float* table, u64 seq, u64 cols, u64 n) {
    FOR_EACH(i, n) {
        u64 tc = i % (seq * cols);
        st(x, x_bf, i, ld(x, x_bf, i) + table[tc]);
    }
}

// grads[t, c] += Σ_b dx[b, t, c], batches summed in order.
extern "C" __global__ void learned_positions_backward(float* grads, const void* dx, int dx_bf, u64 seq, u64 cols, u64 rows) {
    u64 per_seq = seq * cols, batch = rows / seq;
    FOR_EACH(tc, per_seq) {
        float s = 0.0f;
        for (u64 b = 0; b < batch; b++) s += ld(dx, dx_bf, b * per_seq + tc);
        grads[tc] += s;
    }
}

// The sinusoid of backend::sinusoid, in double like the reference.
__device__ __forceinline__ float sinusoid(u64 t, u64 c, u64 cols) {
    double i = (double)(c / 2);
    double angle = (double)t * pow(10000.0, -2.0 * i / (double)cols);
    return (float)((c % 2 == 0) ? sin(angle) : cos(angle));
}

// pe[t, c] = sinusoid(t, c) for t < seq: the one place the sinusoid is
// computed (in double, like the reference), so the kernels below read a
// float where they computed pow, sin and cos in double per element (0.95 ms
// of a crammed-bert step on an H100, for 0.2 ms of memory traffic).
extern "C" __global__ void sinusoid_table(float* pe, u64 seq, u64 cols) {
    FOR_EACH(j, seq * cols) {
        u64 t = j / cols;
        pe[j] = sinusoid(t, j - t * cols, cols);
    }
}

// V values a thread from element V·(thread index) on, grid-stride; I is the
// index type (32-bit where n fits: 64-bit remainders cost more than the
// memory traffic). `pe` repeats every per_seq elements of x.
template <int V, typename I>
__device__ __forceinline__ void add_sinusoid(void* x, int x_bf, const float* pe, float s, I per_seq, I n) {
    for (I i = (I)V * ((I)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += (I)V * gridDim.x * blockDim.x) {
        float v[V], p[V];
        ldv<V>(v, x, x_bf, i);
        ldv<V>(p, pe, 0, i % per_seq);
#pragma unroll
        for (int k = 0; k < V; k++) v[k] += s * p[k];
        stv<V>(x, x_bf, i, v);
    }
}

template <int V, typename I>
__device__ __forceinline__ float dot_sinusoid(const void* dx, int dx_bf, const float* pe, I per_seq, I n) {
    float s = 0.0f;
    for (I i = (I)V * ((I)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += (I)V * gridDim.x * blockDim.x) {
        float v[V], p[V];
        ldv<V>(v, dx, dx_bf, i);
        ldv<V>(p, pe, 0, i % per_seq);
#pragma unroll
        for (int k = 0; k < V; k++) s += v[k] * p[k];
    }
    return s;
}

// x[b, t, c] += scale · pe[t, c] (pe of sinusoid_table). vec4: four values a
// thread (per_seq a multiple of 4, x and pe 16-byte aligned); wide: 64-bit
// indices (the host sets it when n does not fit 31 bits).
extern "C" __global__ void sinusoidal_positions_forward(void* x, int x_bf, const float* pe, const float* scale, u64 per_seq, u64 n, int vec4, int wide) {
    float s = scale[0];
    if (wide) {
        if (vec4) add_sinusoid<4, u64>(x, x_bf, pe, s, per_seq, n);
        else add_sinusoid<1, u64>(x, x_bf, pe, s, per_seq, n);
    } else {
        if (vec4) add_sinusoid<4, u32>(x, x_bf, pe, s, (u32)per_seq, (u32)n);
        else add_sinusoid<1, u32>(x, x_bf, pe, s, (u32)per_seq, (u32)n);
    }
}

// partials[block] = Σ dx · pe over the block's grid-stride share; finished
// by finish_sum. vec4 and wide as in the forward.
extern "C" __global__ void sinusoidal_positions_backward(float* partials, const void* dx, int dx_bf, const float* pe, u64 per_seq, u64 n, int vec4, int wide) {
    __shared__ float shared[32];
    float s;
    if (wide) s = vec4 ? dot_sinusoid<4, u64>(dx, dx_bf, pe, per_seq, n) : dot_sinusoid<1, u64>(dx, dx_bf, pe, per_seq, n);
    else s = vec4 ? dot_sinusoid<4, u32>(dx, dx_bf, pe, (u32)per_seq, (u32)n) : dot_sinusoid<1, u32>(dx, dx_bf, pe, (u32)per_seq, (u32)n);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// table[t, i] = (cos, sin) of angle t·theta^(-2i/head_dim), in double as
// the reference computes it: the one place the angles are computed, so the
// rotation itself (below) reads two floats instead of computing pow, cos and
// sin in double per element (12 ms of a gpt-small step at seq 1024).
extern "C" __global__ void rotary_table(float2* table, u64 seq, u64 head_dim, float theta) {
    u64 half = head_dim / 2;
    FOR_EACH(j, seq * half) {
        u64 t = j / half, i = j % half;
        double freq = pow((double)theta, -2.0 * (double)i / (double)head_dim);
        double angle = (double)t * freq;
        table[j] = make_float2((float)cos(angle), (float)sin(angle));
    }
}

// Rotates q and k of qkv[rows, 3·hidden] in place, Llama's "rotate half":
// dimension i pairs with i + head_dim/2 at the angle of rotary_table.
// direction = +1 forward, -1 for the backward (the inverse rotation).
extern "C" __global__ void rotary(void* qkv, int qkv_bf, const float2* table, u64 seq, u64 heads, u64 head_dim, float direction, u64 rows) {
    u64 half = head_dim / 2, hidden = heads * head_dim;
    u64 n = rows * 2 * heads * half;  // (row, q|k, head, i)
    FOR_EACH(j, n) {
        u64 i = j % half, rest = j / half;
        u64 h = rest % heads; rest /= heads;
        u64 which = rest % 2, r = rest / 2;
        u64 t = r % seq;
        float2 angle = table[t * half + i];
        float cs = angle.x, sn = angle.y * direction;
        u64 base = r * 3 * hidden + which * hidden + h * head_dim;
        float a = ld(qkv, qkv_bf, base + i), b = ld(qkv, qkv_bf, base + i + half);
        st(qkv, qkv_bf, base + i, a * cs - b * sn);
        st(qkv, qkv_bf, base + i + half, b * cs + a * sn);
    }
}

// The same rotation, four pairs per thread: head_dim/2 a multiple of 4 and
// qkv 16-byte aligned (the host checks both), so each half's four values
// move in one access and their four (cos, sin) in two. Indices are 32-bit
// (the host checks n4 fits): the scalar kernel's 64-bit divisions cost more
// than its memory traffic.
extern "C" __global__ void rotary4(void* qkv, int qkv_bf, const float2* table, u32 seq, u32 heads, u32 head_dim, float direction, u32 n4) {
    u32 half = head_dim / 2, groups = half / 4, hidden = heads * head_dim;
    for (u32 j = blockIdx.x * blockDim.x + threadIdx.x; j < n4; j += gridDim.x * blockDim.x) {
        u32 i = (j % groups) * 4, rest = j / groups;
        u32 h = rest % heads;
        rest /= heads;
        u32 which = rest & 1, r = rest >> 1, t = r % seq;
        u64 base = (u64)r * 3 * hidden + which * hidden + h * head_dim;
        float a[4], b[4], x[4], y[4];
        ldv<4>(a, qkv, qkv_bf, base + i);
        ldv<4>(b, qkv, qkv_bf, base + i + half);
        const float4* angles = (const float4*)(table + (u64)t * half + i);
        float4 p01 = angles[0], p23 = angles[1];
        float cs[4] = {p01.x, p01.z, p23.x, p23.z};
        float sn[4] = {p01.y * direction, p01.w * direction, p23.y * direction, p23.w * direction};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            x[k] = a[k] * cs[k] - b[k] * sn[k];
            y[k] = b[k] * cs[k] + a[k] * sn[k];
        }
        stv<4>(qkv, qkv_bf, base + i, x);
        stv<4>(qkv, qkv_bf, base + i + half, y);
    }
}
