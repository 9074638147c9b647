#!/usr/bin/env bash
# One device command of the GPU scaling sweep (bench/RESULTS.md, issue 7).
#
#   bench/sweep_gpu.sh SECONDS
#
# Run from the repository root on the GPU machine, with carry/ holding the stripped
# cram binary (or it gzipped, cram.gz: unpacked here), the pretrain-en parts (*.jsonl.zst), the sweep spec NAME.toml ($SPEC,
# default carry/crammed-gpu-2.toml) and, from an earlier command, NAME.tgz. It
# prepares the parts into the spec's data folder (once per machine: a second spec on
# the same data reuses it), restores the runs already finished (those kept in the
# repository beside the spec, bench/sweeps/NAME/, then those of carry/NAME.tgz; a
# finished run is never redone), trains the rest for at most SECONDS, and packs
# every finished run (no checkpoints) into $OUT/NAME.tgz for the next command;
# bench/sweep_keep.sh keeps them in the repository.
set -uo pipefail
seconds=${1:?usage: bench/sweep_gpu.sh SECONDS}
carry=${CARRY:-carry}
spec=${SPEC:-$carry/crammed-gpu-2.toml}
data=$(sed -n 's/^data = "\(.*\)"/\1/p' "$spec")
name=$(basename "$spec" .toml)
out=/tmp/sweeps/$name
if [ ! -x "$carry/cram" ] && [ -f "$carry/cram.gz" ]; then
    gzip -dc "$carry/cram.gz" > "$carry/cram" && chmod +x "$carry/cram"
fi
nvidia-smi --query-gpu=name --format=csv,noheader

if [ ! -f "$data/manifest.json" ]; then
    mkdir -p /tmp/raw
    cp "$carry"/*.jsonl.zst /tmp/raw/
    start=$(date +%s)
    "$carry/cram" data prepare --input /tmp/raw --out "$data" --preset "${PREP_PRESET:-crammed-bert}" --overwrite >/tmp/prepare.log 2>&1 \
        || { tail -20 /tmp/prepare.log; exit 1; }
    echo "prepared $data in $(( $(date +%s) - start )) s"
fi
mkdir -p "$out"
kept=bench/sweeps/$name
if [ -d "$kept/runs" ]; then
    cp -r "$kept/runs" "$out/"
fi
if [ -f "$carry/$name.tgz" ]; then
    tar xzf "$carry/$name.tgz" -C "$out"
fi
timeout "$seconds" "$carry/cram" scale sweep --spec "$spec" --out "$out" --device "${DEVICE:-cuda}" --quiet
echo "sweep exit $?"
# Only finished runs travel back: an unfinished one starts again next time anyway.
finished=$(cd "$out" && for r in runs/*; do [ -f "$r/result.json" ] && echo "$r"; done)
tables=$(cd "$out" && for f in sweep.toml data.json points.csv curves.csv; do [ -f "$f" ] && echo "$f"; done)
tar czf "$OUT/$name.tgz" -C "$out" --exclude checkpoints $tables $finished
for r in $finished; do
    python3 -c 'import gzip, json, os, sys
r = json.load(open(sys.argv[1]))
m = sys.argv[2] if os.path.exists(sys.argv[2]) else sys.argv[2] + ".gz"
evals = [json.loads(l) for l in (gzip.open(m, "rt") if m.endswith(".gz") else open(m)) if "val_loss" in l]
print("{:<34} {:>11} tokens {:7.1f} s {:>9.0f} tok/s  eval {:5.1f} s  loss {:.4f}".format(r["run"], r["tokens"], r["seconds"], r["tokens"] / r["seconds"], evals[-1].get("eval_seconds", float("nan")), r["val_loss"]))' "$out/$r/result.json" "$out/$r/metrics.jsonl"
done
