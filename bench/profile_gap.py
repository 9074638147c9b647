#!/usr/bin/env python3
"""Where a step's time goes in cram and in torch.compile, side by side, by kind of work.

    python3 bench/profile_gap.py CRAM_PROFILE TORCH_PROFILE

CRAM_PROFILE is the output of `cram bench ... --profile` (one JSON line per op with its
ms a step); TORCH_PROFILE is the output of `bench/torch_decoder_reference.py profile`
(torch.profiler's GPU kernels, "<ms> ms <calls> calls <name>" a line). Both sides are
sorted into the same kinds (matmul, attention, norm, activation, loss, optimizer,
other) by op or kernel name, and the table shows each kind's ms a step and cram minus
torch: the kinds where cram is behind are the ones to work on. Names that match no rule
land in "other" and are listed, so that a new kernel does not hide in a total.
"""
import re
import sys

from profile_ab import read as read_ops  # one reader of `cram bench --profile` output

# cram's op names (the per-op profile's "op") by kind.
CRAM_KINDS = {
    "matmul": r"^matmul",
    "attention": r"^attention|^rotary",
    "norm": r"^norm|^layernorm|^rmsnorm",
    "activation": r"^glu|^activation|^gelu|^silu|^add|^dropout",
    "loss": r"^cross_entropy|^gather|^scatter",
    "optimizer": r"^adamw|^grad_norm|^sum_into|^clip",
    "embedding": r"^embedding|^positions",
}

# torch.compile's kernel names by kind (cuBLAS, cuDNN, Triton's fused names, ATen).
TORCH_KINDS = {
    "matmul": r"nvjet|gemm|cutlass|splitKreduce|sm90_xmma|ampere_.*gemm",
    "attention": r"sdpa|flash|fmha|attention|dot_do_o|convert_dq|rotary|cat_mul.*permute|neg_slice|select_backward|add_clone_permute",
    "norm": r"rms_norm|layer_norm",
    "activation": r"silu|gelu|glu",
    "loss": r"softmax|nll_loss|cross_entropy",
    "optimizer": r"FusedOpti|multi_tensor_apply|reduce_kernel|adam",
    "embedding": r"embedding",
}
ORDER = ["matmul", "attention", "norm", "activation", "loss", "optimizer", "embedding", "other"]


def kind_of(name, rules):
    for kind, pattern in rules.items():
        if re.search(pattern, name):
            return kind
    return "other"


def read_cram(path):
    """{kind: ms a step}, the step time, and the ops that matched no kind."""
    ops, step = read_ops(path)
    kinds, other = {}, []
    for op, ms in ops.items():
        kind = kind_of(op, CRAM_KINDS)
        kinds[kind] = kinds.get(kind, 0.0) + ms
        if kind == "other":
            other.append(op)
    return kinds, step, other


def read_torch(path):
    """{kind: ms a step}, the kernels' total, and the kernels that matched no kind."""
    kinds, other, total = {}, [], None
    for line in open(path):
        m = re.match(r"\s*([\d.]+) ms\s+\d+ calls\s+(.*)", line)
        if m:
            ms, name = float(m.group(1)), m.group(2).strip()
            kind = kind_of(name, TORCH_KINDS)
            kinds[kind] = kinds.get(kind, 0.0) + ms
            if kind == "other":
                other.append(name)
        t = re.search(r"ms a step: ([\d.]+) in all", line)
        if t:
            total = float(t.group(1))
    return kinds, total, other


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cram, step, cram_other = read_cram(sys.argv[1])
    torch, total, torch_other = read_torch(sys.argv[2])
    if not cram or not torch:
        sys.exit("no ops found: give a `cram bench --profile` output, then a torch profile")
    print(f"{'kind':<11} {'cram':>8} {'torch':>8} {'cram-torch':>11}   (ms a step)")
    for kind in ORDER:
        c, t = cram.get(kind, 0.0), torch.get(kind, 0.0)
        if c or t:
            print(f"{kind:<11} {c:8.2f} {t:8.2f} {c - t:+11.2f}")
    c, t = sum(cram.values()), sum(torch.values())
    print(f"{'sum':<11} {c:8.2f} {t:8.2f} {c - t:+11.2f}")
    print(f"cram's bench step {step} ms (its op sum includes the per-op events); torch's listed "
          f"kernels {t:.2f} of {total} ms (the profile lists its top kernels only)")
    for side, names in (("cram", cram_other), ("torch", torch_other)):
        if names:
            print(f"{side} 'other': " + "; ".join(n[:60] for n in names))


if __name__ == "__main__":
    main()
