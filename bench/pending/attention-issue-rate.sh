#!/usr/bin/env bash
# Session 5, command 3: attention kernels with hardware bf16 packing, ex2 softmax, masks only on diagonal tiles (issue 19).
cd carry
for f in cram cram-before; do gzip -dc $f.gz > $f; chmod +x $f; done
gzip -dc cuda_ops.gz > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
/tmp/cuda_ops --ignored --test-threads=1 --nocapture > $OUT/cuda_ops.log 2>&1
CRAM_FUSED_ATTENTION=flash /tmp/cuda_ops --ignored --test-threads=1 --nocapture attention > $OUT/cuda_ops_flash.log 2>&1
grep -E "attention|flash|fused" $OUT/cuda_ops.log $OUT/cuda_ops_flash.log | grep -v "^test " | cut -c1-150
grep -E "test result" $OUT/cuda_ops.log $OUT/cuda_ops_flash.log
for b in cram-before cram; do
  ./$b bench --preset gpt-small --seq-len 1024 --micro-batch 32 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$b gpt-small', d['tokens_per_s'], d['step_ms'], d['mem_gb'])"
  ./$b bench 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$b crammed-bert', d['tokens_per_s'], d['step_ms'], d['mem_gb'])"
done
grep -E "^test |test result" $OUT/cuda_ops.log $OUT/cuda_ops_flash.log
SEQ=1024 MB=32 STEPS=30 python3 torch_decoder_reference.py compile 2>&1 | tail -1
./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile --steps 10 2>&1 | grep -E "attention|cross_entropy" | cut -c1-160
