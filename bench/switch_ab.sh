#!/usr/bin/env bash
# Quality of a CUDA comparison switch against the default, seed by seed: `cram pretrain
# --preset $PRESET` on the same data, the same seeds and the same budget, once with the
# switch in the environment and once without, then the held-out losses side by side and
# the training losses at equal steps. Made for `CRAM_FP8=forward` (issue 19: FP8 lands as
# the default only where it learns as well), usable for any `CRAM_*` switch.
#
#   bench/switch_ab.sh CRAM_FP8=forward
#
# $BUDGET (default "500 steps": equal steps, so the schedules match; a time budget gives the
# faster side more steps), $SEEDS (default "1"), $SIDES (default "default switch"; one side
# alone when the other ran in an earlier command), $PRESET (crammed-bert), $CORPUS (default
# carry/wikipedia-00.jsonl.zst). One run of 500 crammed-bert steps (161 M tokens) takes
# about 4.6 minutes on an H100, so one seed's pair fills a 10-minute device command. With
# SIDES=switch, $DEFAULT_METRICS names an earlier default run's metrics.jsonl to compare
# against (bench/switch_ab/ keeps such runs, named by preset, budget, seed, GPU and commit).
# Outputs (metrics per run, logs) go to $OUT (or /tmp/switch-out). Each seed's pair is reported
# by switch_ab_report.py (mean and largest training-loss gap at equal steps, held-out losses),
# then all seeds in $OUT together (each side's mean held-out loss and spread: the same seed does
# not repeat on the GPU, so one seed a side cannot size a small difference).
#
# Carry, from the repository root on the development machine:
#   cargo build --release && strip -o /tmp/cram target/release/cram && mkdir -p carry \
#     && gzip -9 -c /tmp/cram > carry/cram.gz \
#     && cp ../shared/data/pretrain-en/wikipedia-00.jsonl.zst carry/
# then run `bench/switch_ab.sh CRAM_FP8=forward` with carry = ["carry"].
set -euo pipefail
switch=${1:?usage: bench/switch_ab.sh NAME=VALUE}
name=${switch%%=*}
carry=${CARRY:-carry}
out=${OUT:-/tmp/switch-out}
budget=${BUDGET:-500 steps}
preset=${PRESET:-crammed-bert}
corpus=${CORPUS:-$carry/wikipedia-00.jsonl.zst}
data=/tmp/switch-data-$preset
mkdir -p "$out"
cram=$carry/cram
[ -x "$cram" ] || { gunzip -kf "$cram.gz" && chmod +x "$cram"; }
[ -d "$data" ] || "$cram" data prepare --input "$corpus" --out "$data" --preset "$preset" >"$out/prepare.log"
for seed in ${SEEDS:-1}; do
  for side in ${SIDES:-default switch}; do
    run=/tmp/switch-run-$side-$seed
    rm -rf "$run"
    if [ "$side" = switch ]; then env_set=("$switch"); else env_set=("$name="); fi
    env "${env_set[@]}" "$cram" pretrain --preset "$preset" --data "$data" --out "$run" \
      --budget "$budget" --seed "$seed" >"$out/pretrain-$side-$seed.log" 2>&1
    cp "$run/metrics.jsonl" "$out/metrics-$side-$seed.jsonl"
    held=$(grep -o 'held-out loss [0-9.]*' "$out/pretrain-$side-$seed.log" | tail -1)
    echo "seed $seed $side ($([ "$side" = switch ] && echo "$switch" || echo "$name unset")): $held"
  done
  if [ ! -f "$out/metrics-default-$seed.jsonl" ] && [ -n "${DEFAULT_METRICS:-}" ]; then
    cp "$DEFAULT_METRICS" "$out/metrics-default-$seed.jsonl"
  fi
  [ -f "$out/metrics-default-$seed.jsonl" ] && [ -f "$out/metrics-switch-$seed.jsonl" ] || continue
  python3 "$(dirname "$0")/switch_ab_report.py" "$out/metrics-default-$seed.jsonl" "$out/metrics-switch-$seed.jsonl"
done
# Across the seeds of this output folder: each side's held-out losses, their mean and spread.
python3 "$(dirname "$0")/switch_ab_report.py" --summary "$out"
