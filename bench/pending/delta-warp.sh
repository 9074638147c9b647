#!/usr/bin/env bash
# Carry: carry/ with cram.gz (branch delta-warp), cram-before.gz (main), cuda_ops.gz (branch),
# torch_reference.py, torch_decoder_reference.py and wikipedia-02.jsonl.zst (staged for
# bench/plan_check.sh, the next command on the same machine).
# Branch delta-warp (Δ eight columns a thread, dQ zeroed in the same pass; the flash forward
# with two m-tiles a warp behind CRAM_FLASH_FORWARD=m2) checked against the CPU, then timed
# against main (issue 19).
CARRY=carry bash bench/plan_check.sh stage
cd carry
for f in cram cram-before; do gzip -dc $f.gz > $f; chmod +x $f; done
gzip -dc cuda_ops.gz > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
s=$(date +%s)
/tmp/cuda_ops --ignored --test-threads=1 --nocapture > $OUT/cuda_ops.log 2>&1
echo "cuda_ops took $(( $(date +%s) - s )) s"
grep -E "test result|FAILED|panicked" $OUT/cuda_ops.log | head -20
grep -E "flash" $OUT/cuda_ops.log | head
if ! grep -q "test result: ok" $OUT/cuda_ops.log; then echo "cuda_ops failed: no bench"; grep -E "^test " $OUT/cuda_ops.log | head -40; exit 1; fi
# The comparison forward (two m-tiles a warp) against the CPU too.
CRAM_FLASH_FORWARD=m2 /tmp/cuda_ops --ignored --test-threads=1 --nocapture flash_attention > $OUT/cuda_ops_m2.log 2>&1
grep -E "test result|FAILED|panicked|flash_256_64" $OUT/cuda_ops_m2.log | head
m2_ok=$(grep -c "test result: ok. 1 passed" $OUT/cuda_ops_m2.log)
bench() { "$@" 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['tokens_per_s'], d['step_ms'], d['mem_gb'])"; }
echo "before gpt-small $(bench ./cram-before bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
echo "after  gpt-small $(bench ./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
[ "$m2_ok" = 1 ] && echo "m2     gpt-small $(CRAM_FLASH_FORWARD=m2 bench ./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
[ "$m2_ok" = 1 ] && CRAM_FLASH_FORWARD=m2 ./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile --steps 10 2>&1 | grep -E '"op":"attention_forward' | cut -c1-100
echo "before crammed-bert $(bench ./cram-before bench)"
echo "after  crammed-bert $(bench ./cram bench)"
./cram-before bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile --steps 10 2>&1 | grep -E '"op":"attention_backward' | cut -c1-100
./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile --steps 10 > $OUT/profile_gpt.txt 2>&1
grep '"op"' $OUT/profile_gpt.txt | cut -c1-100
SEQ=1024 MB=32 STEPS=30 python3 torch_decoder_reference.py compile 2>&1 | tail -1
STEPS=30 python3 torch_reference.py cram 2>&1 | tail -1
echo "total $(( $(date +%s) - s )) s"
