#!/usr/bin/env bash
# Syscalls of one node of a 3-node cluster (N=3 R=2 W=2, default settings) at 2,000
# requests a second: 50% GET / 50% SET of 100 B values over 100,000 keys, 50
# connections spread over the three nodes, open loop. strace -c follows every thread
# of node 1 for 10 s of load (after 3 s of warm-up) and prints its table; node 1
# coordinates a third of the requests and stores every write (N=3). MIX (ringkv-bench's
# --mix, default read:50,write:50) sets the operations, as in cpu-per-request.sh.
# RATE (default 2000) sets the open loop's rate; RATE=closed runs the closed loop (50
# connections). TRACER=perf counts with `perf stat` on the syscall tracepoints (and
# context switches) instead of strace, which slows a node enough to change how much
# each wakeup gathers: use it for the closed loop.
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
#   [NODE_FLAGS=...] [MIX=...] [RATE=...] [TRACER=perf] benches/scripts/syscalls-per-request.sh [BINARY=target/release/ringkv-node]
#
# Bounded: the load stops by itself, the tracer after 12 s; every node is stopped on
# exit. Loopback ports 7560-7565. strace slows the node: its latencies mean nothing
# here.
set -euo pipefail
binary=${1:-target/release/ringkv-node}
tracer_name=${TRACER:-strace}
command -v "$tracer_name" >/dev/null || { echo "needs $tracer_name"; exit 1; }
dir=$(mktemp -d /tmp/ringkv-syscalls.XXXXXX)
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"
load_settings 2000
start_three_nodes
"$bench" --hosts "$hosts" -c 50 --rate 2000 --duration-seconds 3 --quiet >/dev/null
if [ "$tracer_name" = perf ]; then
    perf stat -e 'syscalls:sys_enter_*' -e context-switches -p "${pids[1]}" \
        -o "$dir/trace.txt" -- sleep 11 &
else
    timeout 12 strace -c -f -p "${pids[1]}" -o "$dir/trace.txt" &
fi
tracer=$!
sleep 1
"$bench" --hosts "$hosts" -c 50 "${rate_flags[@]}" --mix "$mix" --duration-seconds 10 --quiet | grep -E '^all '
wait "$tracer" || true
if [ "$tracer_name" = perf ]; then
    grep -E '^ +[0-9]' "$dir/trace.txt" | grep -v ' 0 ' | sort -rn | head -12
else
    head -25 "$dir/trace.txt"
fi
