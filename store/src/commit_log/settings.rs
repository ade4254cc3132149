//! How a CommitLog is laid out, buffered and written.

use std::path::PathBuf;

use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct CommitLogSettings {
    pub dir: PathBuf,
    pub base_offset: u64,
    pub segment_bytes: u64,
    pub chunk_bytes: usize,
    pub memory_window_bytes: usize,
    pub prewrite_segments: bool,
    /// Segment files opened O_DSYNC: every write is durable when it completes (SYNC_FLUSH).
    pub dsync_writes: bool,
    /// Where the segments live (the real file system but in crash tests).
    pub storage: Storage,
}
