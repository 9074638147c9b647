#!/usr/bin/env bash
# Issue 19's speed table in one device command: `cram bench` on both benchmark shapes
# (crammed-bert, seq 128, micro-batch 256; gpt-small, seq 1024, micro-batch 32) for each
# variant, in alternating rounds, then the torch.compile references of the same shapes on
# the same GPU, and every variant's tokens/s as a ratio to them.
#
#   bench/speed_ab.sh VARIANT...
#
# A variant is a binary, optionally with CUDA switches after a colon:
#   carry/cram  carry/cram:CRAM_FP8=forward  carry/main/cram:CRAM_NORM=general,CRAM_FP8=forward
# ($ROUNDS rounds, default 2; $PROFILE=1 adds each variant's per-op profile of both shapes
# to $OUT). A binary path X whose file is missing is unpacked from X.gz. The encoder's
# reference is ../shared/bench/torch_reference.py, which does not travel: copy it into
# carry/ ($TORCH_REF, default carry/torch_reference.py); the decoder's is
# bench/torch_decoder_reference.py ($TORCH_DECODER_REF). A bench that fails is listed
# with its last line and left out of the ratios. Outputs (bench lines, references, profiles) go to $OUT
# (or /tmp/speed-out).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: bench/speed_ab.sh BINARY[:NAME=VALUE,...]..." >&2; exit 2; }
out=${OUT:-/tmp/speed-out}
torch_ref=${TORCH_REF:-carry/torch_reference.py}
decoder_ref=${TORCH_DECODER_REF:-bench/torch_decoder_reference.py}
mkdir -p "$out"
gpt=(--preset gpt-small --seq-len 1024 --micro-batch 32)
run_variant() { # variant, then cram's arguments
  local bin=${1%%:*} sets="" ; [[ $1 == *:* ]] && sets=${1#*:}
  shift
  [ -x "$bin" ] || { gunzip -kf "$bin.gz" && chmod +x "$bin"; }
  env ${sets//,/ } "$bin" "$@"
}
: >"$out/bench.jsonl"
for round in $(seq "${ROUNDS:-2}"); do
  for v in "$@"; do
    for shape in bert gpt; do
      args=(bench); [ $shape = gpt ] && args+=("${gpt[@]}")
      line=$(run_variant "$v" "${args[@]}" 2>&1 | tail -1) || true
      case $line in
        "{"*) ;;
        *) line="{\"error\":$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$line")}" ;;
      esac
      echo "{\"round\":$round,\"variant\":\"$v\",\"shape\":\"$shape\",\"bench\":$line}" >>"$out/bench.jsonl"
      echo "round $round $shape $v: $line"
    done
  done
done
SEQ=1024 MB=32 STEPS=30 python3 "$decoder_ref" compile 2>&1 | tail -1 | tee "$out/torch.jsonl"
STEPS=30 python3 "$torch_ref" cram 2>&1 | tail -1 | tee -a "$out/torch.jsonl"
if [ "${PROFILE:-0}" = 1 ]; then
  i=0
  for v in "$@"; do
    i=$((i + 1))
    run_variant "$v" bench --profile --steps 10 >"$out/profile-$i-bert.txt" 2>&1
    run_variant "$v" bench "${gpt[@]}" --profile --steps 10 >"$out/profile-$i-gpt.txt" 2>&1
  done
fi
python3 - "$out/bench.jsonl" "$out/torch.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
torch = {}
for l in open(sys.argv[2]):
    j = json.loads(l)
    torch["gpt" if "gpt" in j["name"] else "bert"] = j
print(f"device: {next((r['bench']['device'] for r in rows if 'device' in r['bench']), '?')}")
for shape in ("bert", "gpt"):
    ref = torch.get(shape)
    print(f"{shape}: torch.compile {ref['tokens_per_s']:,.0f} tokens/s, {ref['mem_gb']} GB" if ref else f"{shape}: no reference")
    for v in dict.fromkeys(r["variant"] for r in rows):
        runs = [r["bench"] for r in rows if r["variant"] == v and r["shape"] == shape]
        failed = [r["error"] for r in runs if "error" in r]
        runs = [r for r in runs if "error" not in r]
        if failed:
            print(f"  {v}: {len(failed)} failed: {failed[0]}")
        if not runs:
            continue
        tps = [r["tokens_per_s"] for r in runs]
        ratio = " / ".join(f"{t / ref['tokens_per_s']:.3f}" for t in tps) if ref else "-"
        print(f"  {v}: {' / '.join(f'{t:,.0f}' for t in tps)} tokens/s, {runs[0]['mem_gb']:.2f} GB, vs torch.compile {ratio}")
PY
