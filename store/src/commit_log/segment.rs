//! Segment files: named by their 20-digit start offset, written in O_DIRECT blocks.
//!
//! Segments are prepared ahead of the writer by a background task: created and allocated
//! (fallocate), or with `prewrite_segments` written full of zeros (a durable write into written
//! blocks needs no journal commit, which SYNC_FLUSH wants; its segments are also opened
//! O_DSYNC, so each write is durable when it completes).

use std::io;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use tracing::warn;

use super::settings::CommitLogSettings;
use crate::runtime;
use crate::storage::{Storage, StorageFile};

/// O_DIRECT block size.
pub const BLOCK_BYTES: u64 = 4096;
/// Zeros written per I/O when preparing a segment.
pub(super) const PREWRITE_BYTES: usize = 1 << 20;

pub fn segment_file_name(start: u64) -> String {
    format!("{start:020}")
}

pub(super) fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

pub(super) fn align_up(v: u64) -> u64 {
    (v + BLOCK_BYTES - 1) & !(BLOCK_BYTES - 1)
}

/// One segment file.
pub struct Segment {
    pub start: u64,
    pub file: StorageFile,
    /// The same file opened for buffered reads: the network layer sends on-disk ranges from it
    /// with sendfile (zero-copy), and it is `Send`, so any shard may read it.
    pub reader: Arc<std::fs::File>,
}

impl Segment {
    pub(super) async fn open(
        start: u64,
        path: &Path,
        settings: &CommitLogSettings,
    ) -> io::Result<Segment> {
        let file = settings.storage.open(path, settings.dsync_writes).await?;
        let reader = settings.storage.reader(path)?;
        Ok(Segment {
            start,
            file,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Lists segment start offsets in `dir` that belong to this shard.
pub(super) fn list_segments(
    storage: &Storage,
    dir: &Path,
    base: u64,
    segment_bytes: u64,
) -> io::Result<Vec<u64>> {
    let mut starts = Vec::new();
    for name in storage.list_dir(dir)? {
        let name = name.as_str();
        if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let start: u64 = name.parse().expect("20 digits");
        if start < base || !(start - base).is_multiple_of(segment_bytes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: segment name {name} does not fit segment size {segment_bytes}",
                    dir.display()
                ),
            ));
        }
        starts.push(start);
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Creates the segment file starting at `start`, written full of zeros if so configured.
pub async fn prepare_segment(settings: &CommitLogSettings, start: u64) -> io::Result<Rc<Segment>> {
    let path = settings.dir.join(segment_file_name(start));
    {
        // Prepared through a plain handle: zeros go out in big writes and one fdatasync, even
        // when the segment's own handle is O_DSYNC.
        let file = settings.storage.open(&path, false).await?;
        let mut size = file.size_bytes().await?;
        if settings.prewrite_segments && size < settings.segment_bytes {
            let zeros = Rc::new(runtime::alloc_io_buffer_long_lived(PREWRITE_BYTES));
            size = align_down(size);
            while size < settings.segment_bytes {
                let len = (settings.segment_bytes - size).min(PREWRITE_BYTES as u64);
                if len == PREWRITE_BYTES as u64 {
                    file.write_shared_at(zeros.clone(), size).await?;
                } else {
                    file.write_at(runtime::alloc_io_buffer_long_lived(len as usize), size)
                        .await?;
                }
                size += len;
            }
            file.fdatasync().await?;
        } else if size < settings.segment_bytes {
            // Allocated, not written: O_DIRECT writes into it skip io_uring's worker threads
            // and cost about a third of the kernel CPU of writes that grow the file (the store
            // bench measures both), and ENOSPC surfaces here, before any record is placed in it.
            // A file system without fallocate still works, with writes that grow the file.
            match file.allocate(settings.segment_bytes).await {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot preallocate segments: writes will grow the file"
                    );
                }
                result => result?,
            }
        }
    }
    let segment = Segment::open(start, &path, settings).await?;
    settings.storage.sync_dir(&settings.dir).await?;
    Ok(Rc::new(segment))
}
