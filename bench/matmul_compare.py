"""cram's cuBLASLt products beside torch.mm's, shape by shape, for one gpt-small step.

Reads what the two measurements print and sets them side by side:

    CRAM_MATMUL_TUNE=report cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 \
        --steps 3 2> report.txt
    python3 bench/matmul_shapes.py > shapes.jsonl
    python3 bench/matmul_compare.py report.txt shapes.jsonl

`report.txt` holds cram's lines "cuda: matmul OP m M n N k K batch 1 out TYPE: heuristic's first
T us, fastest T us (candidate I of C)" (`blas/tune.rs`; "out TYPE" where the binary prints it;
each shape's candidates are timed once, on their own, before its first product); `shapes.jsonl` holds one JSON line per product of
`matmul_shapes.py` (rows m, inputs k, outputs n; forward, dX and dW in milliseconds). The
product x·Wᵀ is cram's ABt with (m, n, k); dX = dY·W is AB with (m, k, n); dW = dYᵀ·X is AtB
with (n, k, m). Prints one row per product and direction with both times, their ratio and
what the difference costs a step (times the product's calls), then the sums; a product that
either side lacks is listed as missing, not left out.
"""
import json
import re
import sys

REPORT = re.compile(
    r"cuda: matmul (\w+) m (\d+) n (\d+) k (\d+) batch (\d+)(?: fp8)?(?: out (\w+))?: "
    r"heuristic's first ([\d.]+) us, fastest ([\d.]+) us"
)
# The output type each direction of cram's linear layers writes: activations (and their
# gradients) in bf16, weight gradients added into the f32 gradients.
OUTPUT = {"forward": "bf16", "dX": "bf16", "dW": "f32"}


def read_report(path):
    """{(op, m, n, k): {output type or None: fastest microseconds}} of cram's tuned plans
    (batch 1 only). Reports before the output type was printed give None."""
    plans = {}
    with open(path) as f:
        for line in f:
            hit = REPORT.search(line)
            if hit and hit.group(5) == "1":
                op, m, n, k = hit.group(1), *map(int, hit.group(2, 3, 4))
                plans.setdefault((op, m, n, k), {})[hit.group(6)] = float(hit.group(8))
    return plans


def plan_time(plans, key, output):
    """The plan's time for this output type; a report without types counts where the shape
    has one plan only (else it is ambiguous: None)."""
    times = plans.get(key, {})
    if output in times:
        return times[output]
    if list(times) == [None]:
        return times[None]
    return None


def read_shapes(path):
    """matmul_shapes.py's product lines (those with a product name)."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.startswith("{")]
    return [r for r in rows if "product" in r]


def directions(p):
    """(direction, cram's key, torch's milliseconds) of one product line."""
    m, k, n = p["m"], p["k"], p["n"]
    dw = p.get("dw_f32_ms", p["dw_bf16_ms"])
    return [
        ("forward", ("ABt", m, n, k), p.get("forward_add_ms", p["forward_ms"])),
        ("dX", ("AB", m, k, n), p["dx_ms"]),
        ("dW", ("AtB", n, k, m), dw),
    ]


def compare(plans, shapes):
    """Rows of (product, direction, calls, cram us, torch us) and the sums a step."""
    rows, cram_sum, torch_sum, missing = [], 0.0, 0.0, []
    for p in shapes:
        if p["product"].startswith("head_"):
            continue  # the head's alternatives, not cram's step
        for direction, key, torch_ms in directions(p):
            cram_us = plan_time(plans, key, OUTPUT[direction])
            if cram_us is None:
                missing.append(f"{p['product']} {direction} {key}")
                continue
            torch_us = 1e3 * torch_ms
            rows.append((p["product"], direction, p["calls"], cram_us, torch_us))
            cram_sum += p["calls"] * cram_us
            torch_sum += p["calls"] * torch_us
    return rows, cram_sum / 1e3, torch_sum / 1e3, missing


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: matmul_compare.py REPORT.txt SHAPES.jsonl")
    plans, shapes = read_report(sys.argv[1]), read_shapes(sys.argv[2])
    if not plans:
        sys.exit(f"{sys.argv[1]}: no 'cuda: matmul' lines (run cram with CRAM_MATMUL_TUNE=report)")
    if not shapes:
        sys.exit(f"{sys.argv[2]}: no product lines (the output of bench/matmul_shapes.py)")
    rows, cram_ms, torch_ms, missing = compare(plans, shapes)
    print(f"{'product':<10} {'direction':<8} {'calls':>5} {'cram us':>9} {'torch us':>9} "
          f"{'cram/torch':>10} {'ms a step':>9}")
    for name, direction, calls, c, t in rows:
        print(f"{name:<10} {direction:<8} {calls:>5} {c:>9.1f} {t:>9.1f} {c / t:>10.3f} "
              f"{calls * (c - t) / 1e3:>+9.3f}")
    print(f"a step: cram {cram_ms:.3f} ms, torch.mm {torch_ms:.3f} ms, "
          f"difference {cram_ms - torch_ms:+.3f} ms")
    for m in missing:
        print(f"missing on cram's side: {m}")


if __name__ == "__main__":
    main()
