# Sourced by the scripts here that run a local cluster of ringkv-node processes: the
# pieces they share. The sourcing script sets `dir` (a temporary directory) and
# records each node's pid in `pids[<id>]`.
command -v redis-cli >/dev/null || { echo "needs redis-cli (apt install redis-tools)"; exit 1; }
declare -a pids

# Stops every node (kill -9) and removes the directory; set as the EXIT trap.
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    exec 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

cli() { redis-cli -p "$1" "${@:2}"; }

# Waits up to 10 s for each client port given to answer PING.
wait_up() {
    for port in "$@"; do
        for _ in $(seq 100); do cli "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
    done
}

# Starts a 3-node cluster (N=3, default settings plus NODE_FLAGS from the environment,
# e.g. NODE_FLAGS="--sync-writes all") of `$binary` on loopback ports 7560-7565 with
# its data under `$dir`, waits until every node answers, and sets `hosts` to the three
# client addresses.
start_three_nodes() {
    local members="1@127.0.0.1:7561,2@127.0.0.1:7563,3@127.0.0.1:7565" id
    for id in 1 2 3; do
        "$binary" --node-id "$id" --client-address "127.0.0.1:$((7558 + 2 * id))" \
            --peer-address "127.0.0.1:$((7559 + 2 * id))" --data-dir "$dir/n$id" \
            --members "$members" --replicas 3 ${NODE_FLAGS:-} >>"$dir/n$id.log" 2>&1 &
        pids[$id]=$!
    done
    wait_up 7560 7562 7564
    hosts=127.0.0.1:7560,127.0.0.1:7562,127.0.0.1:7564
}

# The load the scripts here run against `$binary`'s cluster: MIX (ringkv-bench's --mix,
# default read:50,write:50) and RATE (requests a second in all, or `closed` for the
# closed loop; the default is the argument). Sets `mix`, `rate_flags` and `bench` (the
# ringkv-bench beside `$binary`).
load_settings() {
    mix=${MIX:-read:50,write:50}
    local rate=${RATE:-$1}
    rate_flags=(--rate "$rate")
    [ "$rate" = closed ] && rate_flags=()
    bench=$(dirname "$binary")/ringkv-bench
}
