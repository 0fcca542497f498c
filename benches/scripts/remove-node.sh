#!/usr/bin/env bash
# Replacing a dead node for good: 5 nodes, N=3 R=2 W=2, default settings. Writes and
# deletes (70:30 over 20,000 keys) at RATE/s go to nodes 1-4 for LOAD_SECONDS; node 5
# is killed with kill -9 after 5 s and its data directory deleted; node 1 is asked
# `RINGKV.REMOVE 5` every half second until it answers OK (it refuses while node 5
# was heard from within the gossip silence period). The script then polls every
# node's RINGKV.DIGEST and INFO and prints:
# - "whole": when every partition is replicated by N of the four nodes left, all
#   reporting the same root (every key back at N replicas), and no node holds a hint;
# - "reaped": when no node holds a record reaping has work on (INFO records_reapable:
#   tombstones, and one-shot clock entries every replica superseded), that is, every
#   tombstone past its grace (60 s, checked by a walk every 10 s) is gone.
#
#   cargo build --release -p ringkv-mio -p ringkv-bench
#   benches/scripts/remove-node.sh [LOAD_SECONDS=30] [RATE=1000] [BINARY=target/release/ringkv-node]
#
# Bounded: the load stops by itself; the polls give up 300 s after the removal; every
# node is stopped on exit. Loopback ports 7470-7479.
set -euo pipefail
load_seconds=${1:-30}
rate=${2:-1000}
binary=${3:-target/release/ringkv-node}
bench=$(dirname "$binary")/ringkv-bench
dir=$(mktemp -d /tmp/ringkv-remove-node.XXXXXX)
members="1@127.0.0.1:7471,2@127.0.0.1:7473,3@127.0.0.1:7475,4@127.0.0.1:7477,5@127.0.0.1:7479"
replicas=3
# shellcheck source=local-nodes.sh
source "$(dirname "$0")/local-nodes.sh"

start_node() {
    local id=$1
    "$binary" --node-id "$id" --client-address "127.0.0.1:$((7468 + 2 * id))" \
        --peer-address "127.0.0.1:$((7469 + 2 * id))" --data-dir "$dir/n$id" \
        --members "$members" --replicas "$replicas" --read-quorum 2 --write-quorum 2 \
        >>"$dir/n$id.log" 2>&1 &
    pids[$id]=$!
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
left_ports="7470 7472 7474 7476"

# Sum of one INFO field over the nodes left.
info_sum() {
    local total=0 value
    for port in $left_ports; do
        value=$(cli "$port" INFO 2>/dev/null | tr -d '\r' | sed -n "s/^$1://p")
        total=$((total + ${value:-1000000}))
    done
    echo "$total"
}

# Partitions not (yet) held by N agreeing replicas among the nodes left.
partitions_short() {
    for port in $left_ports; do
        cli "$port" RINGKV.DIGEST 2>/dev/null || echo "partition=unreachable building"
    done | awk -v n="$replicas" '
        /building/ { short = short + 1; next }
        { split($1, p, "="); split($2, r, "=");
          copies[p[2]] += 1; if (!(p[2] in root)) root[p[2]] = r[2]; else if (root[p[2]] != r[2]) bad[p[2]] = 1 }
        END { for (q in copies) if (copies[q] != n || (q in bad)) short += 1;
              if (length(copies) != 1024) short += 1024 - length(copies);
              print short + 0 }'
}

for id in 1 2 3 4 5; do start_node "$id"; done
wait_up 7470 7472 7474 7476 7478

"$bench" --hosts 127.0.0.1:7470,127.0.0.1:7472,127.0.0.1:7474,127.0.0.1:7476 -c 8 \
    --rate "$rate" --mix write:70,delete:30 --keys 20000 --duration-seconds "$load_seconds" \
    --quiet >"$dir/load.txt" 2>&1 &
load=$!
load_started=$(now)
sleep 5
kill -9 "${pids[5]}"; wait "${pids[5]}" 2>/dev/null || true
rm -rf "$dir/n5"
killed=$(now)
echo "node 5 killed and its data directory deleted"

removed=""
for _ in $(seq 120); do
    answer=$(cli 7470 RINGKV.REMOVE 5 2>&1 || true)
    if [[ "$answer" == OK ]]; then
        removed=$(now)
        break
    fi
    [[ "$answer" == "${last_answer:-}" ]] || echo "RINGKV.REMOVE 5: $answer"
    last_answer=$answer
    sleep 0.5
done
if [[ -z "$removed" ]]; then
    echo "RINGKV.REMOVE 5 was never accepted"
    exit 1
fi
echo "RINGKV.REMOVE 5: OK $(since "$killed" "$removed") s after the kill"
echo "before the removal: reap_walks_blocked $(info_sum reap_walks_blocked), records_reapable $(info_sum records_reapable)"

whole="" reaped="" load_ended=""
for _ in $(seq 1500); do
    sleep 0.2
    if [[ -z "$load_ended" ]] && ! kill -0 "$load" 2>/dev/null; then
        load_ended=$(now)
        echo "load ended $(since "$removed" "$load_ended") s after the removal; partitions short: $(partitions_short)"
    fi
    [[ -n "$load_ended" ]] || continue
    if [[ -z "$whole" && $(partitions_short) -eq 0 && $(info_sum hints_held) -eq 0 ]]; then
        whole=$(now)
        echo "whole: every partition at $replicas agreeing replicas, no hint held, $(since "$removed" "$whole") s after the removal ($(since "$load_ended" "$whole") s after the load ended)"
    fi
    if [[ -z "$reaped" && $(info_sum records_reapable) -eq 0 ]]; then
        reaped=$(now)
        echo "reaped: no tombstone left, $(since "$removed" "$reaped") s after the removal ($(since "$load_ended" "$reaped") s after the last delete)"
    fi
    [[ -n "$whole" && -n "$reaped" ]] && break
done
wait "$load" 2>/dev/null || true
grep -E '^(op|set|del|all|errors?) ' "$dir/load.txt" || cat "$dir/load.txt"
for port in $left_ports; do
    cli "$port" INFO | tr -d '\r' \
        | grep -E '^(members_placed|hints_dropped|reap_keys|reap_walks_blocked|records_reapable|entropy_keys_pushed):' \
        | tr '\n' ' '
    echo
done
if [[ -z "$whole" || -z "$reaped" ]]; then
    echo "not whole or not reaped 300 s after the removal; hints held: $(info_sum hints_held)"
    for port in $left_ports; do
        cli "$port" RINGKV.DIGEST | sed "s/^/$port /"
    done | awk '{ split($2, p, "="); line[p[2]] = line[p[2]] " | " $0; copies[p[2]] += 1; root[p[2], $3] = 1 }
        END { for (q in copies) { roots = 0; for (k in root) { split(k, kk, SUBSEP); if (kk[1] == q) roots += 1 }
              if (copies[q] != 3 || roots != 1) print "short:" line[q] } }' | head -20
    for port in $left_ports; do
        cli "$port" RINGKV.DIGEST | grep -v 'reapable=0$' | sed "s/^/reapable on $port: /"
    done | head -20
    exit 1
fi
