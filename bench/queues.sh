#!/usr/bin/env bash
# Cost per message against the number of queues (issue 12): plain (shard-unaware) sends spread
# over 1, 100, 1000 and 2500 topics of 4 queues each (up to 10 000 queues), every topic created
# beforehand, in alternating rounds (every topic count and every target once per round); then
# the auto-creation of many topics by first sends while another producer sends steadily to an
# existing topic (does creation stall it?).
#
#   bench/queues.sh [OUT_DIR]              (default bench/results/queues)
#
# Environment:
#   BASE_BIN     a thruster-broker built from another commit, run side by side (optional)
#   TOPIC_COUNTS topic counts to spread over                                  [1 100 1000 2500]
#   WORKLOADS    from: sync async                                             [sync async]
#                sync:  8 synchronous producers;  async: 4 producers x 16 in flight
#   ROUNDS       rounds                                                       [2]
#   DURATION_S   seconds per run                                              [10]
#   CREATE       topics auto-created by first sends, 0 to skip                [1200]
#   STEADY_RATE  the steady producer's rate during creation, msg/s           [2000]
#   BIN          where thruster-broker, thruster-bench and thruster-admin are [target/release]
#
# Every run is `thruster-bench produce --plain ... --broker-pid`; the table (msg/s, broker µs
# CPU per message, ratios to 1 topic in the same round) is printed at the end and written to
# OUT_DIR/table.md; OUT_DIR/runs.jsonl has one summary per run.
#
# Needs: cargo build --release -p thruster-broker -p thruster-bench -p thruster-admin.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-bench/results/queues}
TOPIC_COUNTS=${TOPIC_COUNTS:-1 100 1000 2500}
WORKLOADS=${WORKLOADS:-sync async}
ROUNDS=${ROUNDS:-2}
DURATION_S=${DURATION_S:-10}
CREATE=${CREATE:-1200}
STEADY_RATE=${STEADY_RATE:-2000}
BIN=${BIN:-target/release}
. bench/lib.sh
bench_init queues

# start NAME BINARY NAMESRV_PORT LISTEN_PORT: appends "NAME NAMESRV PID PORT" to TARGETS
TARGETS=()
start() {
    local name=$1 binary=$2 ns_port=$3 port=$4
    start_broker "$name" "$binary" --standalone --namesrv-listen "127.0.0.1:$ns_port" \
        --set "listenPort=$port"
    TARGETS+=("$name 127.0.0.1:$ns_port $LAST_PID $port")
}
start new "$BIN/thruster-broker" 21876 21911
if [[ -n "${BASE_BIN:-}" ]]; then
    start base "$BASE_BIN" 22876 22911
fi
mkdir -p "$OUT"
: >"$OUT/runs.jsonl"

max_topics=0
for n in $TOPIC_COUNTS; do ((n > max_topics)) && max_topics=$n; done

# Topics Q (the one-topic runs) and Q-0 … Q-<max-1>, 4 queues each, created through shard 0's
# broker address (the topic table's writer), 8 at a time.
for t in "${TARGETS[@]}"; do
    read -r name ns pid port <<<"$t"
    echo "creating $((max_topics + 1)) topics on $name"
    { echo Q; seq 0 $((max_topics - 1)) | sed 's/^/Q-/'; } |
        xargs -P 8 -I{} "$BIN/thruster-admin" updateTopic -b "127.0.0.1:$port" -t {} -r 4 -w 4 \
            >/dev/null
done

# record DIR: the summary a run wrote in DIR, one line of runs.jsonl
record() {
    python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[0]))' \
        "$1/summary.json" >>"$OUT/runs.jsonl"
}

# run LABEL NAMESRV PID thruster-bench-produce-args...: one run, its summary to runs.jsonl
run() {
    local label=$1 ns=$2 pid=$3
    shift 3
    local dir="$WORK/run"
    rm -rf "$dir"
    "$BIN/thruster-bench" produce --plain --namesrv "$ns" --broker-pid "$pid" --label "$label" \
        --out "$dir" "$@" | sed -n 2p
    record "$dir"
}

workload_args() {
    case $1 in
    sync) echo --mode sync --producers 8 ;;
    async) echo --mode async --producers 4 --in-flight 16 ;;
    *) echo "unknown workload $1" >&2; exit 2 ;;
    esac
}

# Warm-up: one pass over every topic of the largest count (opens the ConsumeQueues and fills the
# client's routes), not measured.
for t in "${TARGETS[@]}"; do
    read -r name ns pid port <<<"$t"
    "$BIN/thruster-bench" produce --plain --namesrv "$ns" --topic Q --topics "$max_topics" \
        --mode async --producers 4 --in-flight 16 --messages $((max_topics * 8)) \
        --duration-s 120 >/dev/null
done

for round in $(seq "$ROUNDS"); do
    for workload in $WORKLOADS; do
        for n in $TOPIC_COUNTS; do
            for t in "${TARGETS[@]}"; do
                read -r name ns pid port <<<"$t"
                # shellcheck disable=SC2046
                run "$name $workload topics=$n r$round" "$ns" "$pid" --topic Q --topics "$n" \
                    --duration-s "$DURATION_S" $(workload_args "$workload")
            done
        done
    done
done

# Auto-creation: a steady open-loop producer on the existing topic Q while another producer's
# first sends create CREATE new topics (8 sync senders); before it, the same steady load alone;
# after it, once more from 50 s after the creation began (when the new queues' first syncs come
# due: flushConsumeQueueThoroughInterval, 60 s).
steady() { # LABEL DURATION_S NAMESRV: the steady producer in the background; STEADY_PID
    "$BIN/thruster-bench" produce --plain --namesrv "$3" --topic Q --mode sync --producers 64 \
        --rate "$STEADY_RATE" --duration-s "$2" --label "$1" --out "$WORK/steady" \
        >"$WORK/steady.txt" &
    STEADY_PID=$!
}
steady_done() {
    wait "$STEADY_PID"
    sed -n 2p "$WORK/steady.txt"
    record "$WORK/steady"
}
if ((CREATE > 0)); then
    for t in "${TARGETS[@]}"; do
        read -r name ns pid port <<<"$t"
        steady "$name steady alone" 20 "$ns"
        steady_done
        began=$SECONDS
        steady "$name steady during creation" 20 "$ns"
        sleep 2
        run "$name create $CREATE topics" "$ns" "$pid" --topic "New$RANDOM" --topics "$CREATE" \
            --mode sync --producers 8 --messages "$CREATE" --duration-s 120
        steady_done
        sleep $((50 - (SECONDS - began) > 0 ? 50 - (SECONDS - began) : 0))
        steady "$name steady 50-80 s after creation" 30 "$ns"
        steady_done
    done
fi

python3 - "$OUT/runs.jsonl" <<'EOF' | tee "$OUT/table.md"
import json, re, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
by = {r["name"]: r for r in runs}
cells = {}
for r in runs:
    m = re.fullmatch(r"(\S+) (\S+) topics=(\d+) r(\d+)", r["name"])
    if m:
        cells.setdefault((m[1], m[2], int(m[3])), []).append((int(m[4]), r))
def rng(values, fmt):
    return fmt.format(min(values)) if len(values) == 1 else \
        (fmt + "–" + fmt).format(min(values), max(values))
print("| target | workload | topics | queues | msg/s | broker µs CPU/msg | msg/s ÷ 1 topic | CPU/msg ÷ 1 topic |")
print("|---|---|---|---|---|---|---|---|")
for (target, workload, n), rs in sorted(cells.items()):
    one = dict(cells.get((target, workload, 1), []))
    rates = [r["ops_per_s"] for _, r in rs]
    cpus = [r["broker_cpu_us_per_op"] for _, r in rs]
    rate_ratio = [r["ops_per_s"] / one[k]["ops_per_s"] for k, r in rs if k in one]
    cpu_ratio = [r["broker_cpu_us_per_op"] / one[k]["broker_cpu_us_per_op"] for k, r in rs if k in one]
    med = lambda v: "×{:.2f}".format(statistics.median(v)) if v else "-"
    print(f"| {target} | {workload} | {n} | {4 * n} | {rng([x / 1000 for x in rates], '{:.1f}')} k "
          f"| {rng(cpus, '{:.1f}')} | {med(rate_ratio)} | {med(cpu_ratio)} |")
print()
print("| run | msg/s | p50 | p99 | p99.9 | max | errors |")
print("|---|---|---|---|---|---|---|")
for r in runs:
    if "topics=" not in r["name"]:
        print(f"| {r['name']} | {r['ops_per_s']:.0f} | {r['p50_us']} µs | {r['p99_us']} µs "
              f"| {r['p999_us']} µs | {r['max_us']} µs | {r['errors']} |")
EOF
