#!/usr/bin/env bash
# The pending patches' device commands, written for the session that runs them (built first
# with `scripts/carry_pending.sh pending/short-attention-staged.patch
# pending/cublaslt-version.patch pending/flash-dq-bulk.patch`, then run with
# carry: ["carry"], one stage a command, each under 600 s):
#
#   bash pending/device.sh 1   # cuda_ops of the patched tree, then main against patched with
#                              # both torch.compile references (~330 s)
#   bash pending/device.sh 2   # per-op profiles of both, the two comparison variants (per-thread
#                              # dQ reductions; torch's own cuBLAS), ncu of the changed kernels (~400 s)
#
# Outputs go to $OUT (the device tool brings them back).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/pending-out}
mkdir -p "$out"
gunzip -kf carry/main/cram.gz carry/cram.gz carry/cuda_ops.gz
chmod +x carry/main/cram carry/cram carry/cuda_ops
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
gpt=(--preset gpt-small --seq-len 1024 --micro-batch 32)
case ${1:-} in
1)
    (time carry/cuda_ops --ignored --test-threads=1) 2>&1 | tee "$out/cuda_ops.txt" |
        grep -E "^test |test result|panicked|real" | grep -v "\.\.\. ok$"
    OUT=$out/speed ROUNDS=2 bench/speed_ab.sh carry/main/cram carry/cram
    ;;
2)
    for v in main/cram cram; do
        tag=${v%/cram}; [ "$tag" = cram ] && tag=patched
        "carry/$v" bench --profile --steps 10 >"$out/crammed-bert-$tag.txt" 2>&1
        "carry/$v" bench "${gpt[@]}" --profile --steps 10 >"$out/gpt-small-$tag.txt" 2>&1
        grep -hE "attention|step_ms" "$out/crammed-bert-$tag.txt" "$out/gpt-small-$tag.txt" | cut -c1-160
    done
    # Torch's wheels bring their own cuBLAS: the library path picks which one cram loads.
    torch_blas=$(python3 -c 'import glob, os, site; print(next(os.path.dirname(f) for s in site.getsitepackages() for f in glob.glob(s + "/nvidia/**/libcublasLt.so*", recursive=True)))')
    echo "torch's cuBLASLt: $torch_blas"
    OUT=$out/variants ROUNDS=1 bench/speed_ab.sh carry/cram carry/cram:CRAM_FLASH_DQ=red \
        "carry/cram:LD_LIBRARY_PATH=$torch_blas:${LD_LIBRARY_PATH:-}"
    for k in attention_fused_backward_128_64 attention_fused_forward_128_64; do
        timeout 60 ncu --set full --print-details all -k $k -c 1 carry/cram bench --steps 2 >"$out/ncu-$k.txt" 2>&1
    done
    timeout 90 ncu --set full --print-details all -k attention_flash_backward_64_wgmma -c 1 \
        carry/cram bench "${gpt[@]}" --steps 2 >"$out/ncu-attention_flash_backward_64_wgmma.txt" 2>&1
    grep -hE "^  [a-z_0-9]+ \(|Duration|DRAM Throughput|L2 Cache Throughput|Registers Per" "$out"/ncu-*.txt
    ;;
*)
    echo "usage: bash pending/device.sh 1|2" >&2
    exit 2
    ;;
esac
