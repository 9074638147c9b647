#!/usr/bin/env bash
# The data-pipeline benchmark of bench/RESULTS.md: `cram data prepare` on all five
# parts of ../shared/data/pretrain-en, mixed with weights (wikipedia 3 × 0.2,
# books 2 × 0.2), under /usr/bin/time -v for the peak memory; then the Python
# `tokenizers` package encoding the same parts with the tokenizer.json that run
# wrote, in the same session. Usage: bench/pretrain_en.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/pretrain-en
OUT=${1:-/tmp/cram-pretrain-en}
cargo build --release --quiet
nproc
uptime
/usr/bin/time -v target/release/cram data prepare \
  --input "$DATA/wikipedia-00.jsonl.zst:0.2" \
  --input "$DATA/wikipedia-01.jsonl.zst:0.2" \
  --input "$DATA/wikipedia-02.jsonl.zst:0.2" \
  --input "$DATA/gutenberg-00.jsonl.zst:0.2" \
  --input "$DATA/gutenberg-01.jsonl.zst:0.2" \
  --out "$OUT" --overwrite --quiet
uptime
/usr/bin/time -f "python: %e s wall, %M KB peak memory" \
  python3 bench/tokenize_python.py "$OUT/tokenizer.json" "$DATA"/*.jsonl.zst
uptime
