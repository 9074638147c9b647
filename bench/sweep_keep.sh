#!/usr/bin/env bash
# Keeps a sweep's finished runs in the repository: each run's config.toml, result.json
# and metrics.jsonl gzipped (cram reads metrics.jsonl.gz where there is no metrics.jsonl;
# a fifth of the size, which every device command carries; no checkpoints, no
# tokenizer), and the sweep's
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
    cp "$run/config.toml" "$run/result.json" "$to/runs/$name/"
    if [ -f "$run/metrics.jsonl" ]; then
        gzip -9n -c "$run/metrics.jsonl" > "$to/runs/$name/metrics.jsonl.gz"
        rm -f "$to/runs/$name/metrics.jsonl"
    else
        cp "$run/metrics.jsonl.gz" "$to/runs/$name/"
    fi
done
for f in points.csv curves.csv data.json sweep.toml fit.json; do
    if [ -f "$from/$f" ]; then cp "$from/$f" "$to/"; fi
done
echo "kept $(ls "$to/runs" | wc -l) finished runs in $to"
