#!/usr/bin/env bash
# Pipelined throughput and node CPU per request of one ringkv-node, with redis-benchmark
# (-P 16, 50 connections, SET then GET): the cost of the per-connection ordering the
# frontend's Session keeps. Runs each binary given, alternating, RUNS times.
#
#   benches/scripts/pipelined-session.sh BEFORE_BINARY AFTER_BINARY
#   RUNS=5 EXTRA="--durability none" KEYS="-r 100000" (defaults)
#
# Loopback only (127.0.0.1:17379/17380), a fresh data directory per run, bounded in
# requests (400,000 per run); needs redis-benchmark and redis-cli (redis-tools).
set -u
runs=${RUNS:-5}
extra=${EXTRA:---durability none}
keys=${KEYS--r 100000}
one_run() {
    local bin=$1 dir pid c0 c1 out
    dir=$(mktemp -d)
    # shellcheck disable=SC2086
    "$bin" --data-dir "$dir" $extra --client-address 127.0.0.1:17379 \
        --peer-address 127.0.0.1:17380 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do redis-cli -p 17379 PING >/dev/null 2>&1 && break; sleep 0.1; done
    c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    # shellcheck disable=SC2086
    out=$(redis-benchmark -p 17379 -t set,get -n 400000 -c 50 -P 16 $keys -q 2>/dev/null \
        | tr '\r' '\n' | grep -E "^(SET|GET): .*requests per second" | awk '{printf "%s %s ", $1, $2}')
    c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null; rm -rf "$dir"
    echo "$bin | $out| node CPU us/req $(echo "($c1-$c0)*1000000/$(getconf CLK_TCK)/800000" | bc -l | cut -c1-5)"
}
for _ in $(seq "$runs"); do
    for bin in "$@"; do one_run "$bin"; done
done
