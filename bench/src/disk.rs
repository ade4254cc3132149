//! `disk`: the physical limit of a directory, measured with the same I/O the broker does:
//! sequential O_DIRECT writes of its chunk size (async flush), and small writes followed by
//! fdatasync into already-written blocks (sync flush's group commit), in one run with the
//! broker figures. The measurements are `thruster-tune probe`'s (`thruster_tuning::probe`).

use std::io;
use std::path::Path;
use std::time::Duration;

use thruster_tuning::probe::{self, Limit, ProbeFile};

use crate::stats::Summary;

/// Sequential O_DIRECT writes of `block_bytes` (one in flight) into an allocated file of
/// `total_bytes`: MB/s and per-write latency.
pub fn sequential_writes(dir: &Path, block_bytes: usize, total_bytes: u64) -> io::Result<Summary> {
    let file = ProbeFile::allocated(dir, "thruster-bench-disk.seq", total_bytes)?;
    let m = probe::sequential_writes(&file, block_bytes, 1, Limit::bytes(file.bytes))?;
    Ok(Summary::new(
        &format!("disk seq {}KiB O_DIRECT", block_bytes >> 10),
        &m.histogram,
        0,
        m.bytes,
        m.elapsed,
    ))
}

/// Writes of `block_bytes` each followed by fdatasync, into a file written once beforehand
/// (as the broker's prepared segments are), for `duration`.
pub fn synced_writes(
    dir: &Path,
    block_bytes: usize,
    file_bytes: u64,
    duration: Duration,
) -> io::Result<Summary> {
    let file = ProbeFile::prewritten(dir, "thruster-bench-disk.sync", file_bytes)?;
    let m = probe::synced_writes(&file, block_bytes, false, Limit::time(duration))?;
    Ok(Summary::new(
        &format!("disk {}KiB+fdatasync", block_bytes >> 10),
        &m.histogram,
        0,
        m.bytes,
        m.elapsed,
    ))
}
