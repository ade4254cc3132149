#!/usr/bin/env bash
# perf profile of a SYNC_FLUSH broker (BIN=$1, NAME=$2) under 5000 msg/s open loop
set -euo pipefail
cd /work/wt-flush
. bench/lib.sh
bench_init flushperf
start_broker "$2" "$1" --standalone --namesrv-listen 127.0.0.1:44876 --set listenPort=44911 --set flushDiskType=SYNC_FLUSH
PID=$LAST_PID
( sleep 3; perf record -F 999 -g -p $PID -o /work/flush-bench/perf-$2.data -- sleep 8 >/dev/null 2>&1 ) &
/work/target-flush/release/thruster-bench produce --namesrv 127.0.0.1:44876 --plain --mode async --producers 8 --in-flight 8 --rate ${RATE:-5000} --duration-s 13 --broker-pid $PID 2>&1 | tail -3
sleep 1
perf report -i /work/flush-bench/perf-$2.data --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -25 > /work/flush-bench/perf-$2.top.txt
