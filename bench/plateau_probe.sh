#!/usr/bin/env bash
# Which setting keeps the scaling sweep's smallest shape (h256-l4, bench/sweeps/crammed-gpu-2.toml)
# on the masked-LM plateau? Trains it at the sweep's settings (batch 64, no ramp, warm-up 0.1,
# lr 1e-3, shuffled) for one FLOP budget, once as is and once per variant, and prints each run's
# held-out loss and accuracy. The sweep's own 1e15 run: 6.645, accuracy 0.069 (the most frequent
# token's rate), after 7,385 steps.
#
#   bench/plateau_probe.sh BUDGET "NAME=SET SET ..." ...
#   e.g. bench/plateau_probe.sh "1e15 flops" base= lr3e-3=train.lr=3e-3 "std08=model.init_std=0.08"
#
# Run from the repository root on the GPU machine with carry/ holding cram.gz and the
# pretrain-en parts wikipedia-00 and -01 (*.jsonl.zst); data is prepared once into /tmp/wiki2.
# Results go to $OUT/probe.jsonl (one line per run) as well as stdout.
set -uo pipefail
budget=${1:?usage: bench/plateau_probe.sh BUDGET NAME=SETS ...}
shift
carry=${CARRY:-carry}
out=${OUT:-/tmp/probe-out}
mkdir -p "$out"
cram=/tmp/cram
[ -x $cram ] || { gzip -dc "$carry/cram.gz" >$cram && chmod +x $cram; }
if [ ! -f /tmp/wiki2/manifest.json ]; then
    mkdir -p /tmp/raw && cp "$carry"/wikipedia-0[01].jsonl.zst /tmp/raw/
    $cram data prepare --input /tmp/raw --out /tmp/wiki2 --preset crammed-bert --overwrite --quiet | tail -1
fi
base=(--set model.hidden=256 --set model.layers=4 --set model.heads=4 --set model.ffn=1024
      --set data.keep_order=false --set train.batch_size=64 --set train.micro_batch=64
      --set train.batch_ramp=0 --set train.warmup=0.1 --set train.log_every=50
      --set train.eval_every=1000000 --set train.eval_batches=32 --set train.checkpoint_every=1000000)
for variant in "$@"; do
    name=${variant%%=*}
    sets=()
    for s in ${variant#*=}; do sets+=(--set "$s"); done
    rm -rf "/tmp/probe/$name"
    start=$(date +%s)
    line=$($cram pretrain --preset crammed-bert --data /tmp/wiki2 --out "/tmp/probe/$name" --budget "$budget" \
        --quiet "${base[@]}" "${sets[@]}" 2>&1 | grep -E "^held-out loss|budget spent" | tr '\n' ' ')
    echo "$name [${variant#*=}]: $line ($(( $(date +%s) - start )) s)"
    cp "/tmp/probe/$name/metrics.jsonl" "$out/$name.jsonl" 2>/dev/null
done | tee -a "$out/probe.txt"
