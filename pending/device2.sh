#!/usr/bin/env bash
# Command 2 (about 6 minutes): the matmul diagnosis (cram's tuned plans beside torch.mm), more
# cuBLASLt candidates, fewer LM-head chunks (patch 6's overrides), and the residual gradient in
# bf16 (patch 9's switch), each against the same binary without it, in alternating rounds.
set -x
for f in carry/main/cram carry/flash/cram carry/five/cram carry/cram carry/cuda_ops carry/exp/cram; do [ -x $f ] || { gunzip -kf $f.gz; chmod +x $f; }; done
G="--preset gpt-small --seq-len 1024 --micro-batch 32"
CRAM_MATMUL_TUNE=report carry/cram bench $G --steps 3 2> $OUT/report.txt | tail -1
CRAM_MATMUL_CANDIDATES=32 CRAM_MATMUL_TUNE=report carry/exp/cram bench $G --steps 3 2> $OUT/report32.txt | tail -1
python3 bench/matmul_shapes.py > $OUT/shapes.jsonl
python3 bench/matmul_compare.py $OUT/report.txt $OUT/shapes.jsonl | tee $OUT/compare.txt
python3 bench/matmul_compare.py $OUT/report32.txt $OUT/shapes.jsonl | tee $OUT/compare32.txt
for r in 1 2; do
  for v in "" CRAM_MATMUL_CANDIDATES=32 CRAM_LOGIT_VALUES=536870912 CRAM_LOGIT_VALUES=1073741824; do
    echo "round $r gpt exp [$v] $(env $v carry/exp/cram bench $G 2>&1 | tail -1)"
  done
  for v in "" CRAM_RESIDUAL_GRAD=bf16; do
    echo "round $r bert cram [$v] $(env $v carry/cram bench 2>&1 | tail -1)"
    echo "round $r gpt cram [$v] $(env $v carry/cram bench $G 2>&1 | tail -1)"
  done
done | tee $OUT/exp.txt
