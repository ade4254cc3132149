//! One shard's CommitLog: segment files named by their 20-digit start offset, written with
//! O_DIRECT through io_uring from an in-memory chunk buffer. Records are encoded straight into
//! aligned chunks; a flush writes the dirty chunks out (a sealed chunk whole and without copying,
//! the partial tail block again as it fills) and ends with fdatasync, so the appends it covers
//! become durable together (group commit); sealed chunks may be written out ahead of it. Written
//! chunks stay in memory while they fit in `memory_window_bytes` and serve tail reads; older data
//! is read from the files. Unflushed data is never evicted, and appends wait for a flush when it
//! exceeds the window, so memory is bounded. Segments are prepared ahead of the writer by a
//! background task; an append that must roll before the next one is ready gets
//! `AppendError::NeedSegment` and retries after awaiting it.
//!
//! Here: the `CommitLog` struct, its errors, accessors and retention (`delete_segments`). The
//! types it holds live in leaf modules it imports: `segment` (segment files: names, alignment,
//! listing, preparing ahead), `settings` (`CommitLogSettings`), `chunk` (`Chunk`, a piece of the
//! write buffer). The modules that add its behaviour import it, never the other way round:
//! `writer` (`append`, `ChunkWriter`), `window` (the chunk buffer pool, eviction), `flush_plan`
//! (flush plans, pipelined write-outs), `read` (`Slice`, `read_slices`, `materialize`), `scan`
//! (open and recovery).

mod chunk;
mod flush_plan;
mod read;
mod scan;
mod segment;
mod settings;
#[cfg(test)]
pub(crate) mod tests;
mod window;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use tracing::info;

use self::chunk::Chunk;
use crate::doomed::Doomed;
use crate::runtime::IoBuffer;

pub use self::flush_plan::{ChunkWrite, FlushPlan, WRITES_IN_FLIGHT_MAX};
pub use self::read::{materialize, Slice};
pub use self::segment::{prepare_segment, segment_file_name, Segment, BLOCK_BYTES};
pub use self::settings::CommitLogSettings;
pub use self::writer::ChunkWriter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The segment is full and the next one is not prepared yet.
    NeedSegment,
    /// More unflushed data than the memory window: wait for a flush.
    NeedFlush,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("offset {pos} is below the log's minimum {min}")]
    BelowMinimum { pos: u64, min: u64 },
    #[error("range {pos}+{len} reaches past the log's end {end}")]
    PastEnd { pos: u64, len: usize, end: u64 },
}

/// One shard's commit log (see the module doc).
pub struct CommitLog {
    settings: CommitLogSettings,
    segments: BTreeMap<u64, Rc<Segment>>,
    next_segment: Option<Rc<Segment>>,
    chunks: VecDeque<Chunk>,
    write_pos: u64,
    flushed_pos: u64,
    /// Segments written (by write-out plans) since the last fdatasync.
    unsynced: Vec<Rc<Segment>>,
    /// Evicted chunk buffers kept for reuse (at most `free_chunks_max`): a fresh allocation
    /// costs page faults, kernel zeroing and our own zeroing on every chunk.
    free_chunks: Vec<IoBuffer>,
    /// Buffers of coalesced group-commit writes, kept for reuse (see `coalesced_write`).
    copy_buffers: Vec<Rc<IoBuffer>>,
    /// Chunk buffers allocated so far (not taken from `free_chunks`).
    chunk_buffers_allocated: u64,
    /// Sum over chunks of bytes not yet written to the files (kept, not recomputed, because
    /// every append checks it).
    unwritten_bytes: u64,
}

impl CommitLog {
    pub fn settings(&self) -> &CommitLogSettings {
        &self.settings
    }

    /// Next byte to be written.
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }

    /// Everything below this is durable.
    pub fn flushed_pos(&self) -> u64 {
        self.flushed_pos
    }

    /// First byte still stored (start of the oldest segment).
    pub fn min_offset(&self) -> u64 {
        self.segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.settings.base_offset)
    }

    pub fn unflushed_bytes(&self) -> u64 {
        self.write_pos - self.flushed_pos
    }

    /// Bytes appended but not yet written to the files (what the memory window bounds).
    pub fn unwritten_bytes(&self) -> u64 {
        debug_assert_eq!(
            self.unwritten_bytes,
            self.chunks
                .iter()
                .map(|c| (c.written - c.flushed) as u64)
                .sum::<u64>()
        );
        self.unwritten_bytes
    }

    pub fn has_next_segment(&self) -> bool {
        self.next_segment.is_some()
    }

    /// Start of the segment holding `pos`.
    pub fn segment_start_of(&self, pos: u64) -> u64 {
        let base = self.settings.base_offset;
        base + (pos - base) / self.settings.segment_bytes * self.settings.segment_bytes
    }

    /// Start offset of the segment that follows the newest one.
    pub fn next_segment_start(&self) -> u64 {
        self.segments
            .keys()
            .next_back()
            .map_or(self.settings.base_offset, |s| {
                s + self.settings.segment_bytes
            })
    }

    /// Segments, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Rc<Segment>> {
        self.segments.values()
    }

    /// Installs a prepared next segment.
    pub fn set_next_segment(&mut self, segment: Rc<Segment>) {
        debug_assert_eq!(segment.start, self.next_segment_start());
        self.next_segment = Some(segment);
    }

    /// Deletes whole segments (never the one being written) for which `expired` holds, oldest
    /// first, stopping at the first that is kept. Returns the new minimum offset.
    pub fn delete_segments(
        &mut self,
        mut expired: impl FnMut(&Segment) -> bool,
        doomed: &mut Doomed,
    ) -> u64 {
        let active = self.segment_start_of(self.write_pos);
        let candidates: Vec<u64> = self.segments.range(..active).map(|(s, _)| *s).collect();
        for start in candidates {
            let segment = self.segments[&start].clone();
            if !expired(&segment) {
                break;
            }
            // Deleted off the reactor, through the storage (`Doomed::delete`).
            doomed.segments.push(segment.path().to_path_buf());
            doomed.handles.push(segment.reader.clone());
            self.segments.remove(&start);
            let dropped: u64 = self
                .chunks
                .iter()
                .filter(|c| c.segment.start == start)
                .map(|c| (c.written - c.flushed) as u64)
                .sum();
            self.unwritten_bytes -= dropped;
            self.chunks.retain(|c| c.segment.start != start);
            info!(file = %segment.path().display(), "deleting commit log segment");
        }
        self.min_offset()
    }
}
