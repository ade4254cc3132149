//! `disk`: the physical limit of a directory, measured with the same I/O the broker does:
//! sequential O_DIRECT writes of its chunk size (async flush), and small writes followed by
//! fdatasync into already-written blocks (sync flush's group commit), in one run with the
//! broker figures.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::{new_histogram, record, Summary};

/// An aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: non-zero size, valid alignment; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Aligned { ptr, len }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).expect("layout");
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

fn open_direct(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening {} with O_DIRECT: {e}", path.display()),
            )
        })
}

/// Sequential O_DIRECT writes of `block_bytes` until `total_bytes`: MB/s and per-write latency.
pub fn sequential_writes(dir: &Path, block_bytes: usize, total_bytes: u64) -> io::Result<Summary> {
    let path = dir.join("thruster-bench-disk.seq");
    let file = open_direct(&path)?;
    let buffer = Aligned::new(block_bytes);
    let mut histogram = new_histogram();
    let start = Instant::now();
    let mut pos = 0u64;
    while pos < total_bytes {
        let t0 = start.elapsed().as_micros() as u64;
        file.write_all_at(buffer.as_slice(), pos).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {} at {pos}: {e}", path.display()),
            )
        })?;
        record(&mut histogram, t0, start.elapsed().as_micros() as u64);
        pos += block_bytes as u64;
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(Summary::new(
        &format!("disk seq {}KiB O_DIRECT", block_bytes >> 10),
        &histogram,
        0,
        pos,
        elapsed,
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
    let path = dir.join("thruster-bench-disk.sync");
    let file = open_direct(&path)?;
    let buffer = Aligned::new(block_bytes.max(1 << 20));
    let mut pos = 0;
    while pos < file_bytes {
        file.write_all_at(buffer.as_slice(), pos)?;
        pos += buffer.len as u64;
    }
    file.sync_all()?;
    let block = &buffer.as_slice()[..block_bytes];
    let mut histogram = new_histogram();
    let start = Instant::now();
    let mut pos = 0u64;
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        let t0 = start.elapsed().as_micros() as u64;
        file.write_all_at(block, pos)?;
        file.sync_data()?;
        record(&mut histogram, t0, start.elapsed().as_micros() as u64);
        bytes += block_bytes as u64;
        pos = (pos + block_bytes as u64) % (file_bytes - block_bytes as u64);
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(Summary::new(
        &format!("disk {}KiB+fdatasync", block_bytes >> 10),
        &histogram,
        0,
        bytes,
        elapsed,
    ))
}
