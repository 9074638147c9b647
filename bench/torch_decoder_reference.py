"""Throughput of the gpt-small preset's shape in PyTorch (the decoder reference that
`cram bench --preset gpt-small --seq-len 1024 --micro-batch 32` is measured against).

A Llama-style causal decoder of the preset's exact shape: 12 layers x 768, 12 heads,
pre-RMSNorm, SwiGLU feed-forward (768 -> 2x2048 -> 768), rotary positions, no biases,
tied embeddings, vocabulary 32768, full next-token loss. bf16 autocast, causal SDPA
(flash attention), fused AdamW (beta 0.9/0.95, weight decay 0.1), clip 1.0, and
torch.compile by default (`eager` as an argument compares without it).

    SEQ=1024 MB=32 STEPS=30 python3 bench/torch_decoder_reference.py [compile] [eager] [profile]

`profile` runs the compiled model's steps under torch.profiler instead and prints its
GPU kernels by time a step (to compare op by op with `cram bench --profile`).

Prints one JSON line per variant: tokens/s, step time, MFU against a dense bf16
matmul measured on the same GPU, with the FLOP count cram's bench uses
(`Model::flops_per_token`: 6 x weights + 12 x seq x hidden per layer, full head).
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = True
DEV = "cuda"
SEQ = int(os.environ.get("SEQ", 1024))
MB = int(os.environ.get("MB", 32))
STEPS = int(os.environ.get("STEPS", 30))
VOCAB, D, LAYERS, HEADS, FF = 32768, 768, 12, 12, 2048


def matmul_peak():
    a = torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    n = 20
    for _ in range(n):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - t)


def rotary(seq, dim, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, device=DEV).float() / dim)
    ang = torch.outer(torch.arange(seq, device=DEV).float(), inv)
    return ang.cos(), ang.sin()


def apply_rotary(x, cos, sin):
    # x: (B, H, T, hd); rotate the two halves of each head (the GPT-NeoX layout).
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1 = nn.RMSNorm(D, eps=1e-5)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.out = nn.Linear(D, D, bias=False)
        self.n2 = nn.RMSNorm(D, eps=1e-5)
        self.up = nn.Linear(D, 2 * FF, bias=False)
        self.down = nn.Linear(FF, D, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, D))
        gate, value = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * value)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.RMSNorm(D, eps=1e-5)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        cos, sin = rotary(SEQ, D // HEADS)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids, targets):
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        logits = self.norm(x) @ self.emb.weight.t()  # tied head
        return F.cross_entropy(logits.float().view(-1, VOCAB), targets.view(-1))


def flops_per_token():
    weights = 3 * D * D + D * D + D * 2 * FF + FF * D
    per_layer = 2 * weights + 2 * 2 * SEQ * D
    return 3 * (LAYERS * per_layer + 2 * D * VOCAB)


def run(name, model, peak, profile=False):
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    ids = torch.randint(0, VOCAB, (MB, SEQ + 1), device=DEV)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(5):  # compile and warm up
        step()
    torch.cuda.synchronize()
    if profile:
        print_kernels(step)
        return
    t = time.perf_counter()
    for _ in range(STEPS):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / STEPS
    tps = MB * SEQ / dt
    print(json.dumps(dict(name=name, seq=SEQ, mb=MB, step_ms=round(dt * 1e3, 2), tokens_per_s=round(tps),
                          mfu=round(tps * flops_per_token() / peak, 4),
                          mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2), loss=float(loss))), flush=True)


def print_kernels(step, steps=5, top=40):
    """Each GPU kernel's time a step over `steps` profiled steps, longest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    def gpu_us(e):  # the name changed from cuda_time_total in torch 2.4
        return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)

    events = [e for e in prof.key_averages() if gpu_us(e) > 0]
    events.sort(key=lambda e: -gpu_us(e))
    total = sum(gpu_us(e) for e in events) / steps / 1e3
    print(f"gpu kernels, ms a step: {total:.2f} in all")
    for e in events[:top]:
        ms = gpu_us(e) / steps / 1e3
        print(f"{ms:8.3f} ms  {e.count // steps:4d} calls  {e.key[:110]}")


if __name__ == "__main__":
    peak = matmul_peak()
    print(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                          matmul_peak_tflops=round(peak / 1e12, 1))), flush=True)
    for variant in sys.argv[1:] or ["compile"]:
        torch.cuda.reset_peak_memory_stats()
        model = Decoder().to(DEV)
        compiled = torch.compile(model) if variant in ("compile", "profile") else model
        run("gpt_small_" + variant, compiled, peak, profile=variant == "profile")
        del model
        torch.cuda.empty_cache()
