//! The disk probe: the store's own I/O patterns, O_DIRECT, on the store's file system —
//! sequential writes over block sizes and queue depths, write + fdatasync and O_DSYNC writes
//! into pre-written blocks and into a growing file, random reads. `thruster-bench disk` uses
//! the same functions.
//!
//! Queue depth comes from threads, each with one `pwrite`/`pread` in flight on a shared
//! O_DIRECT file (no io_uring: this crate stays free of the broker's runtime, and blocking
//! threads keep exactly `queue_depth` requests at the device, as fio's `psync` engine with
//! `numjobs` does).

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::io_properties::{
    self, Figure, IoProperties, Kind, CHUNK_CANDIDATES_BYTES, FORMAT_VERSION,
};

/// Alignment of O_DIRECT buffers, offsets and sizes.
pub const ALIGN_BYTES: usize = 4096;
/// Highest latency recorded, microseconds; larger values are clamped to it.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Pre-writing is done in writes of this size.
const PREWRITE_BLOCK_BYTES: usize = 1 << 20;

/// When a measurement stops: after `duration` or `bytes`, whichever comes first, but not before
/// `ops_min` operations (so a slow device still gives figures).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub duration: Duration,
    pub bytes: u64,
    pub ops_min: u64,
}

impl Limit {
    pub fn time(duration: Duration) -> Limit {
        Limit {
            duration,
            bytes: u64::MAX,
            ops_min: 8,
        }
    }

    pub fn bytes(bytes: u64) -> Limit {
        Limit {
            duration: Duration::MAX,
            bytes,
            ops_min: 0,
        }
    }
}

/// The latencies (microseconds), bytes moved and wall time of one measurement.
pub struct Measurement {
    pub histogram: Histogram<u64>,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Measurement {
    pub fn figure(&self, kind: Kind, block_bytes: usize, queue_depth: usize) -> Figure {
        let elapsed_s = self.elapsed.as_secs_f64().max(1e-9);
        let h = &self.histogram;
        Figure {
            kind,
            block_bytes,
            queue_depth,
            ops_per_s: h.len() as f64 / elapsed_s,
            mb_per_s: self.bytes as f64 / elapsed_s / 1e6,
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// An aligned, zeroed buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout =
            std::alloc::Layout::from_size_align(len.max(ALIGN_BYTES), ALIGN_BYTES).expect("layout");
        // SAFETY: non-zero size, valid alignment; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Aligned {
            ptr,
            len: layout.size(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes, and &mut self makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, ALIGN_BYTES).expect("layout");
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn open(path: &Path, extra_flags: i32, truncate: bool) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | extra_flags)
        .open(path)
        .map_err(|e| context(e, format!("opening {} with O_DIRECT", path.display())))
}

/// A file the probe writes into; removed when dropped.
pub struct ProbeFile {
    pub path: PathBuf,
    pub bytes: u64,
}

impl ProbeFile {
    /// `bytes` of zeros written and synced (as the broker's prepared segments are).
    pub fn prewritten(dir: &Path, name: &str, bytes: u64) -> io::Result<ProbeFile> {
        let file = ProbeFile {
            path: dir.join(name),
            bytes: align_down(bytes.max(PREWRITE_BLOCK_BYTES as u64)),
        };
        let handle = open(&file.path, 0, true)?;
        let buffer = Aligned::new(PREWRITE_BLOCK_BYTES);
        let mut pos = 0;
        while pos < file.bytes {
            let len = (file.bytes - pos).min(PREWRITE_BLOCK_BYTES as u64) as usize;
            handle
                .write_all_at(&buffer.as_slice()[..len], pos)
                .map_err(|e| context(e, format!("pre-writing {}", file.path.display())))?;
            pos += len as u64;
        }
        handle.sync_all()?;
        Ok(file)
    }

    /// `bytes` allocated (fallocate) but never written (as the broker's segments are under
    /// ASYNC_FLUSH); falls back to a sparse file where the file system cannot allocate.
    pub fn allocated(dir: &Path, name: &str, bytes: u64) -> io::Result<ProbeFile> {
        let file = ProbeFile {
            path: dir.join(name),
            bytes: align_down(bytes.max(PREWRITE_BLOCK_BYTES as u64)),
        };
        let handle = open(&file.path, 0, true)?;
        if !allocate(&handle, file.bytes) {
            handle.set_len(file.bytes)?;
        }
        Ok(file)
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn allocate(file: &std::fs::File, bytes: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; fallocate only changes the file's allocation.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) == 0 }
}

fn align_down(bytes: u64) -> u64 {
    bytes / ALIGN_BYTES as u64 * ALIGN_BYTES as u64
}

/// Runs `queue_depth` threads, each doing `op(offset, buffer)` at the offsets the shared
/// cursor hands out (`block_bytes` apart, wrapping at `file_bytes` unless `random`) until
/// `limit`; one latency per operation.
fn run_threads(
    queue_depth: usize,
    block_bytes: usize,
    file_bytes: u64,
    random: bool,
    limit: Limit,
    op: &(dyn Fn(u64, &mut [u8]) -> io::Result<()> + Sync),
) -> io::Result<Measurement> {
    let blocks = (file_bytes / block_bytes as u64).max(1);
    let cursor = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<io::Result<Histogram<u64>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..queue_depth.max(1))
            .map(|worker| {
                let cursor = &cursor;
                scope.spawn(move || {
                    let mut histogram = new_histogram();
                    let mut buffer = Aligned::new(block_bytes);
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (worker as u64 + 1);
                    loop {
                        let n = cursor.fetch_add(1, Ordering::Relaxed);
                        let done_bytes = n * block_bytes as u64;
                        if n >= limit.ops_min
                            && (done_bytes >= limit.bytes || start.elapsed() >= limit.duration)
                        {
                            return Ok(histogram);
                        }
                        let block = if random {
                            rng = xorshift(rng);
                            rng % blocks
                        } else {
                            n % blocks
                        };
                        let t0 = Instant::now();
                        op(
                            block * block_bytes as u64,
                            &mut buffer.as_mut_slice()[..block_bytes],
                        )?;
                        let us = (t0.elapsed().as_micros() as u64).clamp(1, LATENCY_MAX_US);
                        histogram.record(us).expect("value within bounds");
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("probe thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut histogram = new_histogram();
    for result in results {
        histogram.add(result?).expect("same bounds");
    }
    let bytes = histogram.len() * block_bytes as u64;
    Ok(Measurement {
        histogram,
        bytes,
        elapsed,
    })
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Sequential O_DIRECT writes of `block_bytes`, `queue_depth` in flight, through `file`
/// (wrapping at its end).
pub fn sequential_writes(
    file: &ProbeFile,
    block_bytes: usize,
    queue_depth: usize,
    limit: Limit,
) -> io::Result<Measurement> {
    let handle = open(&file.path, 0, false)?;
    run_threads(
        queue_depth,
        block_bytes,
        file.bytes,
        false,
        limit,
        &|pos, buf| {
            handle
                .write_all_at(buf, pos)
                .map_err(|e| context(e, format!("writing {} at {pos}", file.path.display())))
        },
    )
}

/// One write of `block_bytes` at a time into the pre-written `file`, each durable before the
/// next: with O_DSYNC (`dsync`) or followed by fdatasync.
pub fn synced_writes(
    file: &ProbeFile,
    block_bytes: usize,
    dsync: bool,
    limit: Limit,
) -> io::Result<Measurement> {
    let handle = open(&file.path, if dsync { libc::O_DSYNC } else { 0 }, false)?;
    run_threads(1, block_bytes, file.bytes, false, limit, &|pos, buf| {
        handle.write_all_at(buf, pos)?;
        if !dsync {
            handle.sync_data()?;
        }
        Ok(())
    })
    .map_err(|e| context(e, format!("synced writes into {}", file.path.display())))
}

/// Writes of `block_bytes` each followed by fdatasync, appending to a file that grows (and
/// starts again from empty at `file_bytes_max`).
pub fn growing_synced_writes(
    dir: &Path,
    block_bytes: usize,
    file_bytes_max: u64,
    limit: Limit,
) -> io::Result<Measurement> {
    let file = ProbeFile {
        path: dir.join("thruster-probe.grow"),
        bytes: file_bytes_max,
    };
    let handle = open(&file.path, 0, true)?;
    run_threads(1, block_bytes, file.bytes, false, limit, &|pos, buf| {
        if pos == 0 {
            handle.set_len(0)?;
        }
        handle.write_all_at(buf, pos)?;
        handle.sync_data()
    })
    .map_err(|e| context(e, format!("appending to {}", file.path.display())))
}

/// Random O_DIRECT reads of `block_bytes`, `queue_depth` in flight, from `file`.
pub fn random_reads(
    file: &ProbeFile,
    block_bytes: usize,
    queue_depth: usize,
    limit: Limit,
) -> io::Result<Measurement> {
    let handle = open(&file.path, 0, false)?;
    run_threads(
        queue_depth,
        block_bytes,
        file.bytes,
        true,
        limit,
        &|pos, buf| {
            handle
                .read_exact_at(buf, pos)
                .map_err(|e| context(e, format!("reading {} at {pos}", file.path.display())))
        },
    )
}

/// The probe's plan: the sequential sweep's depth, the depths tried at the chosen block, the
/// O_DSYNC / fdatasync block sizes and the random-read depths.
const SWEEP_DEPTH: usize = 4;
const DEPTHS: [usize; 4] = [1, 2, 8, 16];
const DSYNC_BLOCKS_BYTES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
const FDATASYNC_BLOCKS_BYTES: [usize; 2] = [4 << 10, 64 << 10];
const READ_BLOCK_BYTES: usize = 4 << 10;
const READ_DEPTHS: [usize; 2] = [1, 16];
/// Measurements in a probe (for the budget's split).
const STEPS: usize = CHUNK_CANDIDATES_BYTES.len()
    + DEPTHS.len()
    + DSYNC_BLOCKS_BYTES.len()
    + 2 * FDATASYNC_BLOCKS_BYTES.len()
    + READ_DEPTHS.len();
/// Part of the budget left for creating the files.
const SETUP_SHARE: f64 = 0.15;

/// File sizes for a budget: small budgets (tests, a quick look) get small files.
fn file_bytes(budget_s: f64) -> u64 {
    if budget_s < 20.0 {
        64 << 20
    } else {
        1 << 30
    }
}

/// Runs the whole probe in `dir` within about `budget_s` seconds, reporting each figure to
/// `progress` as it is measured.
pub fn run(
    dir: &Path,
    budget_s: f64,
    progress: &mut dyn FnMut(&Figure),
) -> io::Result<IoProperties> {
    let step = Duration::from_secs_f64(budget_s * (1.0 - SETUP_SHARE) / STEPS as f64);
    let limit = Limit::time(step);
    let bytes = file_bytes(budget_s);
    let mut figures = Vec::new();
    let mut record = |figure: Figure, figures: &mut Vec<Figure>| {
        progress(&figure);
        figures.push(figure);
    };
    {
        let seq = ProbeFile::allocated(dir, "thruster-probe.seq", bytes)?;
        for block in CHUNK_CANDIDATES_BYTES {
            let m = sequential_writes(&seq, block, SWEEP_DEPTH, limit)?;
            record(m.figure(Kind::SeqWrite, block, SWEEP_DEPTH), &mut figures);
        }
        let chunk = io_properties::chunk_bytes(&figures).unwrap_or(CHUNK_CANDIDATES_BYTES[2]);
        for depth in DEPTHS {
            let m = sequential_writes(&seq, chunk, depth, limit)?;
            record(m.figure(Kind::SeqWrite, chunk, depth), &mut figures);
        }
    }
    let prewritten = ProbeFile::prewritten(dir, "thruster-probe.data", bytes.min(256 << 20))?;
    for block in DSYNC_BLOCKS_BYTES {
        let m = synced_writes(&prewritten, block, true, limit)?;
        record(m.figure(Kind::DsyncPrewritten, block, 1), &mut figures);
    }
    for block in FDATASYNC_BLOCKS_BYTES {
        let m = synced_writes(&prewritten, block, false, limit)?;
        record(m.figure(Kind::FdatasyncPrewritten, block, 1), &mut figures);
    }
    for block in FDATASYNC_BLOCKS_BYTES {
        let m = growing_synced_writes(dir, block, bytes.min(256 << 20), limit)?;
        record(m.figure(Kind::FdatasyncGrowing, block, 1), &mut figures);
    }
    for depth in READ_DEPTHS {
        let m = random_reads(&prewritten, READ_BLOCK_BYTES, depth, limit)?;
        record(
            m.figure(Kind::RandomRead, READ_BLOCK_BYTES, depth),
            &mut figures,
        );
    }
    Ok(IoProperties {
        version: FORMAT_VERSION,
        dir: dir.display().to_string(),
        measured_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        budget_s,
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_measurement_moves_the_bytes_it_reports() {
        let dir = tempfile::tempdir().unwrap();
        let file = ProbeFile::prewritten(dir.path(), "data", 4 << 20).unwrap();
        let seq = sequential_writes(&file, 64 << 10, 2, Limit::bytes(2 << 20)).unwrap();
        assert_eq!(seq.bytes, 2 << 20);
        assert_eq!(seq.histogram.len(), 32);
        let limit = Limit {
            duration: Duration::ZERO,
            bytes: u64::MAX,
            ops_min: 5,
        };
        for dsync in [true, false] {
            assert_eq!(
                synced_writes(&file, 4096, dsync, limit)
                    .unwrap()
                    .histogram
                    .len(),
                5
            );
        }
        let grow = growing_synced_writes(dir.path(), 4096, 8192, limit).unwrap();
        assert_eq!(grow.bytes, 5 * 4096);
        assert_eq!(
            random_reads(&file, 4096, 3, limit).unwrap().histogram.len(),
            5
        );
        drop(file);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe files removed"
        );
    }
}
