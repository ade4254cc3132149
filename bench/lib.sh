# Sourced by the bench scripts: a work directory under /tmp that goes, with every process the
# script started, when the script exits; and a Thruster broker started in it.
#
#   bench_init NAME                       WORK=/tmp/thruster-NAME.XXXXXX, PIDS=(), trap on EXIT
#   wait_for FILE PATTERN PID WHAT [LOG]  until FILE holds PATTERN (60 s); exits, showing the
#                                         end of LOG (default FILE), if PID dies first
#   start_broker NAME BINARY ARGS...      BINARY --set storePathRootDir=$WORK/NAME/store
#                                         --set mappedFileSizeCommitLog=256 MiB ARGS..., output
#                                         in $WORK/NAME; waits for its listening line; LAST_PID
#   start_java_broker NAME NS_PORT PORT FLUSH [HEAP]
#                                         Apache RocketMQ's name server and broker through the
#                                         Java peer's run helper $JAVA_PEER_RUN (see
#                                         bench/results/java/README.md), in $WORK/NAME; cluster
#                                         JavaCluster; LAST_PID is the broker's

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

start_java_broker() {
    local name=$1 ns_port=$2 port=$3 flush=$4 heap=${5:-1g} d=$WORK/$1
    local run=${JAVA_PEER_RUN:?set JAVA_PEER_RUN to the Java peer run helper}
    mkdir -p "$d/home" "$d/store" # RMQ_HOME: the peer's logs land under this run's temp dir
    echo "listenPort=$ns_port" >"$d/namesrv.conf"
    cat >"$d/broker.conf" <<EOF
brokerClusterName=JavaCluster
brokerName=$name
brokerId=0
namesrvAddr=127.0.0.1:$ns_port
listenPort=$port
brokerIP1=127.0.0.1
storePathRootDir=$d/store
storePathCommitLog=$d/store/commitlog
flushDiskType=$flush
mappedFileSizeCommitLog=268435456
autoCreateTopicEnable=true
EOF
    RMQ_HOME=$d/home "$run" namesrv -c "$d/namesrv.conf" >"$d/namesrv.out" 2>&1 &
    PIDS+=("$!")
    wait_for "$d/namesrv.out" "boot success" "$!" "$name namesrv"
    RMQ_HOME=$d/home HEAP=$heap "$run" broker -c "$d/broker.conf" >"$d/broker.out" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_for "$d/broker.out" "boot success" "$LAST_PID" "$name broker"
}
