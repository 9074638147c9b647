#!/usr/bin/env python3
"""Reports of bench/switch_ab.sh: a comparison switch's runs against the default's.

    switch_ab_report.py DEFAULT_METRICS SWITCH_METRICS   # one seed's pair
    switch_ab_report.py --summary FOLDER                 # every seed in FOLDER

A pair's report: the training losses at equal steps (the largest gap, the mean
gap, on how many logged steps the switch is higher) and each run's last
held-out loss. The summary reads FOLDER's metrics-{default,switch}-SEED.jsonl
files and gives each side's held-out losses, their mean and spread, so that a
difference between the sides can be set against the runs' own spread (on the
GPU the same seed does not repeat: two bf16 runs of 500 crammed-bert steps
ended 0.12 apart, bench/RESULTS.md, thirteenth session).
"""
import glob
import json
import os
import re
import statistics
import sys


def records(path):
    """The metrics file's records, each read once: train losses by step and
    the last evaluation's held-out loss (None without one)."""
    train, held = {}, None
    for line in open(path):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("event") == "train":
            train[j["step"]] = j["loss"]
        elif j.get("event") == "eval":
            held = j["val_loss"]
    return train, held


def pair(default, switch):
    (a, ha), (b, hb) = records(default), records(switch)
    steps = sorted(set(a) & set(b))
    if not steps:
        print("  no common logged steps")
        return
    gaps = [b[s] - a[s] for s in steps]
    worst = max(steps, key=lambda s: abs(b[s] - a[s]))
    higher = sum(g > 0 for g in gaps)
    print(f"  training loss at equal steps: mean gap {statistics.mean(gaps):+.4f}, switch higher at"
          f" {higher} of {len(steps)} steps; largest gap {b[worst] - a[worst]:+.4f} at step {worst}"
          f" ({a[worst]:.4f} default, {b[worst]:.4f} switch); last common step {steps[-1]}:"
          f" {a[steps[-1]]:.4f} / {b[steps[-1]]:.4f}")
    if ha is not None and hb is not None:
        print(f"  held-out: {ha:.4f} default, {hb:.4f} switch ({hb - ha:+.4f})")


def summary(folder):
    sides = {}
    for path in sorted(glob.glob(os.path.join(folder, "metrics-*-*.jsonl"))):
        m = re.fullmatch(r"metrics-(default|switch)-(\d+)\.jsonl", os.path.basename(path))
        loss = records(path)[1] if m else None
        if loss is not None:
            sides.setdefault(m.group(1), []).append((int(m.group(2)), loss))
    if not sides:
        print("summary: no runs with a held-out loss")
        return
    means = {}
    for side in ("default", "switch"):
        runs = sorted(sides.get(side, []))
        if not runs:
            continue
        values = [v for _, v in runs]
        means[side] = statistics.mean(values)
        spread = f", sd {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        seeds = ", ".join(f"seed {s} {v:.4f}" for s, v in runs)
        print(f"summary {side}: {seeds}; mean {means[side]:.4f}{spread} over {len(values)} run(s)")
    if len(means) == 2:
        print(f"summary: switch − default {means['switch'] - means['default']:+.4f} in mean held-out loss")


def main(argv):
    if len(argv) == 3 and argv[1] == "--summary":
        summary(argv[2])
    elif len(argv) == 3:
        pair(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
