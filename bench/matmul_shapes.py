"""cuBLAS through PyTorch on each product of one gpt-small training step, one shape at a time.

`cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile` puts a step's
products at about 10.9 ms forward and 22.0 ms backward (bench/RESULTS.md, eighteenth session);
torch.compile's own step runs its cuBLAS kernels in about 9.5 + 19.9 ms. This script times the
products cram's step makes, shape by shape, as plain torch.mm calls on the same GPU, so that the
two sets of numbers say whether cram's choice of algorithm (or its epilogues and f32 weight
gradients) costs the difference, or whether torch.compile's step makes other products:

    python3 bench/matmul_shapes.py            # beside CRAM_MATMUL_TUNE=report cram bench ...

(`bench/matmul_compare.py` sets the two outputs side by side, product by product.)

Products, with cram's names (`RowMajor`): forward ABt (x · Wᵀ), backward AB (dX = dY · W) and
AtB (dW = dYᵀ · X), for QKV, the attention output, SwiGLU's up and down projections (12 layers)
and the tied LM head in 8 chunks of 4,096 rows, as `cram bench` runs them. Weight gradients are
timed with bf16 output (torch.mm's) and, where this torch has `out_dtype`, with f32 output as
cram writes them. One JSON line per product, then the totals a step.
"""
import json

import torch

DEV = "cuda"
TOKENS, D, FF, VOCAB, LAYERS = 32 * 1024, 768, 2048, 32768, 12
HEAD_CHUNKS = 8
REPS = 20

# (name, rows, inputs, outputs, calls a step)
LINEARS = [
    ("qkv", TOKENS, D, 3 * D, LAYERS),
    ("attn_out", TOKENS, D, D, LAYERS),
    ("up", TOKENS, D, 2 * FF, LAYERS),
    ("down", TOKENS, FF, D, LAYERS),
    ("head", TOKENS // HEAD_CHUNKS, D, VOCAB, HEAD_CHUNKS),
]
# Not in the totals: the head in fewer, larger chunks (as torch.compile runs it, in one), to
# tell what cram's 4,096-row chunks cost.
HEAD_ALTERNATIVES = [
    ("head_2_chunks", TOKENS // 2, D, VOCAB, 2),
    ("head_whole", TOKENS, D, VOCAB, 1),
]
# Products whose output cram's epilogue adds to the residual stream (beta 1, bf16 C = D).
RESIDUAL_ADDS = {"attn_out", "down"}


def timed(f):
    """Mean milliseconds of f() over REPS runs after two warm-up runs."""
    for _ in range(2):
        f()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPS):
        f()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / REPS


def f32_out_mm():
    """torch.mm with an f32 result from bf16 operands, where this torch has it."""
    a = torch.randn(64, 64, device=DEV, dtype=torch.bfloat16)
    try:
        torch.mm(a, a, out_dtype=torch.float32)
        return lambda x, y: torch.mm(x, y, out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return None


def main():
    mm32 = f32_out_mm()
    totals = {"forward": 0.0, "backward_dx": 0.0, "backward_dw_bf16": 0.0, "backward_dw_f32": 0.0}
    for name, m, k, n, calls in LINEARS + HEAD_ALTERNATIVES:
        x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=DEV, dtype=torch.bfloat16)
        dy = torch.randn(m, n, device=DEV, dtype=torch.bfloat16)
        row = {"product": name, "m": m, "k": k, "n": n, "calls": calls}
        row["forward_ms"] = timed(lambda: x @ w.t())
        if name in RESIDUAL_ADDS:
            resid = torch.randn(m, n, device=DEV, dtype=torch.bfloat16)
            row["forward_add_ms"] = timed(lambda: torch.addmm(resid, x, w.t()))
        row["dx_ms"] = timed(lambda: dy @ w)
        row["dw_bf16_ms"] = timed(lambda: dy.t() @ x)
        if mm32:
            row["dw_f32_ms"] = timed(lambda: mm32(dy.t(), x))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        if name.startswith("head_"):
            continue
        totals["forward"] += calls * row["forward_ms"]
        totals["backward_dx"] += calls * row["dx_ms"]
        totals["backward_dw_bf16"] += calls * row["dw_bf16_ms"]
        totals["backward_dw_f32"] += calls * row.get("dw_f32_ms", float("nan"))
    totals = {k: round(v, 3) for k, v in totals.items()}
    totals["backward_bf16"] = round(totals["backward_dx"] + totals["backward_dw_bf16"], 3)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "blas": str(torch.backends.cuda.preferred_blas_library()),
                      "ms_a_step": totals}))


if __name__ == "__main__":
    main()
