#!/usr/bin/env bash
# How fast a returning node catches up: 3 nodes, N=3 R=2 W=2, default settings.
# Writes of (mostly fresh) keys at RATE/s go to nodes 1 and 2; node 3 is killed with
# kill -9 after 5 s and restarted DOWN_SECONDS later (the load goes on 3 s more); the script polls every
# node's RINGKV.DIGEST and INFO until every partition's replicas report the same root
# and no node holds a hint, printing how long that took after the restart.
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
#   benches/scripts/catch-up.sh [DOWN_SECONDS=30] [RATE=500] [BINARY=target/release/ringkv-node]
#
# NODE_FLAGS (environment) adds flags to every node, e.g. NODE_FLAGS="--hint-bytes-max
# 1000000"; VALUE_SIZE (environment, bytes, default the bench's) sizes the values.
#
# Bounded: the load stops by itself; the poll gives up after 120 s; every node is
# stopped on exit. Loopback ports 7460-7465.
set -euo pipefail
down_seconds=${1:-30}
rate=${2:-500}
binary=${3:-target/release/ringkv-node}
bench=$(dirname "$binary")/ringkv-bench
dir=$(mktemp -d /tmp/ringkv-catch-up.XXXXXX)
members="1@127.0.0.1:7461,2@127.0.0.1:7463,3@127.0.0.1:7465"
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"

start_node() {
    local id=$1
    "$binary" --node-id "$id" --client-address "127.0.0.1:$((7458 + 2 * id))" \
        --peer-address "127.0.0.1:$((7459 + 2 * id))" --data-dir "$dir/n$id" \
        --members "$members" ${NODE_FLAGS:-} >>"$dir/n$id.log" 2>&1 &
    pids[$id]=$!
}


for id in 1 2 3; do start_node "$id"; done
wait_up 7460 7462 7464

load_seconds=$((5 + down_seconds + 3))
"$bench" --hosts 127.0.0.1:7460,127.0.0.1:7462 -c 8 --rate "$rate" --mix write:100 \
    --keys 100000000 --duration-seconds "$load_seconds" --value-size "${VALUE_SIZE:-100}" \
    --quiet >"$dir/load.txt" 2>&1 &
load=$!
sleep 5
kill -9 "${pids[3]}"; wait "${pids[3]}" 2>/dev/null || true
echo "node 3 killed; down for ${down_seconds} s"
sleep "$down_seconds"
for port in 7460 7462; do
    cli "$port" INFO | tr -d '\r' | grep -E '^(hints_held|hint_bytes_held|hints_refused):' | tr '\n' ' '
    echo
done
start_node 3
restarted=$(date +%s.%N)
echo "node 3 restarted"

converged=""
for _ in $(seq 1200); do
    sleep 0.1
    d1=$(cli 7460 RINGKV.DIGEST 2>/dev/null || true)
    d2=$(cli 7462 RINGKV.DIGEST 2>/dev/null || true)
    d3=$(cli 7464 RINGKV.DIGEST 2>/dev/null || true)
    hints=0
    for port in 7460 7462 7464; do
        held=$(cli "$port" INFO 2>/dev/null | tr -d '\r' | sed -n 's/^hints_held://p')
        hints=$((hints + ${held:-1}))
    done
    if [[ -n "$d1" && "$d1" == "$d2" && "$d2" == "$d3" && "$d1" != *building* && $hints -eq 0 ]]; then
        converged=$(date +%s.%N)
        break
    fi
done
if [[ -n "$converged" ]]; then
    awk -v a="$restarted" -v b="$converged" 'BEGIN { printf "replicas agree and no hint is held %.1f s after the restart\n", b - a }'
else
    differing=$(diff <(echo "$d1") <(echo "$d3") | grep -c '^>' || true)
    echo "not converged 120 s after the restart: $differing partitions differ between nodes 1 and 3, $hints hints held"
fi
wait "$load" || true
grep -E '^(op|set|all) ' "$dir/load.txt" || cat "$dir/load.txt"
for port in 7460 7462 7464; do
    cli "$port" INFO | tr -d '\r' | grep -E '^(hints_stored|hints_held_for_down_owners|hints_delivered):' | tr '\n' ' '
    echo
done
[[ -n "$converged" ]]
