#!/usr/bin/env bash
# Keeps a sweep's finished runs in the repository, as text: each run's config.toml,
# result.json and metrics.jsonl (no checkpoints, no tokenizer), and the sweep's
# points.csv, curves.csv and data.json, so that `cram scale fit`, `plan` and
# `report` work from a checkout and bench/sweep_gpu.sh never redoes them.
#
#   bench/sweep_keep.sh SWEEP_DIR bench/sweeps/NAME
set -euo pipefail
from=${1:?usage: bench/sweep_keep.sh SWEEP_DIR bench/sweeps/NAME}
to=${2:?usage: bench/sweep_keep.sh SWEEP_DIR bench/sweeps/NAME}
mkdir -p "$to/runs"
for run in "$from"/runs/*; do
    [ -f "$run/result.json" ] || continue
    name=$(basename "$run")
    mkdir -p "$to/runs/$name"
    cp "$run/config.toml" "$run/result.json" "$run/metrics.jsonl" "$to/runs/$name/"
done
for f in points.csv curves.csv data.json sweep.toml fit.json; do
    if [ -f "$from/$f" ]; then cp "$from/$f" "$to/"; fi
done
echo "kept $(ls "$to/runs" | wc -l) finished runs in $to"
