#!/bin/bash
# Alternating SYNC_FLUSH store runs (base, new), each between raw durable writes of the
# store's group size measured by fio at the same moment (QD1: O_DSYNC, and write+fdatasync).
cd /work/flush-bench
raw() {
  for mode in dsync fdatasync; do
    if [ $mode = dsync ]; then extra="--sync=dsync"; else extra="--fdatasync=1"; fi
    fio --name=raw --ioengine=io_uring --direct=1 --filename=/work/flush-bench/raw --size=256m --bs=76k --rw=write --runtime=4 --time_based --iodepth=1 $extra --output-format=json 2>/dev/null | python3 -c "import json,sys;j=json.load(sys.stdin)['jobs'][0]['write'];print('raw $mode QD1 76K', round(j['bw']/1024,1),'MB/s')"
  done
}
fio --name=prep --ioengine=psync --direct=1 --filename=/work/flush-bench/raw --size=256m --bs=1m --rw=write --end_fsync=1 >/dev/null 2>&1
for r in $(seq ${ROUNDS:-4}); do
  for v in base new; do
    raw
    echo "=== $v round $r $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    THRUSTER_BENCH_ONLY=store-sync THRUSTER_BENCH_MIB=256 THRUSTER_BENCH_DIR=/work/flush-bench/dir-$v nice -n 5 ./store-$v --bench 2>&1 | grep "store Sync"
    rm -rf /work/flush-bench/dir-$v
  done
done
raw
rm -f /work/flush-bench/raw
