#!/usr/bin/env bash
# Unchanged-client load against several Thruster set-ups side by side, in alternating rounds:
# a broker per shard (the default, 2 shards), one shard, one broker name over 2 shards, and
# optionally the same default set-up built from another commit (BASE_BIN). Every target runs
# at once on loopback with its own embedded name server (an idle broker costs next to nothing);
# each round measures them one after the other, and the ratios are per round.
#
#   bench/compare-modes.sh [OUT_DIR]       (default bench/results/routing)
#
# Environment:
#   BASE_BIN      a thruster-broker built from the commit to compare against (optional); it runs
#                 with its own defaults (before brokerPerShard: one name over 2 shards)
#   MODES         this build's set-ups to run, from: per-shard one-shard one-name
#                 [per-shard one-shard one-name]
#   ROUNDS        rounds per workload                                         [3]
#   DURATION_S    seconds per run                                             [10]
#   FLUSH         ASYNC_FLUSH or SYNC_FLUSH                                   [ASYNC_FLUSH]
#   PORT_OFFSET   added to every port below, to run beside other brokers      [0]
#   WORKLOADS     space-separated, from: sync batch async cpp                 [sync batch cpp]
#                 sync:  thruster-bench --plain, 8 synchronous producers
#                 batch: thruster-bench --plain, batches of 32, 4 producers
#                 async: thruster-bench --plain, 4 producers x 16 in flight
#                 cpp:   the RocketMQ C++ client (PyPI rocketmq 0.4.4), 8 sync threads
#
# Needs: cargo build --release -p thruster-broker -p thruster-bench; python3 with venv (cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/routing}
ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
FLUSH=${FLUSH:-ASYNC_FLUSH}
WORKLOADS=${WORKLOADS:-sync batch cpp}
BIN=${BIN:-target/release}
PORT_OFFSET=${PORT_OFFSET:-0}
. bench/lib.sh
bench_init compare

# start NAME BINARY NAMESRV_PORT LISTEN_PORT [--set k=v ...]: prints "NAME=NAMESRV@PID"
TARGETS=()
start() {
    local name=$1 binary=$2 ns_port=$(($3 + PORT_OFFSET)) port=$(($4 + PORT_OFFSET))
    shift 4
    start_broker "$name" "$binary" --standalone --namesrv-listen "127.0.0.1:$ns_port" \
        --set "listenPort=$port" --set "flushDiskType=$FLUSH" "$@"
    TARGETS+=("$name=127.0.0.1:$ns_port@$LAST_PID")
}

MODES=${MODES:-per-shard one-shard one-name}
for mode in $MODES; do
    case $mode in
    per-shard) start per-shard "$BIN/thruster-broker" 19876 20911 ;;
    one-shard) start one-shard "$BIN/thruster-broker" 29876 30911 --set shards=1 ;;
    one-name) start one-name "$BIN/thruster-broker" 39876 40911 --set brokerPerShard=false ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
done
if [[ -n "${BASE_BIN:-}" ]]; then
    start base "$BASE_BIN" 49876 50911
fi
echo "targets: ${TARGETS[*]} (flush $FLUSH)"
mkdir -p "$OUT"

target_args=()
for t in "${TARGETS[@]}"; do target_args+=(--target "$t"); done
bench() { # WORKLOAD_NAME, then thruster-bench compare arguments
    local what=$1
    shift
    echo "== $what"
    "$BIN/thruster-bench" compare "${target_args[@]}" --rounds "$ROUNDS" --plain \
        --duration-s "$DURATION_S" --out "$OUT/$what-$FLUSH" "$@" 2>&1 | tee "$OUT/$what-$FLUSH.txt"
}

cpp() {
    local venv=target/cpp-client-venv
    if [[ ! -f "$venv/installed" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check rocketmq==0.4.4
        echo rocketmq==0.4.4 >"$venv/installed"
    fi
    echo "== cpp (RocketMQ C++ client, 8 sync threads)"
    : >"$OUT/cpp-$FLUSH.jsonl"
    for round in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            local name=${t%%=*} rest=${t#*=}
            local namesrv=${rest%@*} pid=${rest#*@}
            "$venv/bin/python" bench/cpp_load.py "$namesrv" CppLoad --threads 8 \
                --duration-s "$DURATION_S" --broker-pid "$pid" --label "$name r$round" \
                | tee -a "$OUT/cpp-$FLUSH.jsonl"
        done
    done
}

for workload in $WORKLOADS; do
    case $workload in
    sync) bench sync --workload produce --mode sync --producers 8 --topic CmpSync ;;
    batch) bench batch --workload produce --mode sync --producers 4 --batch 32 --topic CmpBatch ;;
    async) bench async --workload produce --mode async --producers 4 --in-flight 16 --topic CmpAsync ;;
    cpp) cpp ;;
    *) echo "unknown workload $workload" >&2; exit 2 ;;
    esac
done
