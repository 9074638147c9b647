#!/usr/bin/env bash
# The plan checked by runs on more data (issue 20, item 5; bench/sweeps/gpt-plan-2.toml
# says why): the planned shape at 2e16 FLOPs on three Wikipedia parts and on the fit's two,
# both scored on the two-part data's held-out split, the split the fit's runs were scored on.
#
#   bench/plan_check.sh stage         copies $CARRY/wikipedia-02.jsonl.zst to /tmp/raw-extra
#                                     (a first device command: the parts do not fit one carry)
#   bench/plan_check.sh run SECONDS   the next command, on the same warm machine, with
#                                     CARRY=sweepcarry (cram.gz, wikipedia-00 and -01)
#
# Without the staged part (the machine went cold between the commands) only the two-part
# run is made, and it says so. Outputs: $OUT/gpt-plan-2*.tgz (bench/sweep_keep.sh keeps them)
# and the evaluation lines.
set -uo pipefail
mode=${1:?usage: bench/plan_check.sh stage | run SECONDS}
carry=${CARRY:-carry}
case $mode in
stage)
    mkdir -p /tmp/raw-extra && cp "$carry"/wikipedia-02.jsonl.zst /tmp/raw-extra/ && ls -l /tmp/raw-extra
    exit $?
    ;;
run) ;;
*)
    echo "unknown mode $mode: stage or run" >&2
    exit 2
    ;;
esac
seconds=${2:?usage: bench/plan_check.sh run SECONDS}
start=$(date +%s)
if [ ! -x "$carry/cram" ]; then gzip -dc "$carry/cram.gz" > "$carry/cram" && chmod +x "$carry/cram"; fi
cram=$carry/cram
prepare() {  # prepare OUT INPUT_DIR [--tokenizer FILE]
    local out=$1 input=$2
    shift 2
    [ -f "$out/manifest.json" ] && return 0
    "$cram" data prepare --input "$input" --out "$out" --preset gpt-small --overwrite --quiet "$@" >/tmp/prepare.log 2>&1 \
        || { tail -20 /tmp/prepare.log; exit 1; }
    echo "prepared $out in $(( $(date +%s) - start )) s since the start"
}
mkdir -p /tmp/raw2 && cp "$carry"/wikipedia-0[01].jsonl.zst /tmp/raw2/
prepare /tmp/wiki2-bpe /tmp/raw2
specs=()
if [ -f /tmp/raw-extra/wikipedia-02.jsonl.zst ]; then
    mkdir -p /tmp/raw3 && cp /tmp/raw2/*.zst /tmp/raw-extra/wikipedia-02.jsonl.zst /tmp/raw3/
    prepare /tmp/wiki3-bpe /tmp/raw3 --tokenizer /tmp/wiki2-bpe/tokenizer.json
    specs+=(gpt-plan-2)
else
    echo "wikipedia-02 was not staged (run 'bench/plan_check.sh stage' first, on the same machine): two parts only"
fi
specs+=(gpt-plan-2-two-parts)
for name in "${specs[@]}"; do
    left=$(( seconds - ($(date +%s) - start) ))
    if [ "$left" -lt 60 ]; then
        echo "$name: $left s left of $seconds, not started"
        continue
    fi
    CARRY=$carry SPEC=bench/sweeps/$name.toml bash bench/sweep_gpu.sh "$left" | grep -v "^NVIDIA"
done
# The same score for both: the two-part data's held-out split, the preset's 8 batches.
for name in "${specs[@]}"; do
    for run in /tmp/sweeps/$name/runs/*/; do
        [ -f "$run/result.json" ] || continue
        echo "$name $(basename "$run") on /tmp/wiki2-bpe's held-out split:"
        "$cram" eval --run "$run" --data /tmp/wiki2-bpe --batches 8 2>&1 | grep -E "loss|accuracy|unigram"
    done
done
echo "total $(( $(date +%s) - start )) s"
