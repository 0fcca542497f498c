#!/usr/bin/env bash
# A long exploration of the cluster simulator, in the spirit of TigerBeetle's VOPR:
# SEEDS fresh seeds from BASE (random when not given), split over every core, each
# worker under a memory cap (every run is bounded in events and operations too).
# Prints every failing seed with the command that replays it, and a summary line.
#
#   tests/explore-seeds.sh [SEEDS] [BASE]        (default: 100000 seeds, random base)
#   MEMORY_MIB=4096 (per worker)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-100000}
base=${2:-$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') * 16 ))}
workers=$(nproc)
per=$(( (seeds + workers - 1) / workers ))
memory_kib=$(( ${MEMORY_MIB:-4096} * 1024 ))
logs=$(mktemp -d)
echo "exploring $seeds seeds from $base on $workers workers ($per each, ${MEMORY_MIB:-4096} MiB each); logs in $logs"
cargo test --release -p ringkv-tests --test simulator --no-run >/dev/null 2>&1
started=$SECONDS
for worker in $(seq 0 $((workers - 1))); do
    (
        ulimit -v "$memory_kib"
        RINGKV_SIM_RUNS=$per RINGKV_SIM_SEED_BASE=$((base + worker * per)) \
            cargo test --release -p ringkv-tests --test simulator every_seed -- --nocapture \
            >"$logs/worker-$worker.log" 2>&1
        echo "exit $?" >>"$logs/worker-$worker.log"
    ) &
done
wait
grep -h -A3 "FAILED (replay\|PANICKED" "$logs"/worker-*.log || true
grep -h "^simulator: " "$logs"/worker-*.log
failed=$(grep -h "^simulator: " "$logs"/worker-*.log | awk '{s += $(NF-1)} END {print s+0}')
crashed=$(grep -L "^simulator: " "$logs"/worker-*.log | wc -l)
echo "explored $seeds seeds from $base in $((SECONDS - started)) s: $failed failed, $crashed workers died before finishing"
[ "$failed" -eq 0 ] && [ "$crashed" -eq 0 ]
