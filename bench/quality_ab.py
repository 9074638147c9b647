"""The PyTorch side of the quality A/B (bench/quality_ab.sh): the Cramming recipe of
../shared/bench/quality_reference.py, reading the masked sequence stream that
`cram data stream` writes, so that it trains on the same tokens, in the same order,
with the same masks as `cram pretrain`, and an evaluation that scores any checkpoint
(cram's or this script's) on one held-out stream with one rule.

    python3 bench/quality_ab.py train --stream S --out DIR (--budget-s 300 | --steps N) [options]
    python3 bench/quality_ab.py eval --stream V --weights model.safetensors [--weights ...]
    python3 bench/quality_ab.py compare A/metrics.jsonl B/metrics.jsonl [--by step|elapsed]

`train` writes DIR/metrics.jsonl (one line per optimizer step: step, elapsed, lr,
batch_size, loss, grad_norm, tokens) and DIR/model.safetensors under cram's tensor
names, so that `eval` reads both with one loader. `--init` starts from a cram
checkpoint's weights (its step 0, say) to compare the two curves from one start.

The model mirrors cram's crammed-bert tensor for tensor (the layout of
src/export/hf/modeling_crammed.py): ffn.in's first half of rows is the value and the
second the gate, q|k|v rows in that order, pe[t, 2i] = sin, pe[t, 2i+1] = cos.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def load_stream(folder, device):
    info = json.load(open(os.path.join(folder, "stream.json")))
    dtype = {"u16": np.uint16, "u32": np.uint32}[info["dtype"]]
    shape = (info["sequences"], info["seq_len"])

    def read(name):
        raw = np.fromfile(os.path.join(folder, name), dtype=dtype).reshape(shape)
        return torch.from_numpy(raw.astype(np.int32)).to(device)

    return info, read("inputs.bin"), read("targets.bin")


class LayerNorm(nn.Module):
    def __init__(s, d, eps):
        super().__init__()
        s.weight, s.eps = nn.Parameter(torch.ones(d)), eps

    def forward(s, x):
        return F.layer_norm(x, x.shape[-1:], s.weight, None, s.eps)


class Linear(nn.Module):
    def __init__(s, rows, cols):
        super().__init__()
        s.weight = nn.Parameter(torch.empty(rows, cols))

    def forward(s, x):
        return x @ s.weight.t()


class Attention(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h, s.qkv, s.out = h, Linear(3 * d, d), Linear(d, d)

    def forward(s, x):
        B, T, D = x.shape
        q, k, v = s.qkv(x).view(B, T, 3, s.h, D // s.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        return s.out(a.transpose(1, 2).reshape(B, T, D))


class Ffn(nn.ModuleDict):
    def __init__(s, d, ff):
        super().__init__({"in": Linear(ff, d), "out": Linear(d, ff // 2)})

    def forward(s, x):
        value, gate = s["in"](x).chunk(2, dim=-1)
        return s["out"](value * F.gelu(gate))


class Block(nn.Module):
    def __init__(s, d, h, ff, eps):
        super().__init__()
        s.attn_norm, s.attn = LayerNorm(d, eps), Attention(d, h)
        s.ffn_norm, s.ffn = LayerNorm(d, eps), Ffn(d, ff)

    def forward(s, x):
        x = x + s.attn(s.attn_norm(x))
        return x + s.ffn(s.ffn_norm(x))


class Embeddings(nn.Module):
    def __init__(s, vocab, d, seq, eps):
        super().__init__()
        s.word = nn.Embedding(vocab, d)
        s.position = nn.Module()
        s.position.scale = nn.Parameter(torch.tensor([1.0 / math.sqrt(d)]))
        s.norm = LayerNorm(d, eps)
        t = torch.arange(seq, dtype=torch.float64)[:, None]
        col = torch.arange(d)
        angle = t * 10000.0 ** (-2.0 * (col // 2).double() / d)
        s.register_buffer("pe", torch.where(col % 2 == 0, angle.sin(), angle.cos()).float(), persistent=False)

    def forward(s, ids):
        return s.norm(s.word(ids) + s.position.scale * s.pe[: ids.shape[1]])


class Cram(nn.Module):
    def __init__(s, a, vocab, seq):
        super().__init__()
        s.embeddings = Embeddings(vocab, a.hidden, seq, a.norm_eps)
        s.layers = nn.ModuleList(Block(a.hidden, a.heads, a.ffn, a.norm_eps) for _ in range(a.layers))
        s.final_norm = LayerNorm(a.hidden, a.norm_eps)
        for p in s.parameters():
            if p.dim() == 2:
                nn.init.trunc_normal_(p, std=a.init_std, a=-2 * a.init_std, b=2 * a.init_std) if a.truncate \
                    else nn.init.normal_(p, std=a.init_std)

    def forward(s, ids, targets):
        x = s.embeddings(ids)
        for b in s.layers:
            x = b(x)
        x = s.final_norm(x)
        t = targets.reshape(-1)
        sel = t != 0
        logits = x.reshape(-1, x.shape[-1])[sel] @ s.embeddings.word.weight.t()
        y = t[sel].long()
        return F.cross_entropy(logits.float(), y), logits, y


def build(a, info, device):
    model = Cram(a, info["vocab_size"], info["seq_len"]).to(device)
    if a.init:
        load_weights(model, a.init)
    return model


def load_weights(model, path):
    state = {k: v.float() for k, v in load_file(path).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: missing {missing}, unexpected {unexpected}: not a crammed-bert of this shape")


def schedules(a, frac):
    """Learning rate and batch size at budget fraction `frac`, by the reference's rules
    (or cram's batch ramp, `--ramp-rule cram`, to take that difference out)."""
    lr = a.lr * (frac / a.warmup if frac < a.warmup else max(0.0, 1 - frac) / (1 - a.warmup))
    ramp = min(1.0, frac / a.ramp) if a.ramp > 0 else 1.0
    full = a.batch_size // a.micro_batch
    if a.ramp_rule == "cram":
        micros = 1 + round((full - 1) * ramp)
    else:
        micros = max(1, round(ramp * a.batch_size / a.micro_batch))
    return lr, micros


def train(a):
    torch.manual_seed(a.seed)
    device = a.device
    info, inputs, targets = load_stream(a.stream, device)
    model = build(a, info, device)
    run = torch.compile(model) if a.compile else model
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=a.weight_decay), dict(params=other, weight_decay=0.0)],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-12, fused=device == "cuda")
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=a.bf16)
    n = inputs.shape[0]
    if a.compile:  # compilation outside the budget, as in the reference
        with amp:
            run(inputs[: a.micro_batch], targets[: a.micro_batch])[0].backward()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    start, pos, step, tokens, wrapped = time.time(), 0, 0, 0, False
    while True:
        frac = (time.time() - start) / a.budget_s if a.budget_s else step / a.steps
        if frac >= 1.0:
            break
        lr, micros = schedules(a, frac)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for _ in range(micros):
            if pos + a.micro_batch > n:
                pos, wrapped = 0, True
            with amp:
                loss = run(inputs[pos:pos + a.micro_batch], targets[pos:pos + a.micro_batch])[0] / micros
            loss.backward()
            loss_sum += loss.detach()
            pos += a.micro_batch
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += micros * a.micro_batch * info["seq_len"]
        if step % a.log_every == 0:
            log.write(json.dumps(dict(event="train", step=step, elapsed=round(time.time() - start, 3), lr=lr,
                                      batch_size=micros * a.micro_batch, loss=float(loss_sum),
                                      grad_norm=float(norm), tokens=tokens)) + "\n")
            log.flush()
    if wrapped:
        print(f"warning: the stream's {n} sequences ran out and were read again; write a longer one", file=sys.stderr)
    elapsed = time.time() - start
    save_file({k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()},
              os.path.join(a.out, "model.safetensors"))
    summary = dict(result="torch-reference", steps=step, tokens=tokens, seconds=round(elapsed, 1),
                   tokens_per_s=round(tokens / elapsed))
    print(json.dumps(summary), flush=True)


@torch.no_grad()
def evaluate(a):
    info, inputs, targets = load_stream(a.stream, a.device)
    if not info["mask_all"]:
        sys.exit(f"{a.stream} is a training stream; write the held-out one with `cram data stream --split val`")
    for path in a.weights:
        model = build(a, info, a.device)
        load_weights(model, path)
        model.eval()
        total, count, correct = 0.0, 0, 0
        for i in range(0, inputs.shape[0], a.micro_batch):
            loss, logits, y = model(inputs[i:i + a.micro_batch], targets[i:i + a.micro_batch])
            total += float(loss) * len(y)
            count += len(y)
            correct += int((logits.argmax(-1) == y).sum())
        print(json.dumps(dict(result="eval", weights=path, sequences=inputs.shape[0], predictions=count,
                              val_mlm_loss=round(total / count, 4), val_mlm_acc=round(correct / count, 4))),
              flush=True)


def compare(a):
    """Two metrics.jsonl files (cram's or this script's) side by side, at matching steps
    or matching seconds: where do the curves part?"""
    runs = [[r for r in map(json.loads, open(f)) if r.get("event", "train") == "train"] for f in a.metrics]
    key = a.by
    last = min(run[-1][key] for run in runs)
    marks = sorted({round(last * i / a.rows, 1 if key == "elapsed" else 0) for i in range(1, a.rows + 1)})
    print(f"{key:>8}  " + "  ".join(f"{'step':>5} {'batch':>5} {'loss':>6} {'lr':>8} {'|g|':>6}" for _ in runs))
    for m in marks:
        cells = []
        for run in runs:
            r = min(run, key=lambda r: abs(r[key] - m))
            cells.append(f"{r['step']:>5} {r['batch_size']:>5} {r['loss']:>6.3f} {r['lr']:>8.2e} {r['grad_norm']:>6.2f}")
        print(f"{m:>8}  " + "  ".join(cells))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["train", "eval", "compare"])
    p.add_argument("metrics", nargs="*", help="compare: metrics.jsonl files")
    p.add_argument("--by", choices=["step", "elapsed"], default="elapsed", help="compare: align on this")
    p.add_argument("--rows", type=int, default=15, help="compare: rows to print")
    p.add_argument("--stream", help="a folder written by `cram data stream`")
    p.add_argument("--out", help="train: the folder for metrics.jsonl and model.safetensors")
    p.add_argument("--weights", action="append", default=[], help="eval: a model.safetensors (repeatable)")
    p.add_argument("--init", help="train: start from these weights (a cram checkpoint's model.safetensors)")
    p.add_argument("--budget-s", type=float, default=0.0, help="wall-clock budget; schedules follow the clock")
    p.add_argument("--steps", type=int, default=0, help="or a budget in optimizer steps")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=3072)
    p.add_argument("--norm-eps", type=float, default=1e-5, help="the reference's nn.LayerNorm default")
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--truncate", action="store_true", help="truncated normal at 2 std instead of plain normal")
    p.add_argument("--micro-batch", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4032)
    p.add_argument("--ramp", type=float, default=0.75, help="budget fraction at which the batch is full")
    p.add_argument("--ramp-rule", choices=["reference", "cram"], default="reference")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    a = p.parse_args()
    if a.mode == "compare":
        if len(a.metrics) < 2:
            sys.exit("compare needs two or more metrics.jsonl files")
        return compare(a)
    if not a.stream:
        sys.exit(f"{a.mode} needs --stream")
    if a.device == "cpu":
        a.compile = False
        a.bf16 = False
    if a.mode == "train":
        if not a.out or (a.budget_s > 0) == (a.steps > 0):
            sys.exit("train needs --out and one of --budget-s or --steps")
        train(a)
    else:
        if not a.weights:
            sys.exit("eval needs --weights")
        evaluate(a)


if __name__ == "__main__":
    main()
