#!/usr/bin/env bash
# CPU time per request of a 3-node cluster (N=3 R=2 W=2, default settings) at 2,000
# requests a second: 50% GET / 50% SET of 100 B values over 100,000 keys, 50
# connections spread over the nodes, open loop (the compare open loop's load). After
# 2 s of warm-up, RUNS (default 3) runs of 10 s on the same cluster, each printing its
# requests, p99.9 and the three nodes' utime + stime (/proc/<pid>/stat) per request.
# Clusters of one build differ by about 15% here: compare builds over several clusters.
# MIX (ringkv-bench's --mix, default read:50,write:50) sets the operations, e.g.
# MIX=read:100 for the cost of a GET alone. RATE (default 2000 requests a second)
# sets the open loop's rate; RATE=closed runs the compare's closed loop instead (50
# connections, each sending its next request when the last is answered).
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
#   [NODE_FLAGS=...] [MIX=...] [RATE=...] benches/scripts/cpu-per-request.sh [BINARY=target/release/ringkv-node] [RUNS=3]
#
# Bounded: every load stops by itself; every node is stopped on exit. Loopback ports
# 7560-7565.
set -euo pipefail
binary=${1:-target/release/ringkv-node}
runs=${2:-3}
dir=$(mktemp -d /tmp/ringkv-cpu.XXXXXX)
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"
load_settings 2000
start_three_nodes
ticks_per_second=$(getconf CLK_TCK)

# utime + stime of the three nodes, in clock ticks (fields 14 and 15 of
# /proc/<pid>/stat, counted after the parenthesized command name).
cpu_ticks() {
    local total=0 pid fields
    for pid in "${pids[1]}" "${pids[2]}" "${pids[3]}"; do
        read -ra fields <<<"$(cut -d')' -f2 "/proc/$pid/stat")"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

"$bench" --hosts "$hosts" -c 50 --rate 2000 --duration-seconds 2 --quiet >/dev/null
for _ in $(seq "$runs"); do
    before=$(cpu_ticks)
    line=$("$bench" --hosts "$hosts" -c 50 "${rate_flags[@]}" --mix "$mix" --duration-seconds 10 --quiet | grep -E '^all ')
    after=$(cpu_ticks)
    echo "$line" | awk -v ticks=$((after - before)) -v hz="$ticks_per_second" \
        '{ printf "requests %s  p99.9 %s ms  CPU %.1f us/req\n", $2, $7, ticks * 1e6 / hz / $2 }'
done
