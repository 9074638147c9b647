#!/usr/bin/env bash
# The quality A/B of issue 15: cram's crammed-bert against the PyTorch recipe
# (bench/quality_ab.py, adapted from ../shared/bench/quality_reference.py) on the same
# token sequences, in the same order, with the same masks (`cram data stream`), and one
# evaluation (quality_ab.py eval on the held-out stream) for both checkpoints.
#
#   bench/quality_ab.sh steps N      both trainers for N optimizer steps from cram's
#                                    initial weights, constant batch $AB_BATCH (256):
#                                    where do the two curves part?
#   bench/quality_ab.sh cram SECONDS   `cram pretrain --preset crammed-bert` on the clock
#   bench/quality_ab.sh torch SECONDS  the reference on the clock (compilation outside it)
#
# Run from the repository root on the GPU machine with carry/ holding cram.gz (the
# stripped release binary, gzip: the GPU machine has no zstd) and the corpus (*.jsonl.zst or *.txt; default
# ../shared/data/english). The data is prepared once per machine into /tmp/ab-data; the
# streams are a function of data and seed, so `cram` and `torch` may run in separate
# device commands (each fits in the 10-minute limit; both together do not) and still
# see the same sequences and be scored on the same held-out set.
# $CRAM_SETS adds --set flags to cram's run and to the stream (data.keep_order=false is
# the default here, see bench/RESULTS.md); $TORCH_ARGS adds flags to quality_ab.py train;
# $MODEL_ARGS gives quality_ab.py the model's shape when CRAM_SETS changes it.
# With $GLUE_DIR (a folder in the glue_data layout, e.g. carry/glue), `cram` and `torch`
# then fine-tune their checkpoint with `cram glue --protocol cramming-short` on CoLA,
# SST-2, MRPC, STS-B and RTE ($GLUE_ARGS adds flags): the reference's weights go into a
# cram run folder (same tensor names; its LayerNorm eps, 1e-5, written into config.toml).
# Outputs (metrics per step, evaluations, summaries, GLUE tables) go to $OUT (or /tmp/ab-out).
#
# Carry, from the repository root on the development machine:
#   mkdir -p carry/glue && cargo build --release && strip -o /tmp/cram target/release/cram \
#     && gzip -9 -c /tmp/cram > carry/cram.gz && cp ../shared/data/english/english-mixed.jsonl.zst carry/ \
#     && cp -r ../shared/data/glue/{CoLA,SST-2,MRPC,STS-B,RTE} carry/glue/
# then, e.g., run `GLUE_DIR=carry/glue bench/quality_ab.sh cram 300` with carry = ["carry"].
set -euo pipefail
mode=${1:?usage: bench/quality_ab.sh steps N | cram SECONDS | torch SECONDS}
amount=${2:?usage: bench/quality_ab.sh steps N | cram SECONDS | torch SECONDS}
carry=${CARRY:-carry}
out=${OUT:-/tmp/ab-out}
data=/tmp/ab-data
batch=${AB_BATCH:-256}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

cram=/tmp/cram
[ -x $cram ] || { gzip -dc "$carry/cram.gz" >$cram && chmod +x $cram; }
if [ ! -f $data/manifest.json ]; then
    mkdir -p /tmp/ab-raw
    cp "$carry"/*.jsonl.zst /tmp/ab-raw/
    $cram data prepare --input /tmp/ab-raw --out $data --preset crammed-bert --overwrite --quiet | tail -4
fi
sets=(--set data.keep_order=false)
for s in ${CRAM_SETS:-}; do sets+=(--set "$s"); done
[ -f /tmp/ab-val/stream.json ] || $cram data stream --data $data --out /tmp/ab-val --split val "${sets[@]}"
glue() {
    [ -n "${GLUE_DIR:-}" ] || return 0
    $cram glue --run "$1" --glue-dir "$GLUE_DIR" --protocol cramming-short --tasks cola,sst2,mrpc,stsb,rte \
        --quiet ${GLUE_ARGS:-} | tee "$out/glue-$2.md"
}
evaluate() { python3 bench/quality_ab.py eval --stream /tmp/ab-val --norm-eps "$1" --weights "$2" ${MODEL_ARGS:-} | tee -a "$out/eval.jsonl"; }

rm -rf /tmp/ab-init /tmp/ab-cram /tmp/ab-torch /tmp/ab-cram-time /tmp/ab-torch-time /tmp/ab-torch-run
case $mode in
steps)
    fixed=("${sets[@]}" --set train.micro_batch=$batch --set train.batch_size=$batch --set train.batch_ramp=0
           --set train.log_every=1 --set train.eval_every=1000000 --set train.checkpoint_every=1000000)
    $cram data stream --data $data --out /tmp/ab-steps --sequences $((amount * batch)) "${fixed[@]}"
    # lr is 0 at progress 0, so the one-step run's checkpoint holds the initial weights.
    $cram pretrain --preset crammed-bert --data $data --out /tmp/ab-init --budget "1 steps" "${fixed[@]}" >/dev/null
    $cram pretrain --preset crammed-bert --data $data --out /tmp/ab-cram --budget "$amount steps" "${fixed[@]}" | tail -4
    python3 bench/quality_ab.py train --stream /tmp/ab-steps --out /tmp/ab-torch --steps "$amount" \
        --micro-batch $batch --batch-size $batch --ramp 0 --norm-eps 1e-12 \
        --init /tmp/ab-init/checkpoints/step-1/model.safetensors ${MODEL_ARGS:-} ${TORCH_ARGS:-}
    cp /tmp/ab-cram/metrics.jsonl "$out/cram-steps.jsonl"
    cp /tmp/ab-torch/metrics.jsonl "$out/torch-steps.jsonl"
    evaluate 1e-12 "$(ls -d /tmp/ab-cram/checkpoints/step-* | sort -t- -k2 -n | tail -1)/model.safetensors"
    evaluate 1e-12 /tmp/ab-torch/model.safetensors
    ;;
cram)
    $cram pretrain --preset crammed-bert --data $data --out /tmp/ab-cram-time --budget "${amount}s" "${sets[@]}" \
        --set train.log_every=1 --set train.eval_every=1000000 --set train.checkpoint_every=1000000 \
        | tail -4
    cp /tmp/ab-cram-time/metrics.jsonl "$out/cram-time.jsonl"
    evaluate 1e-12 "$(ls -d /tmp/ab-cram-time/checkpoints/step-* | sort -t- -k2 -n | tail -1)/model.safetensors"
    glue /tmp/ab-cram-time cram
    ;;
torch)
    # The reference makes about 4,000 sequences a second on an H100: room for 5,000.
    $cram data stream --data $data --out /tmp/ab-long --sequences $((amount * 5000)) "${sets[@]}"
    python3 bench/quality_ab.py train --stream /tmp/ab-long --out /tmp/ab-torch-time --budget-s "$amount" ${MODEL_ARGS:-} ${TORCH_ARGS:-}
    cp /tmp/ab-torch-time/metrics.jsonl "$out/torch-time.jsonl"
    evaluate 1e-5 /tmp/ab-torch-time/model.safetensors
    if [ -n "${GLUE_DIR:-}" ]; then
        # A cram run folder (config, tokenizer) whose one checkpoint holds the reference's weights.
        rm -rf /tmp/ab-torch-run
        $cram pretrain --preset crammed-bert --data $data --out /tmp/ab-torch-run --budget "1 steps" "${sets[@]}" \
            --set model.norm_eps=1e-5 >/dev/null
        cp /tmp/ab-torch-time/model.safetensors /tmp/ab-torch-run/checkpoints/step-1/model.safetensors
        glue /tmp/ab-torch-run torch
    fi
    ;;
*)
    echo "unknown mode $mode: steps, cram or torch" >&2
    exit 2
    ;;
esac
