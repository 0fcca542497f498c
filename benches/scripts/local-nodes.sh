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
