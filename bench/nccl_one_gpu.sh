#!/usr/bin/env bash
# The NCCL path of `cram pretrain --gpus N` on a machine with one GPU (issue 8): the
# same 20 steps of crammed-bert as a plain CUDA run, as one NCCL rank (world size 1,
# launched by --gpus 1 with the rendezvous on loopback), and as one rank with ZeRO-1.
# The three must give the same losses; a multi-GPU machine would run --gpus 2/4.
#
#   bench/nccl_one_gpu.sh PREPARED_DATA [CRAM]
set -uo pipefail
data=${1:?usage: bench/nccl_one_gpu.sh PREPARED_DATA [CRAM]}
cram=${2:-carry/cram}
export NCCL_NVLS_ENABLE=0 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
common=(--preset crammed-bert --data "$data" --budget "20 steps" --quiet
    --set train.batch_size=128 --set train.micro_batch=64 --set train.batch_ramp=0
    --set train.log_every=1 --set train.eval_every=1000000 --set train.eval_batches=8
    --set train.checkpoint_every=1000000)
rm -rf /tmp/nccl-plain /tmp/nccl-dp /tmp/nccl-zero1
"$cram" pretrain "${common[@]}" --out /tmp/nccl-plain --device cuda || exit 1
"$cram" pretrain "${common[@]}" --out /tmp/nccl-dp --gpus 1 || exit 1
"$cram" pretrain "${common[@]}" --out /tmp/nccl-zero1 --gpus 1 --zero1 || exit 1
python3 - <<'EOF'
import json
runs = ["plain", "dp", "zero1"]
def losses(name):
    rows = [json.loads(l) for l in open(f"/tmp/nccl-{name}/metrics.jsonl")]
    train = {r["step"]: r["loss"] for r in rows if r["event"] == "train"}
    val = [r["val_loss"] for r in rows if r["event"] == "eval"]
    return train, val[-1] if val else None
got = {r: losses(r) for r in runs}
print("step " + " ".join(f"{r:>10}" for r in runs))
for step in sorted(got["plain"][0]):
    print(f"{step:4} " + " ".join(f"{got[r][0].get(step, float('nan')):10.5f}" for r in runs))
print("held-out " + " ".join(f"{got[r][1]}" for r in runs))
worst = max(abs(got[r][0][s] - got["plain"][0][s]) for r in runs[1:] for s in got["plain"][0])
print(f"max |loss difference| against the plain run: {worst:.2e}")
EOF
