//! Open and recovery: the segments are listed, the log is scanned forward from a record boundary
//! known durable, validating each record, and the first invalid one ends the log (what follows it
//! is zeroed, later segments are deleted); `rewrite_durably` then settles what was read above the
//! checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use thruster_protocol::message::{self, RecordStart, BLANK_BYTES};
use tracing::{info, warn};

use super::chunk::{Chunk, ChunkData};
use super::segment::{
    align_down, align_up, list_segments, prepare_segment, segment_file_name, Segment,
    PREWRITE_BYTES,
};
use super::settings::CommitLogSettings;
use super::CommitLog;
use crate::runtime;

/// Recovery reads the log in pieces of this size (larger than any record).
const SCAN_READ_BYTES: usize = 8 << 20;

impl CommitLog {
    /// Opens the log directory and recovers it: scans forward from `scan_from` (a record
    /// boundary known durable, e.g. from the checkpoint; clamped to the existing segments),
    /// validating each record, and calls `on_record(pos, bytes)` for every intact record found.
    /// The first invalid record ends the log: what follows it is zeroed and later segments are
    /// deleted. Returns the log and the end offset.
    pub async fn open(
        settings: CommitLogSettings,
        scan_from: u64,
        check_crc: bool,
        mut on_record: impl FnMut(u64, &Bytes),
    ) -> io::Result<CommitLog> {
        settings.storage.create_dir_all(&settings.dir)?;
        let mut log = CommitLog {
            segments: BTreeMap::new(),
            next_segment: None,
            chunks: VecDeque::new(),
            write_pos: settings.base_offset,
            flushed_pos: settings.base_offset,
            unsynced: Vec::new(),
            free_chunks: Vec::new(),
            copy_buffers: Vec::new(),
            chunk_buffers_allocated: 0,
            unwritten_bytes: 0,
            settings,
        };
        log.open_segments().await?;
        if log.segments.is_empty() {
            let start = log.settings.base_offset;
            let segment = prepare_segment(&log.settings, start).await?;
            log.segments.insert(start, segment);
            log.load_tail(start).await?;
            return Ok(log);
        }
        let min = log.min_offset();
        let newest = *log.segments.keys().next_back().expect("non-empty");
        let mut pos = scan_from.clamp(min, newest + log.settings.segment_bytes);
        if pos >= newest + log.settings.segment_bytes {
            pos = newest;
        }
        let end = log.scan(pos, check_crc, &mut on_record).await?;
        log.truncate_after(end).await?;
        // The names found are made durable, and the removals `truncate_after` made: a segment
        // created by an earlier open that failed before its directory sync would otherwise
        // vanish at the next power loss, with acknowledged records in it (found by the
        // simulated-disk crash test), and a removed segment past the end could come back.
        log.settings.storage.sync_dir(&log.settings.dir).await?;
        log.load_tail(end).await?;
        info!(dir = %log.settings.dir.display(), scan_from = pos, end, "commit log recovered");
        Ok(log)
    }

    /// Opens the segment files found in the directory.
    async fn open_segments(&mut self) -> io::Result<()> {
        for start in list_segments(
            &self.settings.storage,
            &self.settings.dir,
            self.settings.base_offset,
            self.settings.segment_bytes,
        )? {
            let segment = Segment::open(
                start,
                &self.settings.dir.join(segment_file_name(start)),
                &self.settings,
            )
            .await?;
            self.segments.insert(start, Rc::new(segment));
        }
        Ok(())
    }

    /// Scans from `pos` to the end of valid data.
    async fn scan(
        &self,
        mut pos: u64,
        check_crc: bool,
        on_record: &mut impl FnMut(u64, &Bytes),
    ) -> io::Result<u64> {
        loop {
            let segment_start = self.segment_start_of(pos);
            let Some(segment) = self.segments.get(&segment_start).cloned() else {
                return Ok(pos);
            };
            match self
                .scan_segment(&segment, pos, check_crc, on_record)
                .await?
            {
                SegmentScan::Continues => pos = segment_start + self.settings.segment_bytes,
                SegmentScan::LogEnd(end) => return Ok(end),
            }
        }
    }

    /// Scans `segment` from `pos`, reading it in pieces of `SCAN_READ_BYTES`.
    async fn scan_segment(
        &self,
        segment: &Segment,
        mut pos: u64,
        check_crc: bool,
        on_record: &mut impl FnMut(u64, &Bytes),
    ) -> io::Result<SegmentScan> {
        let segment_start = segment.start;
        let segment_end = segment_start + self.settings.segment_bytes;
        let mut buffer = Bytes::new();
        let mut buffer_pos = pos;
        loop {
            if pos + BLANK_BYTES as u64 > segment_end {
                warn!(
                    pos,
                    "log end: no room for a record header before the segment end"
                );
                return Ok(SegmentScan::LogEnd(pos));
            }
            let offset_in_buffer = (pos - buffer_pos) as usize;
            let need_more = offset_in_buffer + BLANK_BYTES > buffer.len()
                || matches!(message::peek_record(&buffer[offset_in_buffer..]), Ok(RecordStart::Message { total_size }) if offset_in_buffer + total_size > buffer.len() && pos + total_size as u64 <= segment_end);
            if need_more {
                if buffer_pos == pos && !buffer.is_empty() {
                    // A fresh read from here still does not hold the record: the file ends
                    // inside it (truncated or torn).
                    warn!(file = %segment.path().display(), pos, "log end: record cut off by the end of the file");
                    return Ok(SegmentScan::LogEnd(pos));
                }
                let len = SCAN_READ_BYTES.min((segment_end - pos) as usize);
                buffer = segment.file.read_at(pos - segment_start, len).await?;
                buffer_pos = pos;
                if buffer.len() < BLANK_BYTES {
                    return Ok(SegmentScan::LogEnd(pos));
                }
                continue;
            }
            let here = buffer.slice(offset_in_buffer..);
            match examine(segment, pos, &here, check_crc, segment_end) {
                Found::Record { total_size } => {
                    on_record(pos, &here.slice(..total_size));
                    pos += total_size as u64;
                }
                Found::BlankToSegmentEnd => return Ok(SegmentScan::Continues),
                Found::LogEnd => return Ok(SegmentScan::LogEnd(pos)),
            }
        }
    }

    /// Makes `end` the end of the log: zeroes what lies after it in its segment and deletes later
    /// segments.
    async fn truncate_after(&mut self, end: u64) -> io::Result<()> {
        let segment_start = self.segment_start_of(end);
        self.delete_segments_after(segment_start)?;
        let Some(segment) = self.segments.get(&segment_start).cloned() else {
            let segment = prepare_segment(&self.settings, segment_start).await?;
            self.segments.insert(segment_start, segment);
            return Ok(());
        };
        self.zero_after(&segment, end).await
    }

    /// Deletes the segments that start after `segment_start`.
    fn delete_segments_after(&mut self, segment_start: u64) -> io::Result<()> {
        let later: Vec<u64> = self
            .segments
            .range(segment_start + 1..)
            .map(|(s, _)| *s)
            .collect();
        for start in later {
            let segment = self.segments.remove(&start).expect("listed");
            self.settings.storage.remove_file(segment.path())?;
            warn!(file = %segment.path().display(), "deleted segment past the end of the log");
        }
        Ok(())
    }

    /// Zeroes `segment` from `end` onwards, one piece at a time, until a piece that is already
    /// all zeros: whatever lies after a cut (a torn flush, or the rest of a segment cut by
    /// corruption) must never be taken for records later, when new appends happen to end where
    /// an old record began.
    async fn zero_after(&self, segment: &Segment, end: u64) -> io::Result<()> {
        let segment_start = segment.start;
        let segment_len = self.settings.segment_bytes;
        let file_len = segment.file.size_bytes().await?;
        let zero_from = align_down(end - segment_start);
        let head = segment
            .file
            .read_at(zero_from, (end - segment_start - zero_from) as usize)
            .await?;
        let mut pos = zero_from;
        let mut wrote = false;
        while pos < segment_len.min(align_up(file_len)) {
            let len = ((segment_len - pos) as usize).min(PREWRITE_BYTES);
            let existing = segment.file.read_at(pos, len).await?;
            let skip = if pos == zero_from { head.len() } else { 0 };
            if existing.len() <= skip || existing[skip..].iter().all(|b| *b == 0) {
                break;
            }
            let mut buffer = runtime::alloc_io_buffer(len);
            buffer.as_bytes_mut().fill(0);
            if pos == zero_from {
                buffer.as_bytes_mut()[..head.len()].copy_from_slice(&head);
            }
            segment.file.write_at(buffer, pos).await?;
            wrote = true;
            pos += len as u64;
        }
        if wrote {
            warn!(file = %segment.path().display(), from = end, to = segment_start + pos, "zeroed data after the end of the log");
            segment.file.fdatasync().await?;
        }
        Ok(())
    }

    /// Recovery: writes `[from, end of the log)` again, as read, and makes it durable. Below
    /// `from` (the checkpoint) the log is known durable; what recovery accepted above it was
    /// read back from a device that may answer from a volatile cache that never reached the
    /// media (a write or fdatasync that failed, a process crash before an fdatasync). Taking it
    /// for durable would let a later power loss open a hole under records appended, and
    /// acknowledged, after it, and recovery would then cut those (found by the simulated-disk
    /// crash test). Writing it again and syncing it settles it: what is served from now on is
    /// durable. Costs the data written since the last checkpoint (nothing after a clean
    /// shutdown).
    pub async fn rewrite_durably(&self, from: u64) -> io::Result<()> {
        let end = self.write_pos;
        let mut pos = align_down(from.max(self.min_offset()));
        while pos < end {
            let segment_start = self.segment_start_of(pos);
            let Some(segment) = self.segments.get(&segment_start) else {
                break;
            };
            let segment_end = (segment_start + self.settings.segment_bytes).min(align_up(end));
            while pos < segment_end {
                let len = ((segment_end - pos) as usize).min(PREWRITE_BYTES);
                let bytes = segment.file.read_at(pos - segment_start, len).await?;
                let mut buffer = runtime::alloc_io_buffer(len);
                buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
                buffer.as_bytes_mut()[bytes.len()..].fill(0);
                segment.file.write_at(buffer, pos - segment_start).await?;
                pos += len as u64;
            }
            segment.file.fdatasync().await?;
        }
        Ok(())
    }

    /// Loads the chunk containing `end` back into memory so appends continue it.
    async fn load_tail(&mut self, end: u64) -> io::Result<()> {
        let segment_start = self.segment_start_of(end);
        let segment = self.segments[&segment_start].clone();
        let chunk_bytes = self.settings.chunk_bytes as u64;
        let chunk_start = segment_start + (end - segment_start) / chunk_bytes * chunk_bytes;
        let mut buffer = runtime::alloc_io_buffer_long_lived(self.settings.chunk_bytes);
        let written = (end - chunk_start) as usize;
        if written > 0 {
            let bytes = segment
                .file
                .read_at(chunk_start - segment_start, written)
                .await?;
            buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        }
        self.chunks.clear();
        self.unwritten_bytes = 0;
        self.chunks.push_back(Chunk {
            start: chunk_start,
            segment,
            data: ChunkData::Active(buffer),
            written,
            flushed: written,
            writing: false,
        });
        self.write_pos = end;
        self.flushed_pos = end;
        Ok(())
    }
}

/// How a segment's scan ended.
enum SegmentScan {
    /// A BLANK record fills the segment to its end: the log continues in the next segment.
    Continues,
    /// The log ends here.
    LogEnd(u64),
}

/// What the bytes at a scan position hold.
enum Found {
    /// An intact record, stored at its own position.
    Record { total_size: usize },
    /// A BLANK record that fills the segment to its end.
    BlankToSegmentEnd,
    /// Nothing valid: the log ends here.
    LogEnd,
}

/// Examines the bytes at `pos` (`here` runs to the end of the read buffer, which holds at least
/// a BLANK record's bytes, and the whole record when its size fits the segment). What ends the
/// log is logged, unless it starts with zeros (the log's plain end).
fn examine(segment: &Segment, pos: u64, here: &Bytes, check_crc: bool, segment_end: u64) -> Found {
    match message::peek_record(here) {
        Ok(RecordStart::Blank { total_size }) if pos + total_size as u64 == segment_end => {
            Found::BlankToSegmentEnd
        }
        Ok(RecordStart::Message { total_size })
            if total_size > 0 && pos + total_size as u64 + BLANK_BYTES as u64 <= segment_end =>
        {
            match message::decode_record(here, check_crc) {
                Ok(record) if record.looks_torn() => {
                    warn!(file = %segment.path().display(), pos, topic = ?record.topic, "log end: torn record (zeros where its topic or properties should be)");
                    Found::LogEnd
                }
                Ok(record) if record.physical_offset == pos as i64 => Found::Record { total_size },
                Ok(record) => {
                    warn!(file = %segment.path().display(), pos, stored = record.physical_offset, "log end: record claims another position");
                    Found::LogEnd
                }
                Err(error) => {
                    warn!(file = %segment.path().display(), pos, %error, "log end: invalid record");
                    Found::LogEnd
                }
            }
        }
        Ok(start) => {
            if !here[..BLANK_BYTES].iter().all(|b| *b == 0) {
                warn!(file = %segment.path().display(), pos, ?start, "log end: record does not fit its segment");
            }
            Found::LogEnd
        }
        Err(error) => {
            if !here[..BLANK_BYTES].iter().all(|b| *b == 0) {
                warn!(file = %segment.path().display(), pos, %error, "log end: torn or corrupt data");
            }
            Found::LogEnd
        }
    }
}
