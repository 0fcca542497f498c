#!/usr/bin/env bash
# Syscalls of one node of a 3-node cluster (N=3 R=2 W=2, default settings) at 2,000
# requests a second: 50% GET / 50% SET of 100 B values over 100,000 keys, 50
# connections spread over the three nodes, open loop. strace -c follows every thread
# of node 1 for 10 s of load (after 3 s of warm-up) and prints its table; node 1
# coordinates a third of the requests and stores every write (N=3).
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
#   benches/scripts/syscalls-per-request.sh [BINARY=target/release/ringkv-node]
#
# Bounded: the load stops by itself, strace after 12 s; every node is stopped on exit.
# Loopback ports 7560-7565. strace slows the node: its latencies mean nothing here.
set -euo pipefail
binary=${1:-target/release/ringkv-node}
bench=$(dirname "$binary")/ringkv-bench
command -v strace >/dev/null || { echo "needs strace (apt install strace)"; exit 1; }
dir=$(mktemp -d /tmp/ringkv-syscalls.XXXXXX)
members="1@127.0.0.1:7561,2@127.0.0.1:7563,3@127.0.0.1:7565"
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"

for id in 1 2 3; do
    "$binary" --node-id "$id" --client-address "127.0.0.1:$((7558 + 2 * id))" \
        --peer-address "127.0.0.1:$((7559 + 2 * id))" --data-dir "$dir/n$id" \
        --members "$members" --replicas 3 >>"$dir/n$id.log" 2>&1 &
    pids[$id]=$!
done
wait_up 7560 7562 7564
hosts=127.0.0.1:7560,127.0.0.1:7562,127.0.0.1:7564
"$bench" --hosts "$hosts" -c 50 --rate 2000 --duration-seconds 3 --quiet >/dev/null
timeout 12 strace -c -f -p "${pids[1]}" -o "$dir/strace.txt" &
tracer=$!
sleep 1
"$bench" --hosts "$hosts" -c 50 --rate 2000 --duration-seconds 10 --quiet | grep -E '^all '
wait "$tracer" || true
head -25 "$dir/strace.txt"
