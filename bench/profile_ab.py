#!/usr/bin/env python3
"""Two `cram bench --profile` outputs op by op: which ops a change moved, and by how much.

    python3 bench/profile_ab.py BEFORE AFTER

Each file is what `cram bench ... --profile --steps N` printed (the bench line, then one JSON
line per op with its ms a step). Prints every op of either side, largest first by BEFORE, with
both times and AFTER − BEFORE, then the step times. (`bench/profile_gap.py` sets one cram profile
beside torch.compile's instead, by kind of work.)
"""
import json
import sys


def read(path):
    """({op: ms a step}, step ms) of one profile."""
    ops, step = {}, None
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "op" in row:
            ops[row["op"]] = ops.get(row["op"], 0.0) + row["ms_per_step"]
        elif "step_ms" in row:
            step = row["step_ms"]
    return ops, step


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    (before, step_b), (after, step_a) = read(sys.argv[1]), read(sys.argv[2])
    if not before or not after:
        sys.exit("no ops found: give two outputs of `cram bench ... --profile`")
    names = sorted(set(before) | set(after), key=lambda op: -before.get(op, 0.0))
    width = max(len(n) for n in names)
    print(f"{'op':<{width}} {'before':>8} {'after':>8} {'after-before':>13}   (ms a step)")
    for op in names:
        b, a = before.get(op, 0.0), after.get(op, 0.0)
        print(f"{op:<{width}} {b:8.3f} {a:8.3f} {a - b:+13.3f}")
    b, a = sum(before.values()), sum(after.values())
    print(f"{'sum':<{width}} {b:8.3f} {a:8.3f} {a - b:+13.3f}")
    print(f"bench step: {step_b} → {step_a} ms (the op sums include the per-op events)")


if __name__ == "__main__":
    main()
