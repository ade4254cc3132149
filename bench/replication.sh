#!/usr/bin/env bash
# What replication costs a master, measured side by side in alternating rounds (thruster-bench
# compare): a master with no slave, an ASYNC_MASTER with its slave, a SYNC_MASTER with its
# slave (and one answering its slave at once, haAsyncCoalesceUs=0). Every set-up runs at once on loopback (2 shards each, its own embedded name server);
# each round measures them one after the other, so the ratios are per round. Then replication
# catch-up: a master filled with CATCHUP_MIB while no slave runs, a slave started, the time
# until masterSlaveDiff is 0 on every shard; against loopback TCP measured in the same run.
#
#   bench/replication.sh [OUT_DIR]       (default bench/results/replication)
#
# Environment: ROUNDS [3], DURATION_S [10], FLUSH [ASYNC_FLUSH], CATCHUP_MIB [1024],
# PARTS ["produce catchup"].
# Needs: cargo build --release -p thruster-broker -p thruster-bench.
# On one host the slave shares the master's cores: the figures include that contention.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/replication}
ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
FLUSH=${FLUSH:-ASYNC_FLUSH}
CATCHUP_MIB=${CATCHUP_MIB:-1024}
PARTS=${PARTS:-produce catchup}
BIN=${BIN:-target/release}
. bench/lib.sh
bench_init replication

# broker NAME ARGS...: a broker with this run's flush mode, started by lib.sh's start_broker.
broker() {
    local name=$1
    shift
    start_broker "$name" "$BIN/thruster-broker" --set "flushDiskType=$FLUSH" "$@"
}

# runtime KEY ADDR: one key of GET_BROKER_RUNTIME_INFO.
runtime() { python3 bench/runtime_info.py "$2" "$1"; }

produce() {
TARGETS=()
# pair NAME NS_PORT PORT ROLE|none [MASTER ARGS...]: a master (and its slave unless ROLE is
# none).
pair() {
    local name=$1 ns=$2 port=$3 role=$4
    shift 4
    broker "$name-master" --standalone --namesrv-listen "127.0.0.1:$ns" \
        --set "listenPort=$port" --set "brokerName=$name" \
        --set "brokerRole=${role/none/ASYNC_MASTER}" "$@"
    TARGETS+=("$name=127.0.0.1:$ns@$LAST_PID")
    if [[ $role != none ]]; then
        broker "$name-slave" -n "127.0.0.1:$ns" --set "listenPort=$((port + 100))" \
            --set "brokerName=$name" --set brokerRole=SLAVE --set brokerId=1
    fi
}
pair no-slave 19876 20911 none
pair async-slave 29876 30911 ASYNC_MASTER
pair sync-slave 39876 40911 SYNC_MASTER
# The same ASYNC pair answering its slave at once (no coalescing of new log).
pair async-eager 59876 60911 ASYNC_MASTER --set haAsyncCoalesceUs=0
for port in 30911 30921 40911 40921 60911 60921; do
    for _ in $(seq 100); do
        [[ $(runtime haConnectionCount "127.0.0.1:$port") == 1 ]] && break
        sleep 0.1
    done
done
echo "targets: ${TARGETS[*]} (flush $FLUSH)"
mkdir -p "$OUT"
target_args=()
for t in "${TARGETS[@]}"; do target_args+=(--target "$t"); done
"$BIN/thruster-bench" compare "${target_args[@]}" --rounds "$ROUNDS" --plain \
    --duration-s "$DURATION_S" --out "$OUT/produce-$FLUSH" --workload produce --mode sync \
    --producers 8 --topic ReplSync 2>&1 | tee "$OUT/produce-$FLUSH.txt"
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
}

# Catch-up: fill a master alone, then start its slave and time the copy.
catchup() {
broker catchup-master --standalone --namesrv-listen 127.0.0.1:49876 --set listenPort=50911 \
    --set brokerName=catchup
"$BIN/thruster-bench" produce --namesrv 127.0.0.1:49876 --topic CatchUp --plain --producers 8 \
    --message-bytes 4096 --messages $((CATCHUP_MIB * 256)) --duration-s 600 >"$OUT/catchup-fill.txt" 2>&1
start_ns=$(date +%s%N)
broker catchup-slave -n 127.0.0.1:49876 --set listenPort=50811 --set brokerName=catchup \
    --set brokerRole=SLAVE --set brokerId=1
for port in 50911 50921; do
    until [[ $(runtime masterSlaveDiff "127.0.0.1:$port") == 0 ]]; do sleep 0.05; done
done
end_ns=$(date +%s%N)
bytes=0
for shard in 0 1; do
    bytes=$((bytes + $(runtime "commitLogMaxOffset_shard$shard" "127.0.0.1:$((50911 + shard * 10))") \
        - ($shard << 56)))
done
loopback=$(python3 bench/loopback.py 2048)
awk -v b="$bytes" -v ns=$((end_ns - start_ns)) -v lo="$loopback" 'BEGIN {
    mbs = b / 1048576 / (ns / 1e9);
    printf "catch-up: %.0f MiB in %.2f s = %.0f MiB/s; loopback TCP %.0f MiB/s; ratio %.2f\n",
        b / 1048576, ns / 1e9, mbs, lo, mbs / lo }' | tee "$OUT/catchup-$FLUSH.txt"
}

mkdir -p "$OUT"
for part in $PARTS; do
    "$part"
done
