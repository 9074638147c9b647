#!/usr/bin/env bash
# Command 1 (about 8 minutes): cuda_ops of patches 1-5, 7-10, then the speed A/B main / 1-3 / 1-5 /
# 1-5+7-10 with both torch.compile references (pending/README.md).
set -x
for f in carry/main/cram carry/flash/cram carry/five/cram carry/cram carry/cuda_ops carry/exp/cram; do gunzip -kf $f.gz; chmod +x $f; done
nvidia-smi --query-gpu=name --format=csv,noheader
carry/cuda_ops --ignored --test-threads=1 > $OUT/cuda_ops.txt 2>&1; rc=$?; echo "cuda_ops rc $rc"
tail -30 $OUT/cuda_ops.txt
# Where 1-10 fail, the flash tests of 1-5 alone tell patches 1-2 from 7-8 (a wrong forward
# hides the backward's check behind it).
if [ $rc != 0 ]; then
  gunzip -kf carry/five/cuda_ops.gz; chmod +x carry/five/cuda_ops
  carry/five/cuda_ops --ignored --test-threads=1 flash attention > $OUT/cuda_ops-five.txt 2>&1
  echo "cuda_ops of 1-5 (flash, attention): rc $?"; tail -15 $OUT/cuda_ops-five.txt
fi
ROUNDS=2 OUT=$OUT/speed bench/speed_ab.sh carry/main/cram carry/flash/cram carry/five/cram carry/cram 2>&1 | tail -30
