#!/usr/bin/env bash
# Builds carry/ for pending/device1.sh to device4.sh (about eight minutes on two cores; run
# from a clean checkout of main; CARRY_CORPUS=1 adds the corpus that device4.sh needs):
#   carry/main/cram   main                         (the baseline)
#   carry/flash/cram  main + patches 1-3           (the flash block order and Q in registers)
#   carry/five/cram   main + patches 1-5           (+ the norm backward's bound and row_deltas),
#                     with carry/five/cuda_ops (device1 runs it where 1-10's fails)
#   carry/exp/cram    main + patches 1-5 + 6, the measurement-only overrides
#   carry/cram        main + patches 1-5 and 7-10 (the forward's overlap, the backward's
#                     staging, the residual gradient's switch with its stochastic rounding,
#                     off unless set), with
#                     carry/cuda_ops of that same tree
# then copies the device scripts beside them. Every command runs with `carry: ["carry"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
P=pending
flash=($P/flash-block-order.patch $P/flash-forward-q-registers.patch $P/tune-report-output-type.patch)
all=("${flash[@]}" $P/norm-backward-3-four-blocks.patch $P/row-deltas-unpack8.patch)
# The two variants whose tests the last call's cuda_ops covers are built without theirs.
CARRY_TESTS=0 scripts/carry_pending.sh "${flash[@]}"
mkdir -p carry/flash && mv carry/cram.gz carry/flash/cram.gz
CARRY_TESTS=0 scripts/carry_pending.sh "${all[@]}" $P/experiment-candidates-logits.patch
mkdir -p carry/exp && mv carry/cram.gz carry/exp/cram.gz
scripts/carry_pending.sh "${all[@]}"
mkdir -p carry/five && mv carry/cram.gz carry/cuda_ops.gz carry/five/
scripts/carry_pending.sh "${all[@]}" $P/flash-forward-overlap.patch $P/flash-backward-staging.patch \
    $P/residual-gradient-bf16.patch $P/residual-gradient-stochastic-rounding.patch
cp -f $P/device[1-4].sh carry/
du -sh carry
