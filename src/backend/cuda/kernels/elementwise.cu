// Element-wise ops. Backwards overwrite their input gradient (the `=` rule).

extern "C" __global__ void convert(void* out, int out_bf, const void* inp, int inp_bf, u64 n) {
    FOR_EACH(i, n) st(out, out_bf, i, ld(inp, inp_bf, i));
}

// n is a multiple of 4 (the host's `add` falls back to `add_scalar`).
extern "C" __global__ void add(void* out, int out_bf, const void* a, int a_bf, const void* b, int b_bf, u64 n) {
    FOR_EACH4(i, n) {
        float x[4], y[4];
        ldv<4>(x, a, a_bf, i);
        ldv<4>(y, b, b_bf, i);
        for (int k = 0; k < 4; k++) x[k] += y[k];
        stv<4>(out, out_bf, i, x);
    }
}

extern "C" __global__ void add_scalar(void* out, int out_bf, const void* a, int a_bf, const void* b, int b_bf, u64 n) {
    FOR_EACH(i, n) st(out, out_bf, i, ld(a, a_bf, i) + ld(b, b_bf, i));
}

extern "C" __global__ void activation_forward(void* out, int out_bf, const void* inp, int inp_bf, int act, u64 n) {
    FOR_EACH(i, n) st(out, out_bf, i, act_fwd(act, ld(inp, inp_bf, i)));
}

extern "C" __global__ void activation_backward(void* dinp, int dinp_bf, const void* dout, int dout_bf,
                                               const void* inp, int inp_bf, int act, u64 n) {
    FOR_EACH(i, n) st(dinp, dinp_bf, i, ld(dout, dout_bf, i) * act_grad(act, ld(inp, inp_bf, i)));
}

// inp[rows, 2·half] = value | gate; out[rows, half] = value · act(gate).
// Row and column come from a 32-bit division (n < 2³² is checked on the
// host): a 64-bit one costs more than the rest of the element's work.
// V values per thread: 8 (16-byte bf16 accesses) when half is a multiple of
// 8, 4 when of 4, so that a group never straddles a row; else 1.
template <int V>
__device__ void glu_forward_impl(void* out, int out_bf, const void* inp, int inp_bf, int act, u64 half, u64 n) {
    for (u64 i = V * ((u64)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += V * (u64)gridDim.x * blockDim.x) {
        u64 r = (u32)i / (u32)half, c = i - r * half;
        float value[V], gate[V];
        ldv<V>(value, inp, inp_bf, r * 2 * half + c);
        ldv<V>(gate, inp, inp_bf, r * 2 * half + half + c);
        for (int k = 0; k < V; k++) value[k] *= act_fwd(act, gate[k]);
        stv<V>(out, out_bf, i, value);
    }
}

template <int V>
__device__ void glu_backward_impl(void* dinp, int dinp_bf, const void* dout, int dout_bf, const void* inp,
                                  int inp_bf, int act, u64 half, u64 n) {
    for (u64 i = V * ((u64)blockIdx.x * blockDim.x + threadIdx.x); i < n; i += V * (u64)gridDim.x * blockDim.x) {
        u64 r = (u32)i / (u32)half, c = i - r * half;
        u64 vi = r * 2 * half + c, gi = vi + half;
        float value[V], gate[V], d[V], dv[V], dg[V];
        ldv<V>(value, inp, inp_bf, vi);
        ldv<V>(gate, inp, inp_bf, gi);
        ldv<V>(d, dout, dout_bf, i);
        for (int k = 0; k < V; k++) {
            dv[k] = d[k] * act_fwd(act, gate[k]);
            dg[k] = d[k] * value[k] * act_grad(act, gate[k]);
        }
        stv<V>(dinp, dinp_bf, vi, dv);
        stv<V>(dinp, dinp_bf, gi, dg);
    }
}

extern "C" __global__ void glu_forward8(void* out, int out_bf, const void* inp, int inp_bf, int act, u64 half, u64 n) {
    glu_forward_impl<8>(out, out_bf, inp, inp_bf, act, half, n);
}
extern "C" __global__ void glu_forward(void* out, int out_bf, const void* inp, int inp_bf, int act, u64 half, u64 n) {
    glu_forward_impl<4>(out, out_bf, inp, inp_bf, act, half, n);
}
extern "C" __global__ void glu_forward_scalar(void* out, int out_bf, const void* inp, int inp_bf, int act, u64 half,
                                              u64 n) {
    glu_forward_impl<1>(out, out_bf, inp, inp_bf, act, half, n);
}
extern "C" __global__ void glu_backward8(void* dinp, int dinp_bf, const void* dout, int dout_bf, const void* inp,
                                        int inp_bf, int act, u64 half, u64 n) {
    glu_backward_impl<8>(dinp, dinp_bf, dout, dout_bf, inp, inp_bf, act, half, n);
}
extern "C" __global__ void glu_backward(void* dinp, int dinp_bf, const void* dout, int dout_bf, const void* inp,
                                        int inp_bf, int act, u64 half, u64 n) {
    glu_backward_impl<4>(dinp, dinp_bf, dout, dout_bf, inp, inp_bf, act, half, n);
}
extern "C" __global__ void glu_backward_scalar(void* dinp, int dinp_bf, const void* dout, int dout_bf,
                                               const void* inp, int inp_bf, int act, u64 half, u64 n) {
    glu_backward_impl<1>(dinp, dinp_bf, dout, dout_bf, inp, inp_bf, act, half, n);
}

// Inverted dropout with the backend-independent mask; the backward is the
// same map applied to the gradient.
extern "C" __global__ void dropout(void* out, int out_bf, const void* inp, int inp_bf, float p, u64 seed, u64 n) {
    float scale = 1.0f / (1.0f - p);
    FOR_EACH(i, n) st(out, out_bf, i, dropout_keep(seed, i, p) ? ld(inp, inp_bf, i) * scale : 0.0f);
}

// out[r, c] += bias[c] (f32 master values).
extern "C" __global__ void add_bias(void* out, int out_bf, const float* bias, u64 cols, u64 n) {
    FOR_EACH(i, n) st(out, out_bf, i, ld(out, out_bf, i) + bias[i % cols]);
}

// grads[c] += Σ_r dout[r, c]; one thread per column, rows walked in order
// (deterministic; biases are small and off the crammed path).
extern "C" __global__ void bias_backward(float* grads, const void* dout, int dout_bf, u64 rows, u64 cols) {
    FOR_EACH(c, cols) {
        float s = 0.0f;
        for (u64 r = 0; r < rows; r++) s += ld(dout, dout_bf, r * cols + c);
        grads[c] += s;
    }
}
