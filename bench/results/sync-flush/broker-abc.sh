#!/usr/bin/env bash
# usage: flush-abc.sh RATE [extra compare args]; targets: async (new), sync-base, sync-new
set -euo pipefail
cd /work/wt-flush
. bench/lib.sh
bench_init flushabc
NEW=/work/target-flush/release/thruster-broker; BASE=/work/flush-base-bin/thruster-broker
start_broker async-new $NEW --standalone --namesrv-listen 127.0.0.1:41876 --set listenPort=41911 --set flushDiskType=ASYNC_FLUSH
A="async-new=127.0.0.1:41876@$LAST_PID"
start_broker sync-base $BASE --standalone --namesrv-listen 127.0.0.1:42876 --set listenPort=42911 --set flushDiskType=SYNC_FLUSH
B="sync-base=127.0.0.1:42876@$LAST_PID"
start_broker sync-new $NEW --standalone --namesrv-listen 127.0.0.1:43876 --set listenPort=43911 --set flushDiskType=SYNC_FLUSH
C="sync-new=127.0.0.1:43876@$LAST_PID"
echo "targets $A $B $C"
RATE=$1; shift
/work/target-flush/release/thruster-bench compare --target $A --target $B --target $C --rounds ${ROUNDS:-3} --plain --workload produce --mode async --producers 8 --in-flight 8 --rate $RATE --duration-s ${DUR:-10} "$@"
