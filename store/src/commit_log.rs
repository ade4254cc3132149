//! One shard's CommitLog: segment files named by their 20-digit start offset, written with
//! O_DIRECT through io_uring from an in-memory chunk buffer.
//!
//! Write buffer: records are encoded straight into aligned chunks (`chunk_bytes`; buffers are
//! reused without zeroing, and what lies past the data is zeroed on its way to the file). A
//! flush writes, per dirty chunk, either the whole chunk without copying (a sealed chunk never
//! written before) or the dirty aligned range copied into a transient buffer (the partial tail
//! block is rewritten as it fills). One flush at a time per shard, so two writes of the same
//! tail block can never race. Flushed chunks stay in memory while they fit in
//! `memory_window_bytes` and serve tail reads; older data is read from the files. Unflushed
//! data is never evicted, and appends wait for a flush when it exceeds the window, so memory is
//! bounded.
//!
//! Segments are prepared ahead of the writer by a background task: created and allocated
//! (fallocate), or with `prewrite_segments` written full of zeros (a durable write into written
//! blocks needs no journal commit, which SYNC_FLUSH wants; its segments are also opened
//! O_DSYNC, so each write is durable when it completes). An append that must roll
//! before the next segment is ready gets `AppendError::NeedSegment` and retries after awaiting
//! it.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes};
use thruster_protocol::message::{self, RecordStart, BLANK_BYTES, MAGIC_BLANK};
use tracing::{info, warn};

use super::storage::{Storage, StorageFile};
use crate::runtime::{self, IoBuffer};

/// O_DIRECT block size.
pub const BLOCK_BYTES: u64 = 4096;
/// Recovery reads the log in pieces of this size (larger than any record).
const SCAN_READ_BYTES: usize = 8 << 20;
/// Writes in flight at once, in a flush and in the async write-out pipeline. Busy writers keep
/// the reactor from reaping completions (and submitting new writes) until they block or the
/// task quota ends, so the queue must outlast those stretches, not just cover the device's
/// latency. The store bench saw its chunk writes take 2.5 ms from start to reaped completion
/// at 8 in flight (the device needs about 1 ms for 2 MiB), which capped 1 KiB appends near
/// 8 x 256 KiB / 2.5 ms; 32 in flight (8 MiB, an eighth of the default memory window) lifted
/// the cap and cut window waits by 4, while raw writes are as fast at 8 as at 32. Segments
/// are allocated ahead, so these writes never wait in io_uring's worker threads.
pub const WRITES_IN_FLIGHT_MAX: usize = 32;
/// Coalesced group-commit write buffers kept for reuse, and the largest kept (a group can be as
/// large as the memory window; keeping those would hold that much memory for good).
const COPY_BUFFERS_MAX: usize = 4;
const COPY_BUFFER_KEPT_BYTES_MAX: usize = 4 << 20;
/// Zeros written per I/O when preparing a segment.
const PREWRITE_BYTES: usize = 1 << 20;

pub fn segment_file_name(start: u64) -> String {
    format!("{start:020}")
}

fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

fn align_up(v: u64) -> u64 {
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
    async fn open(start: u64, path: &Path, settings: &CommitLogSettings) -> io::Result<Segment> {
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

enum ChunkData {
    /// Still being appended to.
    Active(IoBuffer),
    /// Full (or its segment rolled): immutable, shareable with writers and readers.
    Sealed(Rc<IoBuffer>),
    /// Only while `seal` moves the buffer.
    Moving,
}

struct Chunk {
    /// Global offset of the chunk's first byte (chunk-aligned within its segment).
    start: u64,
    segment: Rc<Segment>,
    data: ChunkData,
    /// Bytes of the chunk holding log data.
    written: usize,
    /// Bytes known durable.
    flushed: usize,
    /// A pipelined write-out of this (sealed) chunk is in flight.
    writing: bool,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match &self.data {
            ChunkData::Active(buffer) => buffer.as_bytes(),
            ChunkData::Sealed(buffer) => buffer.as_bytes(),
            ChunkData::Moving => unreachable!("observed mid-seal"),
        }
    }

    fn seal(&mut self) {
        if let ChunkData::Active(_) = self.data {
            let ChunkData::Active(mut buffer) =
                std::mem::replace(&mut self.data, ChunkData::Moving)
            else {
                unreachable!()
            };
            // A reused buffer holds old bytes past `written`; a sealed chunk is written whole.
            buffer.as_bytes_mut()[self.written..].fill(0);
            self.data = ChunkData::Sealed(Rc::new(buffer));
        }
    }

    fn end(&self) -> u64 {
        self.start + self.written as u64
    }

    /// The write that puts this chunk's unflushed bytes on disk: the whole sealed buffer,
    /// shared, when none of it was written yet; otherwise the dirty aligned range, copied
    /// (the partial tail block is rewritten as it fills).
    fn pending_write(&self) -> FlushWrite {
        let pos_in_segment = self.start - self.segment.start;
        match &self.data {
            ChunkData::Sealed(buffer) if self.flushed == 0 => FlushWrite::Shared {
                segment: self.segment.clone(),
                pos: pos_in_segment,
                buffer: buffer.clone(),
            },
            _ => {
                let lo = align_down(self.flushed as u64) as usize;
                let hi = (align_up(self.written as u64) as usize).min(self.bytes().len());
                let mut buffer = runtime::alloc_io_buffer(hi - lo);
                let (data, tail) = buffer.as_bytes_mut().split_at_mut(self.written - lo);
                data.copy_from_slice(&self.bytes()[lo..self.written]);
                // Past `written` an active (reused) buffer holds old bytes; the file gets zeros.
                tail.fill(0);
                FlushWrite::Copied {
                    segment: self.segment.clone(),
                    pos: pos_in_segment + lo as u64,
                    buffer,
                }
            }
        }
    }
}

/// A piece of stored data, as the network layer should send it.
#[derive(Clone)]
pub enum Slice {
    /// In a sealed chunk: shared, no copy.
    Shared {
        buffer: Rc<IoBuffer>,
        start: usize,
        len: usize,
    },
    /// Copied (from the chunk still being appended to, or read from disk).
    Owned(Bytes),
    /// On disk: `len` bytes at `pos` of a segment file (for sendfile/splice).
    File {
        segment: Rc<Segment>,
        pos: u64,
        len: usize,
    },
}

impl Slice {
    pub fn len(&self) -> usize {
        match self {
            Slice::Shared { len, .. } | Slice::File { len, .. } => *len,
            Slice::Owned(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slice::Shared { start, len, .. } => write!(f, "Shared({start}+{len})"),
            Slice::Owned(b) => write!(f, "Owned({})", b.len()),
            Slice::File { segment, pos, len } => write!(f, "File({}@{pos}+{len})", segment.start),
        }
    }
}

/// Reads the slices into one buffer (disk slices with O_DIRECT reads).
pub async fn materialize(slices: &[Slice]) -> io::Result<Bytes> {
    if let [Slice::Owned(bytes)] = slices {
        return Ok(bytes.clone());
    }
    let mut out = Vec::with_capacity(slices.iter().map(Slice::len).sum());
    for slice in slices {
        match slice {
            Slice::Shared { buffer, start, len } => {
                out.extend_from_slice(&buffer.as_bytes()[*start..start + len])
            }
            Slice::Owned(bytes) => out.extend_from_slice(bytes),
            Slice::File { segment, pos, len } => {
                let bytes = segment.file.read_at(*pos, *len).await?;
                if bytes.len() != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} ends before {pos}+{len}", segment.path().display()),
                    ));
                }
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(Bytes::from(out))
}

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

/// What a flush must write; built under the log's borrow, executed without it.
pub struct FlushPlan {
    pub target: u64,
    /// Whether the plan ends with fdatasync (durability) or only writes sealed chunks out.
    pub sync: bool,
    writes: Vec<FlushWrite>,
    synced: Vec<Rc<Segment>>,
    /// (chunk start, flushed bytes once done).
    marks: Vec<(u64, usize)>,
    /// `execute` failed in an fdatasync (not in a write).
    sync_failed: bool,
}

/// One chunk's pipelined write-out (see [`CommitLog::next_chunk_write`]).
pub struct ChunkWrite {
    pub start: u64,
    pub written: usize,
    pub segment: Rc<Segment>,
    write: FlushWrite,
}

impl ChunkWrite {
    pub async fn execute(self) -> io::Result<()> {
        self.write.execute().await
    }
}

impl FlushWrite {
    async fn execute(self) -> io::Result<()> {
        match self {
            FlushWrite::Shared {
                segment,
                pos,
                buffer,
            } => segment.file.write_shared_at(buffer, pos).await,
            FlushWrite::Copied {
                segment,
                pos,
                buffer,
            } => segment.file.write_at(buffer, pos).await,
        }
    }
}

enum FlushWrite {
    Shared {
        segment: Rc<Segment>,
        pos: u64,
        buffer: Rc<IoBuffer>,
    },
    Copied {
        segment: Rc<Segment>,
        pos: u64,
        buffer: IoBuffer,
    },
}

impl FlushPlan {
    /// Performs the writes (concurrently) and, for a sync plan, one fdatasync per segment
    /// written since the last sync.
    pub async fn execute(&mut self) -> io::Result<()> {
        // A bounded number in flight: writes that extend a file queue up in io_uring's workers.
        let mut pending = std::mem::take(&mut self.writes)
            .into_iter()
            .map(FlushWrite::execute);
        loop {
            let batch: Vec<_> = pending.by_ref().take(WRITES_IN_FLIGHT_MAX * 2).collect();
            if batch.is_empty() {
                break;
            }
            for result in join_all(batch).await {
                result?;
            }
        }
        if self.sync {
            for segment in &self.synced {
                if let Err(e) = segment.file.fdatasync().await {
                    self.sync_failed = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether `execute` failed in an fdatasync: the writes it was to make durable (including
    /// pipelined write-outs that are no longer in memory) may be lost, and a retried fdatasync
    /// would succeed without bringing them back (Linux reports a writeback error once).
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }
}

/// Awaits every future (they make progress concurrently on the reactor).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *result = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

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

    /// Whether a sealed chunk waits to be written out.
    pub fn has_sealed_unwritten(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| c.flushed < c.written && !c.writing && matches!(c.data, ChunkData::Sealed(_)))
    }

    /// Takes the oldest sealed chunk not yet written for a pipelined write-out (no fdatasync);
    /// `complete_chunk_write` or `abort_chunk_write` must follow.
    pub fn next_chunk_write(&mut self) -> Option<ChunkWrite> {
        let chunk = self.chunks.iter_mut().find(|c| {
            c.flushed < c.written && !c.writing && matches!(c.data, ChunkData::Sealed(_))
        })?;
        chunk.writing = true;
        let write = chunk.pending_write();
        Some(ChunkWrite {
            start: chunk.start,
            written: chunk.written,
            segment: chunk.segment.clone(),
            write,
        })
    }

    /// Records a finished pipelined write: the chunk is on disk (not yet synced).
    pub fn complete_chunk_write(&mut self, start: u64, written: usize, segment: &Rc<Segment>) {
        if let Some(chunk) = self.chunks.iter_mut().find(|c| c.start == start) {
            self.unwritten_bytes -= written.saturating_sub(chunk.flushed) as u64;
            chunk.flushed = chunk.flushed.max(written);
            chunk.writing = false;
        }
        if !self.unsynced.iter().any(|s| Rc::ptr_eq(s, segment)) {
            self.unsynced.push(segment.clone());
        }
        self.evict();
    }

    /// A pipelined write failed: the chunk will be written again.
    pub fn abort_chunk_write(&mut self, start: u64) {
        if let Some(chunk) = self.chunks.iter_mut().find(|c| c.start == start) {
            chunk.writing = false;
        }
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
        for start in list_segments(
            &log.settings.storage,
            &log.settings.dir,
            log.settings.base_offset,
            log.settings.segment_bytes,
        )? {
            let segment = Segment::open(
                start,
                &log.settings.dir.join(segment_file_name(start)),
                &log.settings,
            )
            .await?;
            log.segments.insert(start, Rc::new(segment));
        }
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

    /// Scans from `pos` to the end of valid data.
    async fn scan(
        &self,
        mut pos: u64,
        check_crc: bool,
        on_record: &mut impl FnMut(u64, &Bytes),
    ) -> io::Result<u64> {
        let segment_bytes = self.settings.segment_bytes;
        'segments: loop {
            let segment_start = self.segment_start_of(pos);
            let Some(segment) = self.segments.get(&segment_start).cloned() else {
                return Ok(pos);
            };
            let segment_end = segment_start + segment_bytes;
            let mut buffer = Bytes::new();
            let mut buffer_pos = pos;
            loop {
                if pos + BLANK_BYTES as u64 > segment_end {
                    warn!(
                        pos,
                        "log end: no room for a record header before the segment end"
                    );
                    return Ok(pos);
                }
                let offset_in_buffer = (pos - buffer_pos) as usize;
                let need_more = offset_in_buffer + BLANK_BYTES > buffer.len()
                    || matches!(message::peek_record(&buffer[offset_in_buffer..]), Ok(RecordStart::Message { total_size }) if offset_in_buffer + total_size > buffer.len() && pos + total_size as u64 <= segment_end);
                if need_more {
                    if buffer_pos == pos && !buffer.is_empty() {
                        // A fresh read from here still does not hold the record: the file ends
                        // inside it (truncated or torn).
                        warn!(file = %segment.path().display(), pos, "log end: record cut off by the end of the file");
                        return Ok(pos);
                    }
                    let len = SCAN_READ_BYTES.min((segment_end - pos) as usize);
                    buffer = segment.file.read_at(pos - segment_start, len).await?;
                    buffer_pos = pos;
                    if buffer.len() < BLANK_BYTES {
                        return Ok(pos);
                    }
                    continue;
                }
                let here = buffer.slice(offset_in_buffer..);
                match message::peek_record(&here) {
                    Ok(RecordStart::Blank { total_size })
                        if pos + total_size as u64 == segment_end =>
                    {
                        pos = segment_end;
                        continue 'segments;
                    }
                    Ok(RecordStart::Message { total_size })
                        if total_size > 0
                            && pos + total_size as u64 + BLANK_BYTES as u64 <= segment_end =>
                    {
                        match message::decode_record(&here, check_crc) {
                            Ok(record) if record.looks_torn() => {
                                warn!(file = %segment.path().display(), pos, topic = ?record.topic, "log end: torn record (zeros where its topic or properties should be)");
                                return Ok(pos);
                            }
                            Ok(record) if record.physical_offset == pos as i64 => {
                                on_record(pos, &here.slice(..total_size));
                                pos += total_size as u64;
                            }
                            Ok(record) => {
                                warn!(file = %segment.path().display(), pos, stored = record.physical_offset, "log end: record claims another position");
                                return Ok(pos);
                            }
                            Err(error) => {
                                warn!(file = %segment.path().display(), pos, %error, "log end: invalid record");
                                return Ok(pos);
                            }
                        }
                    }
                    Ok(start) => {
                        if !here[..BLANK_BYTES].iter().all(|b| *b == 0) {
                            warn!(file = %segment.path().display(), pos, ?start, "log end: record does not fit its segment");
                        }
                        return Ok(pos);
                    }
                    Err(error) => {
                        if !here[..BLANK_BYTES].iter().all(|b| *b == 0) {
                            warn!(file = %segment.path().display(), pos, %error, "log end: torn or corrupt data");
                        }
                        return Ok(pos);
                    }
                }
            }
        }
    }

    /// Makes `end` the end of the log: zeroes what lies after it in its segment and deletes later
    /// segments.
    async fn truncate_after(&mut self, end: u64) -> io::Result<()> {
        let segment_start = self.segment_start_of(end);
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
        if !self.segments.contains_key(&segment_start) {
            let segment = prepare_segment(&self.settings, segment_start).await?;
            self.segments.insert(segment_start, segment);
            return Ok(());
        }
        let segment = self.segments[&segment_start].clone();
        let segment_len = self.settings.segment_bytes;
        let file_len = segment.file.size_bytes().await?;
        let zero_from = align_down(end - segment_start);
        let head = segment
            .file
            .read_at(zero_from, (end - segment_start - zero_from) as usize)
            .await?;
        // Zero from the end of valid data onwards, one piece at a time, until a piece that is
        // already all zeros: whatever lies after a cut (a torn flush, or the rest of a segment
        // cut by corruption) must never be taken for records later, when new appends happen to
        // end where an old record began.
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

    /// Installs a prepared next segment.
    pub fn set_next_segment(&mut self, segment: Rc<Segment>) {
        debug_assert_eq!(segment.start, self.next_segment_start());
        self.next_segment = Some(segment);
    }

    /// Appends `len` bytes written by `encode`, which receives the position they start at and a
    /// writer that must receive exactly `len` bytes. Rolls to the next segment (writing a BLANK
    /// record) when `len` does not fit with room for a BLANK after it.
    pub fn append<R>(
        &mut self,
        len: usize,
        encode: impl FnOnce(u64, &mut ChunkWriter<'_>) -> R,
    ) -> Result<(u64, R), AppendError> {
        assert!(
            len as u64 + BLANK_BYTES as u64 <= self.settings.segment_bytes,
            "record larger than a segment"
        );
        if self.unwritten_bytes() > self.settings.memory_window_bytes as u64 {
            return Err(AppendError::NeedFlush);
        }
        let segment_end = self.segment_start_of(self.write_pos) + self.settings.segment_bytes;
        if self.write_pos + len as u64 + BLANK_BYTES as u64 > segment_end {
            let Some(next) = self.next_segment.take() else {
                return Err(AppendError::NeedSegment);
            };
            let blank_total = (segment_end - self.write_pos) as i32;
            let start = self.write_pos;
            let mut writer = ChunkWriter {
                log: self,
                pos: start,
                end: start + BLANK_BYTES as u64,
            };
            writer.put_i32(blank_total);
            writer.put_i32(MAGIC_BLANK);
            assert_eq!(writer.pos, writer.end);
            if let Some(last) = self.chunks.back_mut() {
                last.seal();
            }
            self.write_pos = segment_end;
            debug_assert_eq!(next.start, segment_end);
            self.segments.insert(next.start, next);
        }
        let start = self.write_pos;
        let mut writer = ChunkWriter {
            log: self,
            pos: start,
            end: start + len as u64,
        };
        let result = encode(start, &mut writer);
        assert_eq!(
            writer.pos,
            writer.end,
            "encoder wrote {} of {len} bytes",
            writer.pos - start
        );
        self.write_pos = start + len as u64;
        Ok((start, result))
    }

    /// A chunk buffer, reused when one is free. Not zeroed: zeroing every chunk cost as much
    /// as copying the data into it (8 % of the store bench). Bytes past a chunk's `written`
    /// are never served, and are zeroed on their way to the file (`seal`, `pending_write`).
    fn take_chunk_buffer(&mut self) -> IoBuffer {
        self.free_chunks.pop().unwrap_or_else(|| {
            self.chunk_buffers_allocated += 1;
            runtime::alloc_io_buffer_long_lived(self.settings.chunk_bytes)
        })
    }

    /// As many free buffers as chunks can be live at once: up to a window of written chunks
    /// kept for reads plus a window of unwritten ones (and the active chunk and the one that
    /// crossed the limit). Eviction frees chunks in bursts (a write-out completes many at
    /// once); a pool of 16 dropped most of a burst and allocated it again moments later, a
    /// third of all chunks at 1 KiB records, and page faults and zeroing were 30 % of the
    /// async store bench. The pool costs no memory beyond that bound: a buffer is allocated
    /// only when the pool is empty, so live chunks plus free buffers never exceed the most
    /// chunks ever live at once.
    fn free_chunks_max(&self) -> usize {
        self.chunk_buffers_max() as usize
    }

    fn chunk_buffers_max(&self) -> u64 {
        2 * (self.settings.memory_window_bytes / self.settings.chunk_bytes) as u64 + 2
    }

    /// Keeps an evicted chunk's buffer if no reader or in-flight write still shares it.
    fn recycle(&mut self, chunk: Chunk) {
        if self.free_chunks.len() >= self.free_chunks_max() {
            return;
        }
        if let ChunkData::Sealed(shared) = chunk.data {
            if let Ok(buffer) = Rc::try_unwrap(shared) {
                self.free_chunks.push(buffer);
            }
        }
    }

    fn chunk_for_write(&mut self, pos: u64) -> &mut Chunk {
        let chunk_bytes = self.settings.chunk_bytes as u64;
        let needs_new = match self.chunks.back() {
            Some(last) => {
                pos >= last.start + chunk_bytes || matches!(last.data, ChunkData::Sealed(_))
            }
            None => true,
        };
        if needs_new {
            if let Some(last) = self.chunks.back_mut() {
                last.seal();
            }
            let segment_start = self.segment_start_of(pos);
            let segment = self.segments[&segment_start].clone();
            let start = segment_start + (pos - segment_start) / chunk_bytes * chunk_bytes;
            debug_assert_eq!(
                start, pos,
                "a new chunk starts where the previous one ended"
            );
            let buffer = self.take_chunk_buffer();
            self.chunks.push_back(Chunk {
                start,
                segment,
                data: ChunkData::Active(buffer),
                written: 0,
                flushed: 0,
                writing: false,
            });
        }
        self.chunks.back_mut().expect("a chunk")
    }

    /// The writes that make everything appended so far durable (ending with fdatasync);
    /// `None` when nothing is dirty.
    pub fn plan_flush(&mut self) -> Option<FlushPlan> {
        if self.write_pos == self.flushed_pos {
            return None;
        }
        Some(self.plan(true))
    }

    fn plan(&mut self, sync: bool) -> FlushPlan {
        let mut plan = FlushPlan {
            target: self.write_pos,
            sync,
            writes: Vec::new(),
            synced: if sync {
                self.unsynced.clone()
            } else {
                Vec::new()
            },
            marks: Vec::new(),
            sync_failed: false,
        };
        let dirty: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| self.chunks[i].flushed < self.chunks[i].written)
            .collect();
        for &i in &dirty {
            let chunk = &self.chunks[i];
            if !plan.synced.iter().any(|s| Rc::ptr_eq(s, &chunk.segment)) {
                plan.synced.push(chunk.segment.clone());
            }
            plan.marks.push((chunk.start, chunk.written));
        }
        // O_DSYNC segments make every write durable on its own, with a device cache flush
        // each: a group commit spanning several chunks of a segment goes out as one write.
        // (A 1 MiB group written as its 4-5 chunks took 1.2 ms here, as one write 0.85 ms;
        // written plainly and synced once, 1.1 ms.)
        let coalesce = sync && self.settings.dsync_writes;
        let mut rest = &dirty[..];
        while let Some(&first) = rest.first() {
            let segment = self.chunks[first].segment.clone();
            let run = if coalesce {
                rest.iter()
                    .take_while(|&&i| Rc::ptr_eq(&self.chunks[i].segment, &segment))
                    .count()
            } else {
                1
            };
            let write = if run == 1 {
                self.chunks[first].pending_write()
            } else {
                self.coalesced_write(&rest[..run])
            };
            plan.writes.push(write);
            rest = &rest[run..];
        }
        plan
    }

    /// One write of the dirty bytes of consecutive chunks (`indexes`) of one segment, copied
    /// into a reused buffer: a fresh buffer of a megabyte cost more in page faults than the
    /// write saved. Buffers come in sizes a sixteenth of a power of two apart, so the write
    /// may run up to that much (zeros) past the last record, never past the segment's end.
    fn coalesced_write(&mut self, indexes: &[usize]) -> FlushWrite {
        let (first, last) = (
            &self.chunks[indexes[0]],
            &self.chunks[indexes[indexes.len() - 1]],
        );
        let segment = first.segment.clone();
        debug_assert!(indexes
            .windows(2)
            .all(|w| self.chunks[w[0]].end() == self.chunks[w[1]].start));
        let lo = first.start + align_down(first.flushed as u64);
        let end = last.end();
        let needed = (align_up(end) - lo) as usize;
        let room = (segment.start + self.settings.segment_bytes - lo) as usize;
        let mut buffer = self.take_copy_buffer(needed, room);
        let bytes = Rc::get_mut(&mut buffer)
            .expect("a copy buffer is taken only when unshared")
            .as_bytes_mut();
        for &i in indexes {
            let chunk = &self.chunks[i];
            let from = chunk.start.max(lo);
            let data = &chunk.bytes()[(from - chunk.start) as usize..chunk.written];
            let at = (from - lo) as usize;
            bytes[at..at + data.len()].copy_from_slice(data);
        }
        // Past the last record the file gets zeros (the buffer holds an older group's bytes).
        bytes[(end - lo) as usize..].fill(0);
        if buffer.len() <= COPY_BUFFER_KEPT_BYTES_MAX {
            self.copy_buffers.push(buffer.clone());
        }
        FlushWrite::Shared {
            pos: lo - segment.start,
            segment,
            buffer,
        }
    }

    /// An unshared copy buffer of at least `needed` and at most `room` bytes, reused when one
    /// fits (`copy_buffers` keeps them; at most `COPY_BUFFERS_MAX`).
    fn take_copy_buffer(&mut self, needed: usize, room: usize) -> Rc<IoBuffer> {
        debug_assert!(needed <= room && needed.is_multiple_of(BLOCK_BYTES as usize));
        let fits =
            |b: &Rc<IoBuffer>| Rc::strong_count(b) == 1 && (needed..=room).contains(&b.len());
        if let Some(i) = self.copy_buffers.iter().position(fits) {
            return self.copy_buffers.swap_remove(i);
        }
        if self.copy_buffers.len() >= COPY_BUFFERS_MAX {
            // Drop an unshared one to make room (shared ones are still being written).
            if let Some(i) = self
                .copy_buffers
                .iter()
                .position(|b| Rc::strong_count(b) == 1)
            {
                self.copy_buffers.swap_remove(i);
            }
        }
        let step = (needed.next_power_of_two() / 16).max(BLOCK_BYTES as usize);
        let len = needed.next_multiple_of(step).min(room);
        Rc::new(runtime::alloc_io_buffer_long_lived(len))
    }

    /// Records a completed flush and evicts flushed chunks beyond the memory window.
    pub fn complete_flush(&mut self, plan: &FlushPlan) {
        for (start, flushed) in &plan.marks {
            if let Some(chunk) = self.chunks.iter_mut().find(|c| c.start == *start) {
                self.unwritten_bytes -= flushed.saturating_sub(chunk.flushed) as u64;
                chunk.flushed = chunk.flushed.max(*flushed);
            }
        }
        if plan.sync {
            self.flushed_pos = self.flushed_pos.max(plan.target);
            self.unsynced
                .retain(|s| !plan.synced.iter().any(|t| Rc::ptr_eq(s, t)));
        } else {
            for segment in &plan.synced {
                if !self.unsynced.iter().any(|s| Rc::ptr_eq(s, segment)) {
                    self.unsynced.push(segment.clone());
                }
            }
        }
        self.evict();
    }

    /// Drops written chunks from the front while memory exceeds the window.
    fn evict(&mut self) {
        let window = self.settings.memory_window_bytes;
        while self.chunks.len() > 1 && self.chunks.len() * self.settings.chunk_bytes > window {
            let front = self.chunks.front().expect("non-empty");
            if front.flushed < front.written || matches!(front.data, ChunkData::Active(_)) {
                break;
            }
            if let Some(chunk) = self.chunks.pop_front() {
                self.recycle(chunk);
            }
        }
    }

    /// The stored bytes `[pos, pos + len)` as slices: memory when resident, file ranges
    /// otherwise. Only whole records should be asked for.
    pub fn read_slices(&self, pos: u64, len: usize) -> Result<Vec<Slice>, ReadError> {
        let min = self.min_offset();
        if pos < min {
            return Err(ReadError::BelowMinimum { pos, min });
        }
        let end = pos + len as u64;
        if end > self.write_pos {
            return Err(ReadError::PastEnd {
                pos,
                len,
                end: self.write_pos,
            });
        }
        let memory_start = self.chunks.front().map_or(self.write_pos, |c| c.start);
        let mut slices = Vec::with_capacity(1);
        let mut at = pos;
        if at < memory_start {
            let segment_start = self.segment_start_of(at);
            let Some(segment) = self.segments.get(&segment_start) else {
                return Err(ReadError::BelowMinimum { pos, min });
            };
            let disk_end = end.min(memory_start);
            slices.push(Slice::File {
                segment: segment.clone(),
                pos: at - segment_start,
                len: (disk_end - at) as usize,
            });
            at = disk_end;
        }
        if at < end {
            let first = self.chunks.partition_point(|c| c.end() <= at);
            for chunk in self.chunks.iter().skip(first) {
                if at >= end {
                    break;
                }
                let from = (at - chunk.start) as usize;
                let to = ((end.min(chunk.end())) - chunk.start) as usize;
                match &chunk.data {
                    ChunkData::Sealed(buffer) => slices.push(Slice::Shared {
                        buffer: buffer.clone(),
                        start: from,
                        len: to - from,
                    }),
                    ChunkData::Active(buffer) => slices.push(Slice::Owned(Bytes::copy_from_slice(
                        &buffer.as_bytes()[from..to],
                    ))),
                    ChunkData::Moving => unreachable!("observed mid-seal"),
                }
                at = chunk.start + to as u64;
            }
        }
        debug_assert_eq!(slices.iter().map(Slice::len).sum::<usize>(), len);
        Ok(slices)
    }

    /// Deletes whole segments (never the one being written) for which `expired` holds, oldest
    /// first, stopping at the first that is kept. Returns the new minimum offset.
    pub fn delete_segments(
        &mut self,
        mut expired: impl FnMut(&Segment) -> bool,
        doomed: &mut super::doomed::Doomed,
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
            info!(file = %segment.path().display(), "deleting expired commit log segment");
        }
        self.min_offset()
    }
}

/// Writes appended bytes into the log's chunks (`BufMut`), crossing chunk boundaries.
pub struct ChunkWriter<'a> {
    log: &'a mut CommitLog,
    pos: u64,
    end: u64,
}

// SAFETY: `chunk_mut` hands out the unwritten tail of the active chunk's (initialized, zeroed)
// buffer, never more than `remaining_mut`; `advance_mut` only records how much was written.
impl ChunkWriter<'_> {
    /// The next `len` bytes as one slice, when they fit in the active chunk (the common case:
    /// a record then encodes into plain memory instead of through `BufMut` calls that each
    /// look the chunk up). Call `commit(len)` once they are written.
    pub fn contiguous(&mut self, len: usize) -> Option<&mut [u8]> {
        if len as u64 > self.end - self.pos {
            return None;
        }
        let pos = self.pos;
        let chunk = self.log.chunk_for_write(pos);
        let from = (pos - chunk.start) as usize;
        let ChunkData::Active(buffer) = &mut chunk.data else {
            unreachable!("chunk_for_write returns an active chunk")
        };
        (from + len <= buffer.len()).then(|| &mut buffer.as_bytes_mut()[from..from + len])
    }

    /// Records that the `len` bytes handed out by `contiguous` are written.
    pub fn commit(&mut self, len: usize) {
        self.record_written(len);
    }

    fn record_written(&mut self, cnt: usize) {
        assert!(cnt as u64 <= self.end - self.pos);
        let chunk_bytes = self.log.settings.chunk_bytes;
        let chunk = self.log.chunks.back_mut().expect("chunk_mut came first");
        chunk.written += cnt;
        self.log.unwritten_bytes += cnt as u64;
        debug_assert!(chunk.written <= chunk_bytes);
        self.pos += cnt as u64;
        if chunk.written == chunk_bytes {
            chunk.seal();
        }
    }
}

unsafe impl BufMut for ChunkWriter<'_> {
    fn remaining_mut(&self) -> usize {
        (self.end - self.pos) as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.record_written(cnt);
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let pos = self.pos;
        let remaining = self.remaining_mut();
        let chunk = self.log.chunk_for_write(pos);
        let from = (pos - chunk.start) as usize;
        debug_assert_eq!(from, chunk.written);
        let ChunkData::Active(buffer) = &mut chunk.data else {
            unreachable!("chunk_for_write returns an active chunk")
        };
        let to = buffer.len().min(from + remaining);
        UninitSlice::new(&mut buffer.as_bytes_mut()[from..to])
    }
}

/// Lists segment start offsets in `dir` that belong to this shard.
fn list_segments(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::{run_reactor, ReactorConfig};
    use thruster_protocol::message::{body_crc, RecordRef};

    pub(crate) fn on_reactor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        make: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        run_reactor(ReactorConfig::new("store-test"), make).expect("reactor")
    }

    fn settings(dir: &Path) -> CommitLogSettings {
        CommitLogSettings {
            dir: dir.join("commitlog"),
            base_offset: 0,
            segment_bytes: 64 << 10,
            chunk_bytes: 8 << 10,
            memory_window_bytes: 32 << 10,
            prewrite_segments: true,
            dsync_writes: false,
            storage: Storage::default(),
        }
    }

    fn body(i: usize) -> Vec<u8> {
        vec![(i % 251) as u8; 100 + (i * 37) % 900]
    }

    /// Appends record `i` (a real RocketMQ record) and returns (position, length).
    fn append(log: &mut CommitLog, i: usize) -> Result<(u64, usize), AppendError> {
        let body = body(i);
        let record = |pos: u64| RecordRef {
            queue_id: 0,
            flag: 0,
            queue_offset: i as i64,
            physical_offset: pos as i64,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp: 2,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &body,
            topic: "T",
            properties: "",
        };
        let len = record(0).encoded_len();
        let crc = body_crc(&body);
        log.append(len, |pos, w| record(pos).encode(crc, w))
            .map(|(pos, ())| (pos, len))
    }

    async fn append_all(
        log: &mut CommitLog,
        s: &CommitLogSettings,
        range: std::ops::Range<usize>,
    ) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for i in range {
            loop {
                match append(log, i) {
                    Ok(p) => {
                        out.push(p);
                        break;
                    }
                    Err(AppendError::NeedSegment) => {
                        let next = prepare_segment(s, log.next_segment_start()).await.unwrap();
                        log.set_next_segment(next);
                    }
                    Err(AppendError::NeedFlush) => flush(log).await,
                }
            }
        }
        out
    }

    async fn flush(log: &mut CommitLog) {
        if let Some(mut plan) = log.plan_flush() {
            plan.execute().await.unwrap();
            log.complete_flush(&plan);
        }
    }

    async fn check(log: &CommitLog, positions: &[(u64, usize)]) {
        for (i, (pos, len)) in positions.iter().enumerate() {
            let bytes = materialize(&log.read_slices(*pos, *len).unwrap())
                .await
                .unwrap();
            let record = message::decode_record(&bytes, true).unwrap();
            assert_eq!(record.physical_offset, *pos as i64);
            assert_eq!(&record.body[..], &body(i)[..], "record {i}");
        }
    }

    /// The last segment holds zeros from the log's end to `until` (its end when `None`).
    fn assert_zeros_past_the_end(log: &CommitLog, s: &CommitLogSettings, until: Option<u64>) {
        let end = log.write_pos();
        let segment_start = log.segment_start_of(end);
        let file = std::fs::read(s.dir.join(segment_file_name(segment_start))).unwrap();
        let until = until.map_or(file.len(), |u| (u - segment_start) as usize);
        assert!(
            file[(end - segment_start) as usize..until]
                .iter()
                .all(|&b| b == 0),
            "old bytes past the log's end at {end}"
        );
    }

    /// Reopens the log: recovery finds every record, in order, and the same end.
    async fn reopen_and_check(log: CommitLog, s: &CommitLogSettings, positions: &[(u64, usize)]) {
        let end = log.write_pos();
        drop(log);
        let mut seen = Vec::new();
        let log = CommitLog::open(s.clone(), 0, true, |pos, bytes| {
            seen.push((pos, bytes.len()))
        })
        .await
        .unwrap();
        assert_eq!(seen, positions);
        assert_eq!(log.write_pos(), end);
        check(&log, positions).await;
    }

    #[test]
    fn chunk_buffers_are_allocated_once_per_window_not_once_per_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            // A window of 32 chunks, written out only when full: every write-out frees a burst
            // of chunks at once.
            let s = CommitLogSettings {
                memory_window_bytes: 256 << 10,
                segment_bytes: 1 << 20,
                ..settings(&root)
            };
            let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
                .await
                .unwrap();
            append_all(&mut log, &s, 0..8000).await;
            let chunks_used = log.write_pos() / s.chunk_bytes as u64;
            let window_chunks = (s.memory_window_bytes / s.chunk_bytes) as u64;
            assert!(chunks_used > 4 * window_chunks, "{chunks_used} chunks");
            assert!(
                log.chunk_buffers_allocated <= log.chunk_buffers_max(),
                "{} buffers allocated for {chunks_used} chunks through a {window_chunks}-chunk window",
                log.chunk_buffers_allocated
            );
        });
    }

    #[test]
    fn the_file_gets_zeros_past_the_last_record_even_from_a_reused_chunk_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = CommitLogSettings {
                prewrite_segments: false,
                ..settings(&root)
            };
            let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
                .await
                .unwrap();
            // Many chunks through a 4-chunk window: evicted buffers, full of records, are kept.
            append_all(&mut log, &s, 0..200).await;
            flush(&mut log).await;
            assert!(
                !log.free_chunks.is_empty(),
                "evicted chunk buffers are kept"
            );
            // Cross into a new chunk, which takes a reused buffer, and stop mid-block.
            let chunk = s.chunk_bytes as u64;
            let mut i = 200;
            let first_chunk = log.write_pos() / chunk;
            while log.write_pos() / chunk == first_chunk {
                append_all(&mut log, &s, i..i + 1).await;
                i += 1;
            }
            append_all(&mut log, &s, i..i + 1).await;
            flush(&mut log).await;
            let end = log.write_pos();
            assert_ne!(end % BLOCK_BYTES, 0, "the last block is partly used");
            assert_zeros_past_the_end(&log, &s, Some(align_up(end)));
        });
    }

    #[test]
    fn an_o_dsync_group_commit_spanning_chunks_is_one_write_per_segment_and_recovers_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = CommitLogSettings {
                dsync_writes: true,
                ..settings(&root)
            };
            let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
                .await
                .unwrap();
            let mut positions = Vec::new();
            let (mut coalesced, mut across_segments) = (0, 0);
            let mut i = 0;
            while i < 600 {
                // Groups of 1 to 40 records (up to ~40 KiB: up to 6 chunks of 8 KiB).
                let group = 1 + (i * 7) % 40;
                for j in i..i + group {
                    // Without flushing in between: the group is one commit.
                    match append(&mut log, j) {
                        Ok(p) => positions.push(p),
                        Err(AppendError::NeedSegment) => {
                            let next = prepare_segment(&s, log.next_segment_start()).await.unwrap();
                            log.set_next_segment(next);
                            positions.push(append(&mut log, j).unwrap());
                        }
                        Err(AppendError::NeedFlush) => break,
                    }
                }
                i = positions.len();
                let mut plan = log.plan_flush().expect("dirty");
                let segments = plan.synced.len();
                let dirty_chunks = plan.marks.len();
                assert_eq!(plan.writes.len(), segments, "one write per segment");
                coalesced += usize::from(dirty_chunks > segments);
                across_segments += usize::from(segments > 1);
                plan.execute().await.unwrap();
                log.complete_flush(&plan);
                assert_eq!(log.flushed_pos(), log.write_pos());
                // Past the last record the file holds zeros, whatever a reused buffer held.
                assert_zeros_past_the_end(&log, &s, None);
            }
            assert!(coalesced > 20, "{coalesced} groups spanned chunks");
            assert!(across_segments > 0, "a group crossed into a new segment");
            check(&log, &positions).await;
            reopen_and_check(log, &s, &positions).await;
        });
    }

    #[test]
    fn appends_cross_chunks_and_segments_and_read_back_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = settings(&root);
            let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
                .await
                .unwrap();
            let positions = append_all(&mut log, &s, 0..400).await;
            assert!(log.segments().count() >= 3, "rolled across segments");
            flush(&mut log).await;
            assert_eq!(log.flushed_pos(), log.write_pos());
            // Old data is no longer in memory: served as file ranges.
            let (pos, len) = positions[0];
            assert!(matches!(
                log.read_slices(pos, len).unwrap()[0],
                Slice::File { .. }
            ));
            check(&log, &positions).await;
            assert!(log.read_slices(log.write_pos(), 1).is_err());

            reopen_and_check(log, &s, &positions).await;
        });
    }

    #[test]
    fn unflushed_data_is_bounded_by_the_memory_window() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = settings(&root);
            let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
                .await
                .unwrap();
            let mut refused = false;
            for i in 0..200 {
                match append(&mut log, i) {
                    Err(AppendError::NeedFlush) => {
                        refused = true;
                        break;
                    }
                    Err(AppendError::NeedSegment) => {
                        let next = prepare_segment(&s, log.next_segment_start()).await.unwrap();
                        log.set_next_segment(next);
                    }
                    Ok(_) => {
                        assert!(log.unflushed_bytes() <= (s.memory_window_bytes + 2048) as u64)
                    }
                }
            }
            assert!(
                refused,
                "appends must stop when unflushed data exceeds the window"
            );
        });
    }

    /// Writes records 0..30 into the first segment, lets `damage` change the file's bytes
    /// (given the records' positions), reopens: the positions, how many records recovery
    /// found, and the log.
    async fn thirty_records_damaged(
        s: &CommitLogSettings,
        damage: impl FnOnce(&mut [u8], &[(u64, usize)]),
    ) -> (Vec<(u64, usize)>, usize, CommitLog) {
        let mut log = CommitLog::open(s.clone(), 0, true, |_, _| {})
            .await
            .unwrap();
        let positions = append_all(&mut log, s, 0..30).await;
        flush(&mut log).await;
        drop(log);
        let path = s.dir.join(segment_file_name(0));
        let mut data = std::fs::read(&path).unwrap();
        damage(&mut data, &positions);
        std::fs::write(&path, &data).unwrap();
        let mut seen = 0;
        let log = CommitLog::open(s.clone(), 0, true, |_, _| seen += 1)
            .await
            .unwrap();
        (positions, seen, log)
    }

    #[test]
    fn a_record_whose_end_never_reached_the_disk_is_cut_though_its_body_crc_holds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = settings(&root);
            // As if the write holding record 20's last bytes (its topic and properties
            // length) and everything after had not landed: zeros from there on.
            let (positions, seen, log) = thirty_records_damaged(&s, |data, positions| {
                let (pos, len) = positions[20];
                let end = (positions[29].0 as usize) + positions[29].1;
                data[pos as usize + len - 3..end].fill(0);
            })
            .await;
            let pos = positions[20].0;
            assert_eq!(
                seen, 20,
                "record 20 is torn: size, position and body CRC still hold"
            );
            assert_eq!(log.write_pos(), pos);
        });
    }

    #[test]
    fn torn_tail_is_cut_at_the_last_intact_record_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let s = settings(&root);
            // Flip a body byte of record 20: records 20.. are lost, 0..20 survive.
            let (positions, seen, mut log) = thirty_records_damaged(&s, |data, positions| {
                data[positions[20].0 as usize + 95] ^= 0xFF;
            })
            .await;
            let (pos, _) = positions[20];
            let path = s.dir.join(segment_file_name(0));
            assert_eq!(seen, 20);
            assert_eq!(log.write_pos(), pos);
            // What followed the cut was zeroed, so it can never come back.
            let data = std::fs::read(&path).unwrap();
            assert!(data[pos as usize..positions[29].0 as usize]
                .iter()
                .all(|b| *b == 0));
            let more = append_all(&mut log, &s, 20..25).await;
            assert_eq!(more[0].0, pos);
            flush(&mut log).await;
            drop(log);
            let mut seen = 0;
            let log = CommitLog::open(s.clone(), 0, true, |_, _| seen += 1)
                .await
                .unwrap();
            assert_eq!(seen, 25);
            check(&log, &[&positions[..20], &more[..]].concat()).await;
        });
    }
}
