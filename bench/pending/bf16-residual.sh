#!/usr/bin/env bash
# Issue 19's "measure the choice of an f32 vs bf16 residual stream and state it", branch
# bf16-residual (CRAM_RESIDUAL=bf16 allocates the residual stream in bf16 on CUDA).
# Carry (CARRY, default carry/): cram.gz and cuda_ops.gz (branch bf16-residual),
# wikipedia-00.jsonl.zst (../shared/data/pretrain-en). About 7 minutes.
set -u
cd "${CARRY:-carry}"
gzip -dc cram.gz > cram && chmod +x cram
gzip -dc cuda_ops.gz > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
s=$(date +%s)
# The switch's full steps against the CPU (the default's run is the whole cuda_ops).
/tmp/cuda_ops --ignored --test-threads=1 --nocapture > $OUT/cuda_ops.log 2>&1
CRAM_RESIDUAL=bf16 /tmp/cuda_ops --ignored --test-threads=1 --nocapture full_step > $OUT/cuda_ops_bf16.log 2>&1
grep -E "test result|FAILED|panicked|step_" $OUT/cuda_ops.log $OUT/cuda_ops_bf16.log | head -20
grep -q "test result: ok" $OUT/cuda_ops.log || exit 1
b() { "$@" 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['tokens_per_s'], d['step_ms'], d['mem_gb'])"; }
for r in f32 bf16; do
    echo "$r gpt-small $(CRAM_RESIDUAL=$r b ./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
    echo "$r crammed-bert $(CRAM_RESIDUAL=$r b ./cram bench)"
done
# Quality at equal time: two 120 s crammed-bert runs on the same data and seed.
mkdir -p /tmp/raw1 && cp wikipedia-00.jsonl.zst /tmp/raw1/
./cram data prepare --input /tmp/raw1 --out /tmp/wiki1 --preset crammed-bert --overwrite --quiet
for r in f32 bf16; do
    CRAM_RESIDUAL=$r ./cram pretrain --preset crammed-bert --data /tmp/wiki1 --out /tmp/res-$r \
        --budget 120s > $OUT/pretrain-$r.log 2>&1
    echo "$r: $(grep -E '^budget spent|^held-out loss' $OUT/pretrain-$r.log | tr '\n' ' ')"
done
echo "total $(( $(date +%s) - s )) s"
