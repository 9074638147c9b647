#!/usr/bin/env bash
# Command 1 (about 8 minutes): cuda_ops of patches 1-5, 7-9, then the speed A/B main / 1-3 / 1-5 /
# 1-5+7-9 with the
# torch.compile references (pending/README.md).
set -x
for f in carry/main/cram carry/flash/cram carry/five/cram carry/cram carry/cuda_ops carry/exp/cram; do gunzip -kf $f.gz; chmod +x $f; done
nvidia-smi --query-gpu=name --format=csv,noheader
carry/cuda_ops --ignored --test-threads=1 > $OUT/cuda_ops.txt 2>&1; echo "cuda_ops rc $?"
tail -30 $OUT/cuda_ops.txt
ROUNDS=2 OUT=$OUT/speed bench/speed_ab.sh carry/main/cram carry/flash/cram carry/five/cram carry/cram 2>&1 | tail -30
