#!/usr/bin/env bash
# Carry (CARRY, default carry/): cram.gz (branch chunked-head), cram-before.gz (main), cuda_ops.gz
# (branch), torch_reference.py, torch_decoder_reference.py.
# Branch chunked-head: the logits a chunk of rows at a time (issue 19: peak memory no higher than
# torch.compile's). cuda_ops (with the chunked step and copy_range), then both shapes timed
# against main and both torch references.
cd "${CARRY:-carry}"
for f in cram cram-before; do gzip -dc $f.gz > $f; chmod +x $f; done
gzip -dc cuda_ops.gz > /tmp/cuda_ops && chmod +x /tmp/cuda_ops
s=$(date +%s)
/tmp/cuda_ops --ignored --test-threads=1 --nocapture > $OUT/cuda_ops.log 2>&1
echo "cuda_ops $(( $(date +%s) - s )) s"
grep -E "test result|FAILED|panicked|step_" $OUT/cuda_ops.log | head -20
grep -q "test result: ok" $OUT/cuda_ops.log || exit 1
b() { "$@" 2>&1 | grep tokens_per_s | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d['tokens_per_s'], d['step_ms'], d['mem_gb'])"; }
echo "before gpt-small $(b ./cram-before bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
echo "after  gpt-small $(b ./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32)"
echo "before crammed-bert $(b ./cram-before bench)"
echo "after  crammed-bert $(b ./cram bench)"
./cram bench --preset gpt-small --seq-len 1024 --micro-batch 32 --profile --steps 10 2>&1 | grep -E '"op":"(copy|cross_entropy|matmul)' | cut -c1-100
SEQ=1024 MB=32 STEPS=30 python3 torch_decoder_reference.py compile 2>&1 | tail -1
STEPS=30 python3 torch_reference.py cram 2>&1 | tail -1
echo "total $(( $(date +%s) - s )) s"
