#!/usr/bin/env bash
# Catch-up consume: a backlog read from offset 0 as fast as the broker answers, against
# loopback TCP measured in the same run. Two brokers run side by side with the same backlog:
# `thruster` (this build's defaults) and `rocketmq-limits` (the same build with RocketMQ's
# per-pull transfer limits: 32 messages / 256 KiB hot, 8 / 64 KiB cold). Each is read with
# pulls asking for 32 messages (the RocketMQ clients' default) and for PULL_BATCH.
#
#   bench/catchup.sh [OUT_DIR]             (default bench/results/catchup)
#
# Environment:
#   MESSAGES     backlog per broker, 1 KiB messages                          [400000]
#   PULL_BATCH   the larger ask                                              [1024]
#   ROUNDS       rounds per ask                                              [3]
#   SHARDS       shards per broker                                           [2]
#   THREADS      consumer threads (reactors) of thruster-bench               [1]
#   BIN          where thruster-broker and thruster-bench are                [target/release]
#
# Needs: cargo build --release -p thruster-broker -p thruster-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/catchup}
MESSAGES=${MESSAGES:-400000}
PULL_BATCH=${PULL_BATCH:-1024}
ROUNDS=${ROUNDS:-3}
SHARDS=${SHARDS:-2}
BIN=${BIN:-target/release}
. bench/lib.sh
bench_init catchup

# start NAME NAMESRV_PORT LISTEN_PORT [--set k=v ...]: appends "NAME=NAMESRV@PID" to TARGETS
TARGETS=()
start() {
    local name=$1 ns_port=$2 port=$3
    shift 3
    start_broker "$name" "$BIN/thruster-broker" --standalone \
        --namesrv-listen "127.0.0.1:$ns_port" --set "listenPort=$port" --set "shards=$SHARDS" "$@"
    TARGETS+=("$name=127.0.0.1:$ns_port@$LAST_PID")
}

start thruster 47876 47911
start rocketmq-limits 48876 48911 \
    --set maxTransferCountOnMessageInMemory=32 --set maxTransferBytesOnMessageInMemory=262144 \
    --set maxTransferCountOnMessageInDisk=8 --set maxTransferBytesOnMessageInDisk=65536
mkdir -p "$OUT"
echo "targets: ${TARGETS[*]}" | tee "$OUT/README.txt"
for ns in 47876 48876; do
    "$BIN/thruster-bench" produce --namesrv "127.0.0.1:$ns" --topic CatchUp --mode async \
        --producers 4 --in-flight 16 --batch 16 --messages "$MESSAGES" --duration-s 600 \
        >>"$OUT/README.txt"
done

target_args=()
for t in "${TARGETS[@]}"; do target_args+=(--target "$t"); done
for ask in 32 "$PULL_BATCH"; do
    echo "== pulls asking for $ask messages" | tee -a "$OUT/README.txt"
    "$BIN/thruster-bench" compare "${target_args[@]}" --rounds "$ROUNDS" --workload consume \
        --topic CatchUp --duration-s 60 --pull-batch "$ask" --plain --threads "${THREADS:-1}" \
        --out "$OUT/ask-$ask" | tee -a "$OUT/README.txt"
done
echo "== loopback TCP, one connection, MiB/s" | tee -a "$OUT/README.txt"
for _ in $(seq "$ROUNDS"); do python3 bench/loopback.py 2048; done | tee -a "$OUT/README.txt"
