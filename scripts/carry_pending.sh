#!/usr/bin/env bash
# Builds what one device command needs to test pending GPU patches against main:
#
#   scripts/carry_pending.sh pending/A.patch pending/B.patch ...
#
# carry/main/cram.gz   main as it is (the baseline)
# carry/cram.gz        main with the patches applied in the order given (git am)
# carry/cuda_ops.gz    the GPU tests of that same tree (not with CARRY_TESTS=0: a binary
#                      variant only, whose tests another call's cuda_ops covers)
# carry/torch_reference.py      from ../shared, where present
# carry/wikipedia-00.jsonl.zst  the same, only with CARRY_CORPUS=1 (26 MB of the 64 MiB a call
#                               carries; the quality runs need it, the speed runs do not)
#
# Binaries are stripped and gzipped (bench/speed_ab.sh unpacks a missing X from X.gz), so
# the folder travels with `carry: ["carry"]` well under the device's 64 MiB. The patches
# are applied on a throwaway branch of this checkout, which goes back to where it was at the
# end, even when a patch does not apply or a build fails; target/ then holds the patched
# build, and the next cargo build rebuilds what differs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/carry_pending.sh PATCH..." >&2; exit 2; }
for p in "$@"; do [ -f "$p" ] || { echo "no patch $p" >&2; exit 2; }; done
[ -z "$(git status --porcelain --untracked-files=no)" ] || {
    echo "the checkout has uncommitted changes: commit or stash them first" >&2
    exit 1
}
patches=()
for p in "$@"; do patches+=("$(realpath "$p")"); done
start=$(git rev-parse --abbrev-ref HEAD)
[ "$start" != HEAD ] || start=$(git rev-parse HEAD)

# The newest cuda_ops test binary cargo built (its name carries a hash).
cuda_ops_binary() { ls -t target/release/deps/cuda_ops-* | grep -v '\.d$' | head -1; }
pack() { # binary, destination without .gz
    mkdir -p "$(dirname "$2")"
    strip -o "$2.stripped" "$1"
    gzip -9 -c "$2.stripped" >"$2.gz"
    rm -f "$2.stripped" "$2"
}

# main's binary once per commit: a later call from the same commit (pending/build.sh makes
# several variants) finds it packed and stamped.
head=$(git rev-parse HEAD)
if [ "$(cat carry/main/commit 2>/dev/null)" != "$head" ] || [ ! -f carry/main/cram.gz ]; then
    cargo build --release
    pack target/release/cram carry/main/cram
    echo "$head" >carry/main/commit
fi

branch="carry-pending-$$"
git checkout -q -b "$branch"
restore() {
    git am --abort >/dev/null 2>&1 || true
    git checkout -q "$start"
    git branch -D -q "$branch"
}
trap restore EXIT
git am -q "${patches[@]}"
if [ "${CARRY_TESTS:-1}" = 1 ]; then
    cargo build --release --all-targets
    pack target/release/cram carry/cram
    pack "$(cuda_ops_binary)" carry/cuda_ops
else
    cargo build --release
    pack target/release/cram carry/cram
fi

shared=(../shared/bench/torch_reference.py)
[ "${CARRY_CORPUS:-0}" = 1 ] && shared+=(../shared/data/pretrain-en/wikipedia-00.jsonl.zst)
for f in "${shared[@]}"; do
    if [ -f "$f" ]; then cp -f "$f" carry/; else echo "note: $f is not here; not carried" >&2; fi
done
echo "carry/ ($(du -sh carry | cut -f1)): main $(git rev-parse --short "$start"), patched with $*"
