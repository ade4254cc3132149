# Sourced by the bench scripts: a work directory under /tmp that goes, with every process the
# script started, when the script exits; and a Thruster broker started in it.
#
#   bench_init NAME                       WORK=/tmp/thruster-NAME.XXXXXX, PIDS=(), trap on EXIT
#   wait_for FILE PATTERN PID WHAT [LOG]  until FILE holds PATTERN (60 s); exits, showing the
#                                         end of LOG (default FILE), if PID dies first
#   start_broker NAME BINARY ARGS...      BINARY --set storePathRootDir=$WORK/NAME/store
#                                         --set mappedFileSizeCommitLog=256 MiB ARGS..., output
#                                         in $WORK/NAME; waits for its listening line; LAST_PID

bench_init() {
    WORK=$(mktemp -d "/tmp/thruster-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}

wait_for() {
    for _ in $(seq 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "$4 exited:" >&2; tail -20 "${5:-$1}" >&2; exit 1; }
        sleep 0.1
    done
    echo "$4 did not start in 60 s" >&2
    exit 1
}

LAST_PID=
start_broker() {
    local name=$1 binary=$2
    shift 2
    mkdir -p "$WORK/$name"
    "$binary" --set "storePathRootDir=$WORK/$name/store" \
        --set mappedFileSizeCommitLog=268435456 "$@" \
        >"$WORK/$name/stdout" 2>"$WORK/$name/broker.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_for "$WORK/$name/stdout" "thruster-broker listening" "$LAST_PID" "$name" \
        "$WORK/$name/broker.log"
}
