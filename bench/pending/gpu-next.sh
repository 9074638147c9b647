#!/usr/bin/env bash
# Both branches that wait for the GPU, in one device command (about 8 minutes):
#   chunked-head  the logits a chunk of rows at a time (peak memory under torch.compile's);
#   bf16-residual CRAM_RESIDUAL=bf16, issue 19's f32-vs-bf16 residual measurement.
# Carry (CARRY, default carry/): cram.gz and cuda_ops.gz built from branch gpu-next (their
# merge), cram-before.gz from main, torch_reference.py, torch_decoder_reference.py,
# wikipedia-00.jsonl.zst. If cuda_ops fails, each branch's own script says which one.
set -u
cd "${CARRY:-carry}"
for f in cram cram-before; do gzip -dc $f.gz > $f; chmod +x $f; done
gzip -dc cuda_ops.gz > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
s=$(date +%s)
/tmp/cuda_ops --ignored --test-threads=1 --nocapture > $OUT/cuda_ops.log 2>&1
CRAM_RESIDUAL=bf16 /tmp/cuda_ops --ignored --test-threads=1 --nocapture full_step > $OUT/cuda_ops_bf16.log 2>&1
echo "cuda_ops $(( $(date +%s) - s )) s"
grep -E "test result|FAILED|panicked|step_" $OUT/cuda_ops.log $OUT/cuda_ops_bf16.log | head -24
grep -q "test result: ok" $OUT/cuda_ops.log || exit 1
b() { "$@" 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['tokens_per_s'], d['step_ms'], d['mem_gb'])"; }
gpt="--preset gpt-small --seq-len 1024 --micro-batch 32"
echo "main gpt-small $(b ./cram-before bench $gpt)"
echo "next gpt-small $(b ./cram bench $gpt)"
echo "next+bf16-residual gpt-small $(CRAM_RESIDUAL=bf16 b ./cram bench $gpt)"
echo "main crammed-bert $(b ./cram-before bench)"
echo "next crammed-bert $(b ./cram bench)"
echo "next+bf16-residual crammed-bert $(CRAM_RESIDUAL=bf16 b ./cram bench)"
./cram bench $gpt --profile --steps 10 > $OUT/profile_gpt.txt 2>&1
grep '"op"' $OUT/profile_gpt.txt | cut -c1-100 | head -14
SEQ=1024 MB=32 STEPS=30 python3 torch_decoder_reference.py compile 2>&1 | tail -1
STEPS=30 python3 torch_reference.py cram 2>&1 | tail -1
# Quality at equal time: two 90 s crammed-bert runs, same data and seed, f32 and bf16 residual.
mkdir -p /tmp/raw1 && cp wikipedia-00.jsonl.zst /tmp/raw1/
./cram data prepare --input /tmp/raw1 --out /tmp/wiki1 --preset crammed-bert --overwrite --quiet
for r in f32 bf16; do
    CRAM_RESIDUAL=$r ./cram pretrain --preset crammed-bert --data /tmp/wiki1 --out /tmp/res-$r \
        --budget 90s > $OUT/pretrain-$r.log 2>&1
    echo "$r: $(grep -E '^budget spent|^held-out loss' $OUT/pretrain-$r.log | tr '\n' ' ')"
done
echo "total $(( $(date +%s) - s )) s"
