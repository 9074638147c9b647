# FP8 against bf16 products at the benchmark shapes (torch._scaled_mm, cuBLASLt underneath):
# what FP8 could buy cram, product by product, and what a cast and an amax cost in torch.
# Times in ms, CUDA events, median of 20. On the GPU machine: python3 bench/fp8_probe.py
# (eleventh session's figures are in bench/RESULTS.md).
import torch
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
def t(f, n=20):
    for _ in range(3): f()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for a, b in ev:
        a.record(); f(); b.record()
    torch.cuda.synchronize()
    return sorted(a.elapsed_time(b) for a, b in ev)[n // 2]
shapes = {  # (rows m, in k, out n)
  "gpt qkv": (32768, 768, 2304), "gpt proj": (32768, 768, 768), "gpt up(2x2048)": (32768, 768, 4096),
  "gpt down": (32768, 2048, 768), "gpt head chunk": (4096, 768, 32768),
  "bert ffn in": (32768, 768, 6144), "bert ffn out": (32768, 3072, 768),
}
one = torch.ones((), device=dev)
for name, (m, k, n) in shapes.items():
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    dy = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    bf = t(lambda: x @ w.t())
    xf, wf = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
    f8 = t(lambda: torch._scaled_mm(xf, wf.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True))
    # dX = dY · W: dY e5m2 [m, n] row-major, W needs [n, k] as column-major k-by-n, i.e. Wᵀ stored.
    dyf = dy.to(torch.float8_e5m2); wt = w.t().contiguous().to(torch.float8_e4m3fn)
    bfdx = t(lambda: dy @ w)
    f8dx = t(lambda: torch._scaled_mm(dyf, wt.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True))
    cast = t(lambda: x.to(torch.float8_e4m3fn))
    amax = t(lambda: x.abs().amax())
    fl = 2 * m * k * n / 1e9
    print(f"{name:16s} bf16 {bf:6.3f} ms ({fl/bf:5.0f} TF)  fp8 {f8:6.3f} ({fl/f8:5.0f} TF)  dX bf16 {bfdx:6.3f} fp8 {f8dx:6.3f}  cast x {cast:6.3f} amax {amax:6.3f}")
