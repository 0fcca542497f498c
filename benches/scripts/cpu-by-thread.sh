#!/usr/bin/env bash
# Where a 3-node cluster's CPU goes, thread by thread, run after run: the
# cpu-per-request.sh load (closed loop by default here), and after each 10 s run the
# utime + stime each thread name (summed over the three nodes) spent in it, in
# microseconds per request. Shows which thread's share grows when CPU per request
# grows over a cluster's life (compaction, checkpoints, syncs).
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
# PRELOAD_SECONDS=n first writes for n seconds (closed loop, SETs only, another seed),
# so that the runs find every key already written.
#
#   [NODE_FLAGS=...] [MIX=...] [RATE=...] [PRELOAD_SECONDS=...] benches/scripts/cpu-by-thread.sh [BINARY=target/release/ringkv-node] [RUNS=4]
#
# Bounded: every load stops by itself; every node is stopped on exit. Loopback ports
# 7560-7565.
set -euo pipefail
binary=${1:-target/release/ringkv-node}
runs=${2:-4}
dir=$(mktemp -d /tmp/ringkv-threads.XXXXXX)
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"
load_settings closed
start_three_nodes
ticks_per_second=$(getconf CLK_TCK)

# "name ticks" for every thread of the three nodes (utime + stime, fields 14 and 15 of
# /proc/<pid>/task/<tid>/stat), summed by thread name.
thread_ticks() {
    local pid task fields name
    for pid in "${pids[1]}" "${pids[2]}" "${pids[3]}"; do
        for task in /proc/"$pid"/task/*; do
            name=$(cat "$task/comm" 2>/dev/null) || continue
            read -ra fields <<<"$(cut -d')' -f2 "$task/stat" 2>/dev/null)" || continue
            echo "${name// /_} $((fields[11] + fields[12]))"
        done
    done | awk '{ t[$1] += $2 } END { for (n in t) print n, t[n] }' | sort
}

"$bench" --hosts "$hosts" -c 50 --rate 2000 --duration-seconds 2 --quiet >/dev/null
if [ "${PRELOAD_SECONDS:-0}" -gt 0 ]; then
    "$bench" --hosts "$hosts" -c 50 --mix write:100 --seed 7 \
        --duration-seconds "$PRELOAD_SECONDS" --quiet | grep -E '^all ' | sed 's/^/preload /'
fi
for run in $(seq "$runs"); do
    before=$(thread_ticks)
    line=$("$bench" --hosts "$hosts" -c 50 "${rate_flags[@]}" --mix "$mix" --duration-seconds 10 --quiet | grep -E '^all ')
    after=$(thread_ticks)
    requests=$(echo "$line" | awk '{ print $2 }')
    echo "run $run: requests $requests"
    join -a2 -e0 -o 0,1.2,2.2 <(echo "$before") <(echo "$after") |
        awk -v r="$requests" -v hz="$ticks_per_second" \
            '{ d = $3 - $2; total += d; if (d > 0) printf "  %-16s %6.2f us/req\n", $1, d * 1e6 / hz / r }
             END { printf "  %-16s %6.2f us/req\n", "all", total * 1e6 / hz / r }'
done
