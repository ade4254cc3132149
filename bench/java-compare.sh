#!/usr/bin/env bash
# Issue 12's table: the unchanged Apache RocketMQ 4.9.8 Java client driving Apache RocketMQ 4.9.8's
# own broker, Thruster (default: a broker per shard) and Thruster with shards=1, in alternating
# rounds. The Java side (broker, name server, client and the small load programs) is an external
# install built with javac outside this repo; this script only drives it through its run helper:
#
#   JAVA_PEER_RUN=/work/notes/java-peer/run.sh bench/java-compare.sh [OUT_DIR]
#
# The run helper must accept: `namesrv -c FILE`, `broker -c FILE`, and `java-class CLASS ARGS` for
# SyncProducer / BatchProducer, which take `-n NAMESRV -t TOPIC -c THREADS [-b BATCH] -d SECONDS
# -w WARMUP_SECONDS -pid BROKER_PID` and print one line with `msg/s=`, `brokerCpuUsPerMsg=`
# (utime+stime of the broker pid from /proc/<pid>/stat over the timed window, after the warm-up)
# and `clientCpuUsPerMsg=` (the same for the load program's own process).
# See bench/results/java/README.md for where that install comes from.
#
# Environment:
#   JAVA_PEER_RUN  the Java peer's run helper (required)
#   TARGETS        from: java thruster thruster-1shard thruster-unpinned (pinShards=false)
#                  thruster-onename (brokerPerShard=false: one broker name, hops to owners)
#                                                                 [java thruster thruster-1shard]
#   WORKLOADS      from: sync (8 threads) batch (32 x 4 threads)  [sync batch]
#   ROUNDS         rounds; each round runs every target once      [2]
#   DURATION_S     timed seconds per run (after WARMUP_S)         [10]
#   WARMUP_S       untimed seconds before the window (Java JIT)   [5]
#   FLUSH          ASYNC_FLUSH or SYNC_FLUSH                      [ASYNC_FLUSH]
#   JAVA_HEAP      Java broker heap (-Xms/-Xmx)                   [1g]
#   PORT_BASE      ports used: BASE+1 (Java namesrv), BASE+11 (Java broker), BASE+1001/1011
#                  (Thruster), BASE+2001/2011 (Thruster shards=1), BASE+3001/3011
#                  (Thruster unpinned), BASE+4001/4011 (one name)   [38000]
#
# Output in OUT_DIR, per flush mode: results-FLUSH.tsv (workload round target msg_per_s
# cpu_us_per_msg client_cpu_us_per_msg line), summary-FLUSH.txt (per-round ratios against the
# Java broker, and the client's ceiling: the msg/s the host's cores would give if the broker
# cost nothing, nproc / client CPU per message),
# runs-FLUSH.log (every program's whole output) and load-FLUSH.txt (uptime before and after).
# Needs: cargo build --release -p thruster-broker (or THRUSTER_BIN=path).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${JAVA_PEER_RUN:?set JAVA_PEER_RUN to the Java peer run helper (see bench/results/java/README.md)}
OUT=${1:-bench/results/java}
TARGETS=${TARGETS:-java thruster thruster-1shard}
WORKLOADS=${WORKLOADS:-sync batch}
ROUNDS=${ROUNDS:-2}
DURATION_S=${DURATION_S:-10}
WARMUP_S=${WARMUP_S:-5}
FLUSH=${FLUSH:-ASYNC_FLUSH}
PORT_BASE=${PORT_BASE:-38000}
BIN=${THRUSTER_BIN:-target/release/thruster-broker}
TOPIC=JavaCompare
. bench/lib.sh
bench_init java-compare

declare -A NAMESRV BROKER_PID CLUSTER
start_thruster() { # NAME NAMESRV_PORT LISTEN_PORT [--set k=v ...]
    local name=$1 ns_port=$2 port=$3
    shift 3
    start_broker "$name" "$BIN" --standalone --namesrv-listen "127.0.0.1:$ns_port" \
        --set "listenPort=$port" --set "flushDiskType=$FLUSH" "$@"
    NAMESRV[$name]=127.0.0.1:$ns_port
    BROKER_PID[$name]=$LAST_PID
    CLUSTER[$name]=DefaultCluster
}

start_java() { # NAMESRV_PORT BROKER_PORT
    start_java_broker java "$1" "$2" "$FLUSH" "${JAVA_HEAP:-1g}"
    NAMESRV[java]=127.0.0.1:$1
    BROKER_PID[java]=$LAST_PID
    CLUSTER[java]=JavaCluster
}

for t in $TARGETS; do
    case $t in
    java) start_java $((PORT_BASE + 1)) $((PORT_BASE + 11)) ;;
    thruster) start_thruster thruster $((PORT_BASE + 1001)) $((PORT_BASE + 1011)) ;;
    thruster-1shard) start_thruster thruster-1shard $((PORT_BASE + 2001)) $((PORT_BASE + 2011)) --set shards=1 ;;
    thruster-unpinned) start_thruster thruster-unpinned $((PORT_BASE + 3001)) $((PORT_BASE + 3011)) \
        --set pinShards=false ;;
    thruster-onename) start_thruster thruster-onename $((PORT_BASE + 4001)) $((PORT_BASE + 4011)) \
        --set brokerPerShard=false ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
for t in $TARGETS; do
    # 8 queues in all on every target (Thruster spreads a cluster-wide create over its shards)
    for _ in $(seq 30); do
        "$RUN" mqadmin updateTopic -n "${NAMESRV[$t]}" -c "${CLUSTER[$t]}" -t "$TOPIC" -r 8 -w 8 \
            >"$WORK/topic-$t.txt" 2>&1 && grep -q "success" "$WORK/topic-$t.txt" && break
        sleep 1
    done
    grep -q success "$WORK/topic-$t.txt" || { cat "$WORK/topic-$t.txt" >&2; exit 1; }
    echo "$t: namesrv ${NAMESRV[$t]}, broker pid ${BROKER_PID[$t]}"
done
echo "load before: $(uptime)" | tee "$OUT/load-$FLUSH.txt"

RESULTS=$OUT/results-$FLUSH.tsv
printf 'workload\tround\ttarget\tmsg_per_s\tcpu_us_per_msg\tclient_cpu_us_per_msg\tline\n' >"$RESULTS"
: >"$OUT/runs-$FLUSH.log" # every program's whole output (errors included)
for workload in $WORKLOADS; do
    case $workload in
    sync) args=(SyncProducer -c 8) ;;
    batch) args=(BatchProducer -c 4 -b 32) ;;
    *) echo "unknown workload $workload" >&2; exit 2 ;;
    esac
    for round in $(seq "$ROUNDS"); do
        for t in $TARGETS; do
            echo "== $workload round $round $t" >>"$OUT/runs-$FLUSH.log"
            line=$("$RUN" java-class "${args[@]}" -n "${NAMESRV[$t]}" -t "$TOPIC" -d "$DURATION_S" \
                -w "$WARMUP_S" -pid "${BROKER_PID[$t]}" 2>&1 | tee -a "$OUT/runs-$FLUSH.log" |
                grep -E '^(sync|batch) threads=' | tail -1) || true
            rate=$(sed -n 's/.*msg\/s=\([0-9.]*\).*/\1/p' <<<"$line")
            cpu=$(sed -n 's/.*brokerCpuUsPerMsg=\([0-9.n\/a]*\).*/\1/p' <<<"$line")
            client=$(sed -n 's/.*clientCpuUsPerMsg=\([0-9.n\/a]*\).*/\1/p' <<<"$line")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$round" "$t" "${rate:-0}" "${cpu:-?}" \
                "${client:-?}" "$line" \
                | tee -a "$RESULTS"
        done
    done
done
echo "load after: $(uptime)" | tee -a "$OUT/load-$FLUSH.txt"

# per-round ratios against the Java broker (when it ran)
awk -F'\t' -v cores="$(nproc)" 'NR > 1 { rate[$1" "$2" "$3] = $4; cpu[$1" "$2" "$3] = $5
        client[$1" "$2" "$3] = $6; key[$1" "$2] = 1; t[$3] = 1 }
    END {
        for (k in key) {
            base = rate[k" java"]
            for (name in t) {
                r = rate[k" "name]
                printf "%s %-16s %9.0f msg/s %7s us/msg", k, name, r, cpu[k" "name]
                if (base > 0) printf "  x%.2f of java", r / base
                c = client[k" "name]
                if (c > 0) {
                    printf "  client %s us/msg, ceiling %.0f msg/s", c, cores * 1e6 / c
                    if (base > 0) printf " (x%.2f of java)", cores * 1e6 / c / base
                }
                printf "\n"
            }
        }
    }' "$RESULTS" | sort | tee "$OUT/summary-$FLUSH.txt"
