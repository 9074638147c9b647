#!/usr/bin/env bash
# Command 2: the matmul diagnosis (cram's tuned plans beside torch.mm), more candidates, head chunks.
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
    echo "round $r [$v] $(env $v carry/exp/cram bench $G 2>&1 | tail -1)"
  done
done | tee $OUT/exp.txt
# Per-op profiles of 1-5 (carry/five) and 1-5+7+8 (carry/cram): attention_forward tells patch 7,
# attention_backward patch 8.
for v in five cram; do
  b=carry/$v/cram; [ $v = cram ] && b=carry/cram
  $b bench $G --profile --steps 10 > $OUT/profile-$v-gpt.txt 2>&1
  $b bench --profile --steps 10 > $OUT/profile-$v-bert.txt 2>&1
done
# ncu of the flash kernels with the forward's overlap and the backward's staging (patches 7, 8), beside
# bench/profiles/ncu/attention_flash_*_64_wgmma-h100-*.txt of earlier sessions: stall reasons and
# issue slots say whether the overlap moved the forward's time from waits to work.
# The SASS page (--page source) puts the warp-stall samples on each instruction: which wait
# (cp.async's, the bulk reductions' reads, wgmma's, a barrier) holds the backward's warps
# (long scoreboard 1.76 and wait 1.53 of its 7.04 cycles an instruction, eighteenth session).
for k in attention_flash_forward_64_wgmma attention_flash_backward_64_wgmma; do
  ncu --set full -k $k -c 1 -o $OUT/ncu-$k carry/cram bench $G --steps 2 > $OUT/ncu-$k-run.txt 2>&1
  ncu -i $OUT/ncu-$k.ncu-rep > $OUT/ncu-$k.txt 2>&1
  ncu -i $OUT/ncu-$k.ncu-rep --page source --csv --print-source sass > $OUT/ncu-$k-sass.csv 2>&1
done
