#!/usr/bin/env bash
# Command 3 (about 4 minutes): per-op profiles of 1-5 (carry/five) and 1-5+7-10 (9 and 10 off)
# (carry/cram), so that attention_forward tells patch 7 and attention_backward patch 8, and
# ncu of both wgmma flash kernels with the patches.
set -x
for f in carry/five/cram carry/cram; do [ -x $f ] || { gunzip -kf $f.gz; chmod +x $f; }; done
G="--preset gpt-small --seq-len 1024 --micro-batch 32"
for v in five cram; do
  b=carry/$v/cram; [ $v = cram ] && b=carry/cram
  $b bench $G --profile --steps 10 > $OUT/profile-$v-gpt.txt 2>&1
  $b bench --profile --steps 10 > $OUT/profile-$v-bert.txt 2>&1
done
for shape in gpt bert; do
  python3 bench/profile_ab.py $OUT/profile-five-$shape.txt $OUT/profile-cram-$shape.txt
done
# ncu, beside bench/profiles/ncu/attention_flash_*_64_wgmma-h100-*.txt of earlier sessions. The
# SASS page (--page source) puts the warp-stall samples on each instruction: which wait (the
# copies', the bulk reductions' reads, wgmma's, a barrier) holds the backward's warps (long
# scoreboard 1.76 and wait 1.53 of its 7.04 cycles an instruction, eighteenth session).
for k in attention_flash_forward_64_wgmma attention_flash_backward_64_wgmma; do
  ncu --set full -k $k -c 1 -o $OUT/ncu-$k carry/cram bench $G --steps 2 > $OUT/ncu-$k-run.txt 2>&1
  ncu -i $OUT/ncu-$k.ncu-rep > $OUT/ncu-$k.txt 2>&1
  ncu -i $OUT/ncu-$k.ncu-rep --page source --csv --print-source sass > $OUT/ncu-$k-sass.csv 2>&1
done
