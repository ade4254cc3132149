#!/usr/bin/env bash
# Catch-up consume, readers and brokers side by side: this build's bench reader (`after`) and,
# with BEFORE_BIN, another build's (`before`), each reading the same backlog from a Thruster
# broker of this build (`thruster`, defaults), of the other build (`thruster-before`, when
# BEFORE_BIN has a thruster-broker) and, with JAVA_PEER_RUN, from Apache RocketMQ 4.9.8's broker
# (`java`), in alternating rounds, at each message size; loopback TCP measured in the same run.
#
#   bench/catchup-compare.sh [OUT_DIR]          (default bench/results/catchup/compare)
#
# Environment:
#   SIZES          message body sizes, bytes                                  [1024 4096]
#   BACKLOG_MB     backlog per broker and size, MiB of bodies                 [400]
#   PULL_BATCH     messages a pull asks for (Java's broker caps it at 32)     [1024]
#   ROUNDS         rounds; each round runs every reader against every broker  [2]
#   THREADS        consumer threads (reactors) of thruster-bench              [1]
#   BIN            this build (thruster-broker, thruster-bench)               [target/release]
#   BEFORE_BIN     the other build's directory (its thruster-bench)           [none]
#   JAVA_PEER_RUN  the Java peer's run helper (bench/results/java/README.md)  [none: no Java]
#   PORT_BASE      ports BASE+1/11 (Thruster), BASE+101/111 (Java),
#                  BASE+201/211 (thruster-before)                             [52000]
#
# Output in OUT_DIR: results.tsv (size round reader broker MB/s broker_cores
# broker_cpu_ms_per_GB line), summary.txt (medians, ratios against Java and loopback), runs.log
# (every program's output). Needs: cargo build --release -p thruster-broker -p thruster-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/catchup/compare}
SIZES=${SIZES:-1024 4096}
BACKLOG_MB=${BACKLOG_MB:-400}
PULL_BATCH=${PULL_BATCH:-1024}
ROUNDS=${ROUNDS:-2}
PORT_BASE=${PORT_BASE:-52000}
BIN=${BIN:-target/release}
. bench/lib.sh
bench_init catchup-compare

declare -A NAMESRV BROKER_PID READER_BIN
READERS=after
READER_BIN[after]=$BIN
if [ -n "${BEFORE_BIN:-}" ]; then
    READERS="before after"
    READER_BIN[before]=$BEFORE_BIN
fi
start_broker thruster "$BIN/thruster-broker" --standalone \
    --namesrv-listen "127.0.0.1:$((PORT_BASE + 1))" --set "listenPort=$((PORT_BASE + 11))"
NAMESRV[thruster]=127.0.0.1:$((PORT_BASE + 1))
BROKER_PID[thruster]=$LAST_PID
BROKERS=thruster
if [ -n "${BEFORE_BIN:-}" ] && [ -x "$BEFORE_BIN/thruster-broker" ]; then
    start_broker thruster-before "$BEFORE_BIN/thruster-broker" --standalone \
        --namesrv-listen "127.0.0.1:$((PORT_BASE + 201))" --set "listenPort=$((PORT_BASE + 211))"
    NAMESRV[thruster-before]=127.0.0.1:$((PORT_BASE + 201))
    BROKER_PID[thruster-before]=$LAST_PID
    BROKERS="$BROKERS thruster-before"
fi
if [ -n "${JAVA_PEER_RUN:-}" ]; then
    start_java_broker java $((PORT_BASE + 101)) $((PORT_BASE + 111)) ASYNC_FLUSH
    NAMESRV[java]=127.0.0.1:$((PORT_BASE + 101))
    BROKER_PID[java]=$LAST_PID
    BROKERS="$BROKERS java"
fi
mkdir -p "$OUT"
: >"$OUT/runs.log"
for size in $SIZES; do
    for b in $BROKERS; do
        echo "== backlog $b $size B" >>"$OUT/runs.log"
        "$BIN/thruster-bench" produce --namesrv "${NAMESRV[$b]}" --topic "CatchUp-$size" --plain \
            --message-bytes "$size" --mode async --producers 4 --in-flight 16 --batch 16 \
            --messages $((BACKLOG_MB * 1048576 / size)) --duration-s 600 >>"$OUT/runs.log" 2>&1
    done
done
# One untimed read of every backlog first: the first read after producing runs while the
# broker still writes the backlog out (and the Java broker's page cache fills); no reader
# should get that round.
for size in $SIZES; do
    for b in $BROKERS; do
        echo "== warm-up read $b $size B" >>"$OUT/runs.log"
        "$BIN/thruster-bench" consume --namesrv "${NAMESRV[$b]}" --topic "CatchUp-$size" --plain \
            --message-bytes "$size" --pull-batch "$PULL_BATCH" --duration-s 300 \
            >>"$OUT/runs.log" 2>&1
    done
done
echo "load before: $(uptime)" | tee "$OUT/load.txt"

RESULTS=$OUT/results.tsv
printf 'size\tround\treader\tbroker\tMB_per_s\tbroker_cores\tbroker_cpu_ms_per_GB\tline\n' >"$RESULTS"
for size in $SIZES; do
    for round in $(seq "$ROUNDS"); do
        # Readers take turns going first.
        order=$READERS
        [ $((round % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$READERS" | tac | tr '\n' ' ')
        for reader in $order; do
            for b in $BROKERS; do
                echo "== $size B round $round $reader reads $b" >>"$OUT/runs.log"
                line=$("${READER_BIN[$reader]}/thruster-bench" consume --namesrv "${NAMESRV[$b]}" \
                    --topic "CatchUp-$size" --plain --message-bytes "$size" \
                    --pull-batch "$PULL_BATCH" --threads "${THREADS:-1}" --duration-s 300 \
                    --broker-pid "${BROKER_PID[$b]}" --label "$reader-$b" 2>&1 |
                    tee -a "$OUT/runs.log" | grep "^$reader-$b" | tail -1) || true
                mbps=$(awk '{ print $3 }' <<<"$line")
                cores=$(sed -n 's/.*(\([0-9.]*\)c).*/\1/p' <<<"$line")
                per_gb=$(awk -v c="${cores:-0}" -v m="${mbps:-0}" \
                    'BEGIN { if (m > 0) printf "%.0f", c * 1e6 / m; else print "?" }')
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$round" "$reader" "$b" \
                    "${mbps:-0}" "${cores:-?}" "$per_gb" "$line" | tee -a "$RESULTS"
            done
        done
    done
done
echo "== loopback TCP, one connection, MiB/s" | tee -a "$OUT/runs.log"
for _ in $(seq "$ROUNDS"); do python3 bench/loopback.py 2048; done | tee -a "$OUT/runs.log" |
    tee "$OUT/loopback.txt"
echo "load after: $(uptime)" | tee -a "$OUT/load.txt"

# Medians per (size, reader, broker); ratios against Java's broker read by the same reader, and
# against the median loopback bandwidth (MB/s here are 10^6 bytes, loopback is MiB/s).
loopback=$(grep -Eo '[0-9]+(\.[0-9]+)?' "$OUT/loopback.txt" | sort -n |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
awk -F'\t' -v loop="$loopback" '
    NR > 1 { k = $1" "$3" "$4; n[k]++; mb[k, n[k]] = $5; cpu[k, n[k]] = $7 }
    function median(a, k, c,   i, j, t, v) {
        for (i = 1; i <= c; i++) v[i] = a[k, i]
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
    }
    END {
        printf "loopback TCP median %.0f MiB/s (%.0f MB/s)\n", loop, loop * 1.048576
        for (k in n) { m[k] = median(mb, k, n[k]); c[k] = median(cpu, k, n[k]) }
        for (k in n) {
            split(k, f, " ")
            printf "%5s B  %-6s reads %-8s  %7.1f MB/s  broker %6.0f ms CPU/GB", f[1], f[2], f[3], m[k], c[k]
            j = f[1]" "f[2]" java"
            if ((j in m) && m[j] > 0) printf "  x%.2f of java", m[k] / m[j]
            if (loop > 0) printf "  %.0f%% of loopback", 100 * m[k] / (loop * 1.048576)
            printf "\n"
        }
    }' "$RESULTS" | sort | tee "$OUT/summary.txt"
