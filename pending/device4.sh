#!/usr/bin/env bash
# Command 4 (about 10 minutes; only if command 2 found CRAM_RESIDUAL_GRAD=bf16 worth it): its
# quality against the default, 500 crammed-bert steps, seed 1 (bench/switch_ab.sh; needs
# carry/wikipedia-00.jsonl.zst: build with CARRY_CORPUS=1).
set -x
[ -x carry/cram ] || { gunzip -kf carry/cram.gz; chmod +x carry/cram; }
OUT=$OUT/switch bench/switch_ab.sh CRAM_RESIDUAL_GRAD=bf16 2>&1 | tail -40
