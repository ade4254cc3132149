//! `MessageStore`: one shard's store. Puts append to the CommitLog and dispatch inline to the
//! ConsumeQueue and IndexFile (same reactor, no reput thread); background tasks flush, prepare
//! segments, sync the ConsumeQueues and index and write the checkpoint, and enforce retention
//! and disk-space limits.
//!
//! Visibility: under SYNC_FLUSH a record is readable only once it is durable (a consumer never
//! sees a message a crash could still take back); under ASYNC_FLUSH as soon as it is appended.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use thruster_client::protocol::message::{self, body_crc, property, sys_flag, RecordRef};
use tracing::{error, info, warn};

use super::checkpoint::Checkpoint;
use super::commit_log::{self, materialize, AppendError, CommitLog, CommitLogSettings, Slice};
use super::config::{shard_base_offset, FlushMode, StoreConfig};
use super::consume_queue::{ConsumeQueue, CqEntry, QueueTable};
use super::index_file::IndexService;
use super::mapped_file;
use super::watermark::Watermark;
use crate::runtime;

/// One message to store.
#[derive(Debug, Clone)]
pub struct PutMessage {
    pub topic: String,
    pub queue_id: i32,
    pub flag: i32,
    pub body: Bytes,
    pub properties: String,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
}

impl PutMessage {
    /// A message with no properties, flags or producer details (born host unspecified); set
    /// the rest with struct update syntax.
    pub fn new(
        topic: impl Into<String>,
        queue_id: i32,
        body: Bytes,
        store_host: SocketAddr,
    ) -> PutMessage {
        PutMessage {
            topic: topic.into(),
            queue_id,
            flag: 0,
            body,
            properties: String::new(),
            sys_flag: 0,
            born_timestamp: 0,
            born_host: SocketAddr::from(([0, 0, 0, 0], 0)),
            store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutStatus {
    Ok,
    /// Stored, but the sync flush did not complete in time (RocketMQ FLUSH_DISK_TIMEOUT).
    FlushDiskTimeout,
    /// Not stored: too large, bad topic, properties too long (MESSAGE_ILLEGAL).
    MessageIllegal(String),
    /// Not stored: disk full, flush failing, shutting down (SERVICE_NOT_AVAILABLE).
    ServiceNotAvailable(String),
}

#[derive(Debug, Clone)]
pub struct PutResult {
    pub status: PutStatus,
    /// Commitlog offset of each stored record.
    pub phys_offsets: Vec<u64>,
    /// Queue offset of the first record.
    pub queue_offset: u64,
    pub store_timestamp: i64,
    pub wrote_bytes: usize,
}

impl PutResult {
    fn refused(status: PutStatus) -> PutResult {
        PutResult {
            status,
            phys_offsets: Vec::new(),
            queue_offset: 0,
            store_timestamp: 0,
            wrote_bytes: 0,
        }
    }
}

/// Result codes of a queue read (RocketMQ `GetMessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    Found,
    NoMatchedMessage,
    MessageWasRemoving,
    NoMessageInQueue,
    NoMatchedLogicQueue,
    OffsetTooSmall,
    OffsetOverflowOne,
    OffsetOverflowBadly,
    OffsetFoundNull,
}

/// One record found by a read: its location and its bytes as slices (not copies).
#[derive(Debug, Clone)]
pub struct FoundMessage {
    pub queue_offset: u64,
    pub phys_offset: u64,
    pub size: u32,
    pub tags_code: i64,
    pub slices: Vec<Slice>,
}

impl FoundMessage {
    pub async fn bytes(&self) -> io::Result<Bytes> {
        materialize(&self.slices).await
    }

    /// Whether the whole record is in memory (RocketMQ's "hot" transfer limits apply).
    pub fn in_memory(&self) -> bool {
        !self.slices.iter().any(|s| matches!(s, Slice::File { .. }))
    }
}

#[derive(Debug, Clone)]
pub struct GetResult {
    pub status: GetStatus,
    pub next_begin_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<FoundMessage>,
}

/// Per-pull transfer limits (RocketMQ defaults).
pub const MEMORY_TRANSFER_MAX_BYTES: usize = 256 << 10;
pub const MEMORY_TRANSFER_MAX_COUNT: usize = 32;
pub const DISK_TRANSFER_MAX_BYTES: usize = 64 << 10;
pub const DISK_TRANSFER_MAX_COUNT: usize = 8;
/// ConsumeQueue entries scanned per read at least (16000 bytes / 20).
const SCAN_ENTRIES_MIN: u64 = 800;

/// Counters for benchmarks and runtime info.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub puts: u64,
    pub put_records: u64,
    pub flushes: u64,
    pub flushed_bytes: u64,
    /// Puts that waited because unwritten data filled the memory window (the disk is behind).
    pub window_waits: u64,
    /// Puts that waited for the next segment to be prepared.
    pub segment_waits: u64,
    /// Async write-out: chunk writes completed, and their summed time from start to the
    /// store seeing the completion (which includes waiting for the reactor to reap it).
    pub chunk_writes: u64,
    pub chunk_write_us: u64,
}

/// Reports the used share of the store's file system, in percent.
pub type DiskUsageProbe = Box<dyn Fn() -> io::Result<u32>>;

struct State {
    /// Background tasks exit when set (shutdown, or a simulated crash in tests).
    stopped: Cell<bool>,
    tasks_running: Cell<u32>,
    disk_full: Cell<bool>,
    /// Why preparing the next segment failed (ENOSPC, typically); cleared when one is prepared.
    /// Puts that need that segment meanwhile are refused with it.
    segment_error: RefCell<Option<String>>,
    flush_error: RefCell<Option<String>>,
    /// Set for good when an fdatasync of the CommitLog fails ("fsyncgate"): what it was to make
    /// durable may be lost, including write-outs no longer in memory, and a retried fdatasync
    /// would succeed without bringing it back. So the store stops advancing `flushed` (and the
    /// checkpoint), refuses puts and fails flushes until it is restarted; recovery then
    /// rewrites and syncs everything past the checkpoint (`CommitLog::rewrite_durably`). Write
    /// errors are different: the data is still in memory and the write is retried from it.
    sync_failed: RefCell<Option<String>>,
    /// Set for good when syncing the ConsumeQueues or the index failed: their dirty pages may
    /// have been dropped by the kernel, so the checkpoint is not advanced again by this process
    /// (the next start re-dispatches from the last good one, which rewrites the entries).
    queue_sync_failed: Cell<bool>,
    shutting_down: Cell<bool>,
}

pub struct MessageStore {
    config: StoreConfig,
    log: RefCell<CommitLog>,
    queues: RefCell<QueueTable>,
    index: RefCell<IndexService>,
    /// CommitLog bytes made durable.
    flushed: Watermark,
    /// CommitLog bytes appended (wakes the flusher).
    appended: Watermark,
    /// Readable end of the CommitLog (flushed under SYNC_FLUSH, appended under ASYNC_FLUSH).
    visible: Watermark,
    /// Bumped after every write-out (async mode) and flush: progress writers may wait for.
    written_out: Watermark,
    /// Ticket queue of writers held back by a full memory window: `next_ticket` is handed
    /// out, `admitted` is the ticket whose turn it is.
    next_ticket: Cell<u64>,
    admitted: Watermark,
    /// Bumped to ask the flusher for a flush now (memory window full, `flush_now`).
    flush_requests: Watermark,
    /// Bumped when a segment is consumed (wakes the preparer) and when one is ready.
    segments_rolled: Watermark,
    segments_ready: Watermark,
    /// Coarse wall clock (ms), ticked by `clock_loop` under SYNC_FLUSH: waiting puts take their
    /// FLUSH_DISK_TIMEOUT deadline from it. One timer per shard instead of one per put (a
    /// timer per put cost an io_uring timeout and a cancel each, which halved group commits).
    clock_ms: Watermark,
    state: State,
    disk_usage: RefCell<DiskUsageProbe>,
    last_checkpoint: Cell<Checkpoint>,
    last_checkpoint_ms: Cell<i64>,
    last_flush_ms: Cell<i64>,
    flush_requests_served: Cell<u64>,
    writes_in_flight: Cell<usize>,
    stats: Cell<StoreStats>,
    /// Reads within this many bytes of the end are hot (`hot_window_bytes`, computed once).
    hot_window_bytes: u64,
    _lock: std::fs::File,
}

impl MessageStore {
    /// Opens (recovering if needed) the store of one shard and starts its background tasks.
    /// Must run on the shard's reactor.
    pub async fn open(config: StoreConfig) -> io::Result<Rc<MessageStore>> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        std::fs::create_dir_all(&config.root_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating {}: {e}", config.root_dir.display()),
            )
        })?;
        let lock = lock_store(&config)?;
        let crashed = config.abort_path().exists();
        std::fs::write(config.abort_path(), b"").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating {}: {e}", config.abort_path().display()),
            )
        })?;
        let checkpoint = Checkpoint::load(&config.storage, &config.checkpoint_path())?;
        let base = shard_base_offset(config.shard_id);
        let mut recover_from = checkpoint.map_or(base, |c| c.recover_from.max(base));
        let known_durable = recover_from;
        if crashed {
            // After a crash, validate the whole segment holding the checkpoint (as RocketMQ
            // rescans whole files): damage anywhere in the newest data is found and cut there.
            recover_from =
                base + (recover_from - base) / config.segment_bytes * config.segment_bytes;
        }

        let mut queues = open_queues(&config)?;
        let mut index = IndexService::open(
            &config.index_dir(),
            config.index_hash_slots,
            config.index_entries,
        )?;
        let settings = CommitLogSettings {
            dir: config.commit_log_dir(),
            base_offset: base,
            segment_bytes: config.segment_bytes,
            chunk_bytes: config.chunk_bytes,
            memory_window_bytes: config.memory_window_bytes,
            prewrite_segments: config.prewrite_segments,
            dsync_writes: config.flush_mode == FlushMode::Sync,
            storage: config.storage.clone(),
        };
        let mut redispatched = 0u64;
        let mut dispatch_error = None;
        let log = CommitLog::open(
            settings,
            recover_from,
            config.check_crc_on_recover,
            |pos, bytes| {
                let Ok(record) = message::decode_record(bytes, false) else {
                    return;
                };
                redispatched += 1;
                if let Err(e) = dispatch(
                    &config,
                    &mut queues,
                    &mut index,
                    pos,
                    &record.topic,
                    record.queue_id,
                    record.queue_offset as u64,
                    record.total_size as u32,
                    record.sys_flag,
                    &record.properties,
                    record.store_timestamp,
                ) {
                    dispatch_error.get_or_insert(e);
                }
            },
        )
        .await?;
        if let Some(e) = dispatch_error {
            return Err(e);
        }
        log.rewrite_durably(known_durable).await?;
        let end = log.write_pos();
        let mut truncated = 0;
        for queue in queues.values_mut() {
            truncated += queue.truncate_to_log_end(end);
        }
        info!(
            shard = config.shard_id,
            crashed,
            recover_from,
            end,
            redispatched,
            truncated_queue_entries = truncated,
            "store recovered"
        );

        let root = config.root_dir.clone();
        let store = Rc::new(MessageStore {
            log: RefCell::new(log),
            queues: RefCell::new(queues),
            index: RefCell::new(index),
            flushed: Watermark::new(end),
            appended: Watermark::new(end),
            visible: Watermark::new(end),
            flush_requests: Watermark::new(0),
            next_ticket: Cell::new(0),
            admitted: Watermark::new(0),
            written_out: Watermark::new(0),
            segments_rolled: Watermark::new(0),
            segments_ready: Watermark::new(0),
            clock_ms: Watermark::new(runtime::now_ms().max(0) as u64),
            state: State {
                stopped: Cell::new(false),
                tasks_running: Cell::new(0),
                disk_full: Cell::new(false),
                segment_error: RefCell::new(None),
                flush_error: RefCell::new(None),
                sync_failed: RefCell::new(None),
                queue_sync_failed: Cell::new(false),
                shutting_down: Cell::new(false),
            },
            disk_usage: RefCell::new(Box::new(move || disk_used_percent(&root))),
            last_checkpoint: Cell::new(checkpoint.unwrap_or_default()),
            last_checkpoint_ms: Cell::new(0),
            last_flush_ms: Cell::new(0),
            flush_requests_served: Cell::new(0),
            writes_in_flight: Cell::new(0),
            stats: Cell::new(StoreStats::default()),
            hot_window_bytes: config.hot_window_bytes(),
            _lock: lock,
            config,
        });
        // Everything recovered is durable: record that before serving.
        store.sync_queues_and_checkpoint().await?;
        store.spawn_background(flush_loop);
        store.spawn_background(prepare_loop);
        store.spawn_background(checkpoint_loop);
        store.spawn_background(retention_loop);
        if store.config.flush_mode == FlushMode::Sync {
            store.spawn_background(clock_loop);
        }
        Ok(store)
    }

    /// Starts a background task, counted until it exits (its `TaskGuard` drops), so shutdown
    /// can wait for all of them.
    fn spawn_background<F: std::future::Future<Output = ()> + 'static>(
        self: &Rc<Self>,
        task: impl FnOnce(std::rc::Weak<MessageStore>) -> F,
    ) {
        let running = &self.state.tasks_running;
        running.set(running.get() + 1);
        runtime::spawn_detached(task(Rc::downgrade(self)));
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn stats(&self) -> StoreStats {
        self.stats.get()
    }

    fn count(&self, update: impl FnOnce(&mut StoreStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    /// Replaces the disk usage probe (tests simulate a full disk with it).
    pub fn set_disk_usage_probe(&self, probe: DiskUsageProbe) {
        *self.disk_usage.borrow_mut() = probe;
    }

    fn refusal(&self) -> Option<PutStatus> {
        if self.state.shutting_down.get() {
            return Some(PutStatus::ServiceNotAvailable(
                "message store is shutting down".into(),
            ));
        }
        if self.state.disk_full.get() {
            return Some(PutStatus::ServiceNotAvailable(format!(
                "disk full: the store's file system is over {}% used",
                self.config.disk_space_warning_level_ratio
            )));
        }
        if let Some(e) = self.state.flush_error.borrow().as_ref() {
            return Some(PutStatus::ServiceNotAvailable(format!(
                "commit log flush failing: {e}"
            )));
        }
        None
    }

    /// Stores one message.
    pub async fn put(&self, message: PutMessage) -> PutResult {
        self.put_batch(vec![message]).await
    }

    /// Stores messages of one (topic, queue) as consecutive records (a batch), all or none.
    pub async fn put_batch(&self, messages: Vec<PutMessage>) -> PutResult {
        assert!(!messages.is_empty());
        // An async put may never wait; without this a busy producer would starve the flusher.
        // (A sync put always waits for the flusher; yielding here would only split its group.)
        if self.config.flush_mode == FlushMode::Async {
            runtime::yield_if_needed().await;
        }
        if let Some(status) = self.refusal() {
            return PutResult::refused(status);
        }
        let (topic, queue_id) = (messages[0].topic.as_str(), messages[0].queue_id);
        let mut total = 0usize;
        // (body CRC, record length) per message, computed once.
        let mut sizes = Vec::with_capacity(messages.len());
        for m in &messages {
            assert!(
                m.topic == topic && m.queue_id == queue_id,
                "a batch belongs to one queue"
            );
            let record = record_ref(m, 0, 0, 0);
            if let Err(e) = record.check_limits() {
                return PutResult::refused(PutStatus::MessageIllegal(e.to_string()));
            }
            let len = record.encoded_len();
            if len > self.config.max_message_bytes {
                return PutResult::refused(PutStatus::MessageIllegal(format!(
                    "message of {len} bytes exceeds maxMessageSize {}",
                    self.config.max_message_bytes
                )));
            }
            total += len;
            sizes.push((body_crc(&m.body), len));
        }
        if total + 8 > self.config.segment_bytes as usize {
            return PutResult::refused(PutStatus::MessageIllegal(format!(
                "batch of {total} bytes exceeds a commit log segment"
            )));
        }
        let dispatched = dispatches_to_queue(messages[0].sys_flag);
        // Under back-pressure (memory window full) writers go through in arrival order: a
        // ticket queue, so no writer can be overtaken again and again by newcomers.
        let mut ticket: Option<Ticket<'_>> = self.backlog_ticket();
        if let Some(t) = &ticket {
            self.admitted.wait_for(t.number).await;
        }
        let (start, queue_offset, store_timestamp, phys_offsets) = loop {
            let attempt = {
                let mut queues = self.queues.borrow_mut();
                let mut queue = if dispatched {
                    match queue_entry(&self.config, &mut queues, topic, queue_id) {
                        Ok(q) => Some(q),
                        Err(e) => {
                            return PutResult::refused(PutStatus::ServiceNotAvailable(
                                e.to_string(),
                            ))
                        }
                    }
                } else {
                    None
                };
                let queue_offset = queue.as_ref().map_or(0, |q| q.max_offset());
                let store_timestamp = runtime::now_ms();
                let appended = self.log.borrow_mut().append(total, |start, writer| {
                    let mut pos = start;
                    for (i, m) in messages.iter().enumerate() {
                        let qo = if dispatched {
                            queue_offset + i as u64
                        } else {
                            0
                        };
                        let record = record_ref(m, qo, pos, store_timestamp);
                        let (crc, len) = sizes[i];
                        match writer.contiguous(len) {
                            Some(mut slice) => {
                                record.encode(crc, &mut slice);
                                debug_assert!(slice.is_empty(), "the record filled its slice");
                                writer.commit(len);
                            }
                            None => record.encode(crc, writer),
                        }
                        pos += len as u64;
                    }
                });
                appended.map(|(start, ())| {
                    // Dispatch inline, under the same lookup: same reactor, so readers see the
                    // ConsumeQueue and the log agree.
                    let mut index = self.index.borrow_mut();
                    let mut pos = start;
                    let mut phys_offsets = Vec::with_capacity(messages.len());
                    for (i, m) in messages.iter().enumerate() {
                        let len = sizes[i].1;
                        let record = DispatchRecord {
                            pos,
                            topic,
                            queue_offset: queue_offset + i as u64,
                            size: len as u32,
                            sys_flag: m.sys_flag,
                            properties: &m.properties,
                            store_timestamp,
                        };
                        let result =
                            dispatch_to(&self.config, queue.as_deref_mut(), &mut index, &record);
                        if let Err(e) = result {
                            // The record is in the log; recovery re-dispatches it. Report, do
                            // not lose it.
                            error!(topic = %topic, queue_id, pos, error = %e, "dispatch failed");
                        }
                        phys_offsets.push(pos);
                        pos += len as u64;
                    }
                    (start, queue_offset, store_timestamp, phys_offsets)
                })
            };
            match attempt {
                Ok(done) => break done,
                Err(AppendError::NeedSegment) => {
                    self.count(|stats| stats.segment_waits += 1);
                    let seen = self.segments_ready.get();
                    self.segments_rolled.advance(self.segments_rolled.get() + 1);
                    self.segments_ready.wait_for(seen + 1).await;
                    // Only a put that needs the next segment is refused when it cannot be
                    // prepared: the rest of the current one still takes writes.
                    if !self.log.borrow().has_next_segment() {
                        if let Some(e) = self.state.segment_error.borrow().as_ref() {
                            return PutResult::refused(PutStatus::ServiceNotAvailable(format!(
                                "disk full or failing: preparing the next commit log segment \
                                 failed: {e}"
                            )));
                        }
                    }
                }
                Err(AppendError::NeedFlush) => {
                    self.count(|stats| stats.window_waits += 1);
                    if ticket.is_none() {
                        let t = self.take_ticket();
                        self.admitted.wait_for(t.number).await;
                        ticket = Some(t);
                        continue; // our turn: try again before waiting for progress
                    }
                    match self.config.flush_mode {
                        // The flusher streams sealed chunks out continuously: wait for its progress
                        // (asking for a full sync here would stall every writer behind one huge flush).
                        FlushMode::Async => {
                            let written = self.written_out.get();
                            self.written_out.wait_for(written + 1).await;
                        }
                        FlushMode::Sync => {
                            let flushed = self.flushed.get();
                            self.request_flush();
                            self.flushed.wait_for(flushed + 1).await;
                        }
                    }
                }
            }
            if let Some(status) = self.refusal() {
                return PutResult::refused(status);
            }
        };
        drop(ticket);
        let end = start + total as u64;
        self.count(|stats| {
            stats.puts += 1;
            stats.put_records += messages.len() as u64;
        });
        self.appended.advance(end);
        if self.config.flush_mode == FlushMode::Async {
            self.visible.advance(end);
        }
        let mut status = PutStatus::Ok;
        if self.config.flush_mode == FlushMode::Sync {
            let deadline_ms = store_timestamp.max(0) as u64 + self.config.sync_flush_timeout_ms;
            let flushed =
                futures_lite::future::or(async { Some(self.wait_flushed(end).await) }, async {
                    self.clock_ms.wait_for(deadline_ms).await;
                    None
                })
                .await;
            status = match flushed {
                Some(Ok(())) => PutStatus::Ok,
                Some(Err(e)) => {
                    PutStatus::ServiceNotAvailable(format!("commit log flush failed: {e}"))
                }
                None => PutStatus::FlushDiskTimeout,
            };
        }
        PutResult {
            status,
            phys_offsets,
            queue_offset,
            store_timestamp,
            wrote_bytes: total,
        }
    }

    async fn wait_flushed(&self, end: u64) -> Result<(), String> {
        loop {
            if self.flushed.get() >= end {
                return Ok(());
            }
            if let Some(e) = self.state.flush_error.borrow().clone() {
                return Err(e);
            }
            self.flushed.wait_for(end).await;
        }
    }

    /// Reads up to `max_count` messages of a queue from `offset`, skipping those whose tag code
    /// `filter` rejects.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
        max_count: usize,
        filter: &dyn Fn(i64) -> bool,
    ) -> GetResult {
        let queues = self.queues.borrow();
        let log = self.log.borrow();
        let visible_end = self.visible.get();
        let Some(queue) = queues.get(topic, queue_id) else {
            return empty_result(GetStatus::NoMatchedLogicQueue, 0, 0, 0);
        };
        let min = queue.min_offset();
        let max = visible_max_offset(queue, visible_end);
        if max == 0 {
            return empty_result(GetStatus::NoMessageInQueue, 0, min, max);
        }
        if offset < min {
            return empty_result(GetStatus::OffsetTooSmall, min, min, max);
        }
        if offset == max {
            return empty_result(GetStatus::OffsetOverflowOne, offset, min, max);
        }
        if offset > max {
            return empty_result(GetStatus::OffsetOverflowBadly, max, min, max);
        }
        let log_min = log.min_offset();
        let hot_window_bytes = self.hot_window_bytes;
        // RocketMQ scans at most max(16000, maxMsgNums × 20) bytes of ConsumeQueue per pull.
        let scan_limit = SCAN_ENTRIES_MIN.max(max_count as u64);
        let mut messages: Vec<FoundMessage> = Vec::new();
        let mut bytes = 0usize;
        let mut status = GetStatus::NoMatchedMessage;
        let mut next = offset;
        while next < max && next - offset < scan_limit {
            let Some(entry) = queue.get(next) else {
                if messages.is_empty() {
                    status = GetStatus::OffsetFoundNull;
                }
                break;
            };
            if entry.phys_offset < log_min {
                status = GetStatus::MessageWasRemoving;
                next += 1;
                continue;
            }
            if !filter(entry.tags_code) {
                next += 1;
                continue;
            }
            let Ok(slices) = log.read_slices(entry.phys_offset, entry.size as usize) else {
                status = GetStatus::MessageWasRemoving;
                next += 1;
                continue;
            };
            let found = FoundMessage {
                queue_offset: next,
                phys_offset: entry.phys_offset,
                size: entry.size,
                tags_code: entry.tags_code,
                slices,
            };
            // RocketMQ's rule: hot unless further behind the end than a share of physical
            // memory (then likely out of the page cache).
            let hot = visible_end.saturating_sub(entry.phys_offset) <= hot_window_bytes;
            let (max_bytes, max_msgs) = if hot {
                (MEMORY_TRANSFER_MAX_BYTES, MEMORY_TRANSFER_MAX_COUNT)
            } else {
                (DISK_TRANSFER_MAX_BYTES, DISK_TRANSFER_MAX_COUNT)
            };
            // The first message always goes, whatever its size.
            if !messages.is_empty()
                && (messages.len() >= max_count.min(max_msgs)
                    || bytes + entry.size as usize > max_bytes)
            {
                break;
            }
            bytes += entry.size as usize;
            messages.push(found);
            next += 1;
            if messages.len() >= max_count {
                break;
            }
        }
        if !messages.is_empty() {
            status = GetStatus::Found;
        }
        GetResult {
            status,
            next_begin_offset: next,
            min_offset: min,
            max_offset: max,
            messages,
        }
    }

    /// Next offset of a queue (0 when unknown), counting only readable messages.
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> u64 {
        let visible_end = self.visible.get();
        self.queues
            .borrow()
            .get(topic, queue_id)
            .map_or(0, |q| visible_max_offset(q, visible_end))
    }

    /// First readable offset of a queue, `None` for an unknown queue.
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> Option<u64> {
        self.queues
            .borrow()
            .get(topic, queue_id)
            .map(ConsumeQueue::min_offset)
    }

    /// Queues this store has.
    pub fn queue_ids(&self) -> Vec<(String, i32)> {
        self.queues.borrow().ids()
    }

    pub fn commit_log_min_offset(&self) -> u64 {
        self.log.borrow().min_offset()
    }

    pub fn commit_log_max_offset(&self) -> u64 {
        self.visible.get()
    }

    /// The record at a commitlog offset (VIEW_MESSAGE_BY_ID), as stored.
    pub async fn read_record(&self, phys_offset: u64) -> io::Result<Option<Bytes>> {
        if phys_offset >= self.visible.get() {
            return Ok(None);
        }
        let head = match self.log.borrow().read_slices(phys_offset, 8) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        let head = materialize(&head).await?;
        let Ok(message::RecordStart::Message { total_size }) = message::peek_record(&head) else {
            return Ok(None);
        };
        if phys_offset + total_size as u64 > self.visible.get() {
            return Ok(None);
        }
        let slices = match self.log.borrow().read_slices(phys_offset, total_size) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        let bytes = materialize(&slices).await?;
        Ok(message::decode_record(&bytes, false)
            .is_ok()
            .then_some(bytes))
    }

    /// Records indexed under `topic#key` with store time in `[begin, end]` (QUERY_MESSAGE), and
    /// the index's last update (timestamp, commitlog offset).
    pub async fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> io::Result<(Vec<Bytes>, i64, u64)> {
        let (offsets, last) = {
            let index = self.index.borrow();
            (
                index.query(topic, key, max, begin, end),
                index.last_update(),
            )
        };
        let mut records = Vec::with_capacity(offsets.len());
        for offset in offsets {
            if let Some(bytes) = self.read_record(offset).await? {
                records.push(bytes);
            }
        }
        Ok((records, last.0, last.1))
    }

    async fn store_timestamp_at(&self, entry: CqEntry) -> io::Result<Option<i64>> {
        let slices = match self
            .log
            .borrow()
            .read_slices(entry.phys_offset, entry.size as usize)
        {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        let bytes = materialize(&slices).await?;
        Ok(message::decode_record(&bytes, false)
            .ok()
            .map(|r| r.store_timestamp))
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first offset whose store time is >= `timestamp`
    /// (`upper`: the last one <= it), clamped to the queue's bounds.
    pub async fn search_offset_by_timestamp(
        &self,
        topic: &str,
        queue_id: i32,
        timestamp: i64,
        upper: bool,
    ) -> io::Result<u64> {
        let (min, max) = {
            let Some(q) = self
                .queues
                .borrow()
                .get(topic, queue_id)
                .map(|q| (q.min_offset(), visible_max_offset(q, self.visible.get())))
            else {
                return Ok(0);
            };
            q
        };
        let (mut lo, mut hi) = (min, max); // first index with ts >= timestamp (or > for upper)
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self
                .queues
                .borrow()
                .get(topic, queue_id)
                .and_then(|q| q.get(mid));
            let ts = match entry {
                Some(entry) => self.store_timestamp_at(entry).await?.unwrap_or(i64::MIN),
                None => i64::MIN,
            };
            let before = if upper {
                ts <= timestamp
            } else {
                ts < timestamp
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(if upper {
            lo.saturating_sub(1).max(min)
        } else {
            lo.min(max)
        })
    }

    /// GET_EARLIEST_MSG_STORETIME: store time of a queue's first readable message.
    pub async fn earliest_store_time(&self, topic: &str, queue_id: i32) -> io::Result<Option<i64>> {
        let entry = self
            .queues
            .borrow()
            .get(topic, queue_id)
            .and_then(|q| q.get(q.min_offset()));
        match entry {
            Some(entry) if entry.end() <= self.visible.get() => {
                self.store_timestamp_at(entry).await
            }
            _ => Ok(None),
        }
    }

    /// Flushes everything, syncs the ConsumeQueues and index, writes the checkpoint and removes
    /// the abort file: the next start is a clean one.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.state.shutting_down.set(true);
        self.flush_now().await?;
        self.sync_queues_and_checkpoint().await?;
        self.stop_tasks().await;
        std::fs::remove_file(self.config.abort_path()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("removing {}: {e}", self.config.abort_path().display()),
            )
        })?;
        info!(
            shard = self.config.shard_id,
            end = self.flushed.get(),
            "store shut down cleanly"
        );
        Ok(())
    }

    /// Stops the background tasks and waits until they have exited (each checks the flag at
    /// least every 200 ms).
    async fn stop_tasks(&self) {
        self.state.stopped.set(true);
        while self.state.tasks_running.get() > 0 {
            runtime::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Test support: stop like a crashed process, without flushing or checkpointing. What was
    /// flushed is on disk; what was only in memory is lost when the store is dropped.
    pub async fn abandon(&self) {
        self.state.shutting_down.set(true);
        self.stop_tasks().await;
    }

    /// A ticket if writers are already queued (newcomers must not overtake them).
    fn backlog_ticket(&self) -> Option<Ticket<'_>> {
        (self.next_ticket.get() > self.admitted.get()).then(|| self.take_ticket())
    }

    fn take_ticket(&self) -> Ticket<'_> {
        let number = self.next_ticket.get();
        self.next_ticket.set(number + 1);
        Ticket {
            store: self,
            number,
        }
    }

    fn request_flush(&self) {
        self.flush_requests.advance(self.flush_requests.get() + 1);
    }

    /// Flushes everything appended so far (one flush at a time: waits for a running one).
    pub async fn flush_now(&self) -> io::Result<()> {
        let target = self.appended.get();
        self.request_flush();
        while self.flushed.get() < target {
            if let Some(e) = self.state.flush_error.borrow().clone() {
                return Err(io::Error::other(e));
            }
            self.flushed.wait_for(target).await;
        }
        Ok(())
    }

    /// Starts pipelined writes of sealed chunks until `WRITES_IN_FLIGHT_MAX` are in flight.
    fn start_chunk_writes(self: &Rc<Self>) {
        while self.writes_in_flight.get() < commit_log::WRITES_IN_FLIGHT_MAX {
            let Some(write) = self.log.borrow_mut().next_chunk_write() else {
                return;
            };
            self.writes_in_flight.set(self.writes_in_flight.get() + 1);
            let store = Rc::downgrade(self);
            runtime::spawn_detached(async move {
                let (start, written, segment) = (write.start, write.written, write.segment.clone());
                let started = std::time::Instant::now();
                let result = write.execute().await;
                let Some(s) = store.upgrade() else { return };
                s.count(|stats| {
                    stats.chunk_writes += 1;
                    stats.chunk_write_us += started.elapsed().as_micros() as u64;
                });
                s.writes_in_flight.set(s.writes_in_flight.get() - 1);
                match result {
                    Ok(()) => s
                        .log
                        .borrow_mut()
                        .complete_chunk_write(start, written, &segment),
                    Err(e) => {
                        s.log.borrow_mut().abort_chunk_write(start);
                        error!(error = %e, "commit log write-out failed; will retry");
                        *s.state.flush_error.borrow_mut() = Some(e.to_string());
                        s.flushed.wake_all();
                    }
                }
                s.written_out.advance(s.written_out.get() + 1);
                // Keep the pipeline full without waiting for the flusher to come round.
                if !s.state.stopped.get() {
                    s.start_chunk_writes();
                }
            });
        }
    }

    async fn flush_once(&self) -> io::Result<bool> {
        if let Some(e) = self.state.sync_failed.borrow().clone() {
            return Err(io::Error::other(e));
        }
        let Some(mut plan) = self.log.borrow_mut().plan_flush() else {
            self.last_flush_ms.set(runtime::now_ms());
            return Ok(false);
        };
        if let Err(e) = plan.execute().await {
            if plan.sync_failed() {
                *self.state.sync_failed.borrow_mut() = Some(format!(
                    "{e}; writes refused until the broker restarts (data since the last \
                     successful fdatasync cannot be trusted)"
                ));
            }
            return Err(e);
        }
        self.log.borrow_mut().complete_flush(&plan);
        self.written_out.advance(self.written_out.get() + 1);
        self.last_flush_ms.set(runtime::now_ms());
        let flushed_bytes = plan.target - self.flushed.get();
        self.count(|stats| {
            stats.flushes += 1;
            stats.flushed_bytes += flushed_bytes;
        });
        self.flushed.advance(plan.target);
        if self.config.flush_mode == FlushMode::Sync {
            self.visible.advance(plan.target);
        }
        Ok(true)
    }

    pub(crate) async fn sync_queues_and_checkpoint(&self) -> io::Result<()> {
        // Everything below `recover_from` is durable in the log, and was dispatched (inline)
        // before this point, so syncing the dirty queue and index files makes it durable there.
        let recover_from = self.flushed.get();
        let mut handles = Vec::new();
        for queue in self.queues.borrow_mut().values_mut() {
            handles.extend(queue.take_dirty());
        }
        handles.extend(self.index.borrow().sync_handles());
        if let Err(e) = mapped_file::sync_all(handles).await {
            // Files whose dirtiness was taken are not known durable: sync them all next time.
            for queue in self.queues.borrow_mut().values_mut() {
                queue.mark_all_dirty();
            }
            self.state.queue_sync_failed.set(true);
            return Err(e);
        }
        if self.state.queue_sync_failed.get() {
            return Err(io::Error::other(
                "a ConsumeQueue or index sync failed earlier: the checkpoint stays where it was \
                 until the broker restarts",
            ));
        }
        let now = runtime::now_ms();
        let checkpoint = Checkpoint {
            physic_msg_timestamp: now,
            logics_msg_timestamp: now,
            index_msg_timestamp: now,
            recover_from,
        };
        checkpoint
            .store(&self.config.storage, &self.config.checkpoint_path())
            .await?;
        self.last_checkpoint.set(checkpoint);
        self.last_checkpoint_ms.set(now);
        Ok(())
    }

    /// One retention pass: refuse or accept writes by disk usage, delete expired segments.
    pub async fn enforce_retention(&self, now_ms: i64, hour_of_day: u32) -> io::Result<()> {
        let used = (self.disk_usage.borrow())()?;
        let full = used >= self.config.disk_space_warning_level_ratio;
        if full != self.state.disk_full.get() {
            if full {
                warn!(used_percent = used, "disk nearly full: refusing writes");
            } else {
                info!(used_percent = used, "disk space back: accepting writes");
            }
            self.state.disk_full.set(full);
        }
        let at_delete_hour = self
            .config
            .delete_when
            .split(';')
            .filter_map(|h| h.trim().parse::<u32>().ok())
            .any(|h| h == hour_of_day);
        // As RocketMQ: past diskMaxUsedSpaceRatio expired files go at any hour; past
        // diskSpaceCleanForciblyRatio the oldest go even unexpired (one per pass here).
        let space_to_delete = used >= self.config.disk_max_used_space_ratio;
        let clean_forcibly = used >= self.config.disk_space_clean_forcibly_ratio;
        if !at_delete_hour && !space_to_delete && !clean_forcibly {
            return Ok(());
        }
        let reserved_ms = self.config.file_reserved_time_hours as i64 * 3_600_000;
        let mut forced_left = usize::from(clean_forcibly);
        let min = self.log.borrow_mut().delete_segments(|segment| {
            let expired = std::fs::metadata(segment.path())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|t| now_ms - t.as_millis() as i64 >= reserved_ms);
            if expired {
                return true;
            }
            // Critically full: one more segment goes per pass, expired or not.
            if forced_left > 0 {
                forced_left -= 1;
                return true;
            }
            false
        })?;
        for queue in self.queues.borrow_mut().values_mut() {
            queue.delete_below(min)?;
        }
        self.index.borrow_mut().delete_below(min)?;
        Ok(())
    }
}

fn empty_result(status: GetStatus, next: u64, min: u64, max: u64) -> GetResult {
    GetResult {
        status,
        next_begin_offset: next,
        min_offset: min,
        max_offset: max,
        messages: Vec::new(),
    }
}

/// Max offset counting only entries whose record is readable.
fn visible_max_offset(queue: &ConsumeQueue, visible_end: u64) -> u64 {
    let mut max = queue.max_offset();
    while max > queue.min_offset() {
        match queue.get(max - 1) {
            Some(entry) if entry.end() > visible_end => max -= 1,
            _ => break,
        }
    }
    max
}

fn record_ref(m: &PutMessage, queue_offset: u64, pos: u64, store_timestamp: i64) -> RecordRef<'_> {
    RecordRef {
        queue_id: m.queue_id,
        flag: m.flag,
        queue_offset: queue_offset as i64,
        physical_offset: pos as i64,
        sys_flag: m.sys_flag,
        born_timestamp: m.born_timestamp,
        born_host: message::canonical_host(m.born_host),
        store_timestamp,
        store_host: message::canonical_host(m.store_host),
        reconsume_times: m.reconsume_times,
        prepared_transaction_offset: m.prepared_transaction_offset,
        body: &m.body,
        topic: &m.topic,
        properties: &m.properties,
    }
}

fn queue_entry<'a>(
    config: &StoreConfig,
    queues: &'a mut QueueTable,
    topic: &str,
    queue_id: i32,
) -> io::Result<&'a mut ConsumeQueue> {
    queues.get_or_open(topic, queue_id, || {
        ConsumeQueue::open(
            &config.consume_queue_dir(),
            topic,
            queue_id,
            config.consume_queue_entries_per_file,
        )
    })
}

/// Writes a record's ConsumeQueue entry and index keys. Idempotent (recovery re-dispatches).
#[allow(clippy::too_many_arguments)]
fn dispatch(
    config: &StoreConfig,
    queues: &mut QueueTable,
    index: &mut IndexService,
    pos: u64,
    topic: &str,
    queue_id: i32,
    queue_offset: u64,
    size: u32,
    sys_flag: i32,
    properties: &str,
    store_timestamp: i64,
) -> io::Result<()> {
    let queue = if dispatches_to_queue(sys_flag) {
        Some(queue_entry(config, queues, topic, queue_id)?)
    } else {
        None
    };
    let record = DispatchRecord {
        pos,
        topic,
        queue_offset,
        size,
        sys_flag,
        properties,
        store_timestamp,
    };
    dispatch_to(config, queue, index, &record)
}

/// Whether a record gets a ConsumeQueue entry (not a prepared or rolled-back half message).
fn dispatches_to_queue(sys_flag: i32) -> bool {
    matches!(
        sys_flag::transaction_type(sys_flag),
        sys_flag::TRANSACTION_NOT_TYPE | sys_flag::TRANSACTION_COMMIT
    )
}

/// What dispatching one stored record needs.
struct DispatchRecord<'a> {
    pos: u64,
    topic: &'a str,
    queue_offset: u64,
    size: u32,
    sys_flag: i32,
    properties: &'a str,
    store_timestamp: i64,
}

/// `dispatch` with the record's queue already looked up (`None` when it gets no entry).
fn dispatch_to(
    config: &StoreConfig,
    queue: Option<&mut ConsumeQueue>,
    index: &mut IndexService,
    record: &DispatchRecord<'_>,
) -> io::Result<()> {
    // One pass over the properties for everything dispatch reads (the last duplicate wins).
    let (mut tags, mut uniq, mut keys) = (None, None, None);
    for (name, value) in message::property_pairs(record.properties) {
        let slot = match name {
            property::TAGS => &mut tags,
            property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX => &mut uniq,
            property::KEYS => &mut keys,
            _ => continue,
        };
        if !value.is_empty() {
            *slot = Some(value);
        }
    }
    if let Some(queue) = queue {
        queue
            .put(
                record.queue_offset,
                CqEntry {
                    phys_offset: record.pos,
                    size: record.size,
                    tags_code: tags.map_or(0, message::tag_code),
                },
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    let rolled_back = sys_flag::transaction_type(record.sys_flag) == sys_flag::TRANSACTION_ROLLBACK;
    if config.message_index_enable && !rolled_back && (uniq.is_some() || keys.is_some()) {
        let all = uniq
            .into_iter()
            .chain(keys.into_iter().flat_map(|k| k.split(' ')));
        index.put_keys(record.topic, all, record.pos, record.store_timestamp)?;
    }
    Ok(())
}

/// Opens every ConsumeQueue found on disk that this shard owns (all of its own tree, or its
/// share of the common one).
fn open_queues(config: &StoreConfig) -> io::Result<QueueTable> {
    let mut queues = QueueTable::default();
    let root = config.consume_queue_dir();
    let Ok(topics) = std::fs::read_dir(&root) else {
        return Ok(queues);
    };
    for topic in topics {
        let topic = topic?;
        let Ok(topic_name) = topic.file_name().into_string() else {
            continue;
        };
        for queue in std::fs::read_dir(topic.path())? {
            let queue = queue?;
            let Some(queue_id) = queue
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let owner = crate::shard::owner_of(&topic_name, queue_id, config.shard_count.into());
            if !config.consume_queue_per_shard && owner != usize::from(config.shard_id) {
                continue;
            }
            let cq = ConsumeQueue::open(
                &root,
                &topic_name,
                queue_id,
                config.consume_queue_entries_per_file,
            )?;
            queues.insert(cq);
        }
    }
    Ok(queues)
}

/// Takes the store's `lock` file so two processes never share a store.
fn lock_store(config: &StoreConfig) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = config.root_dir.join(format!("lock-{}", config.shard_id));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{} is locked: another process uses this store",
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// Used share of the file system holding `path`, in percent.
fn disk_used_percent(path: &std::path::Path) -> io::Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the struct we own; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(used_percent(stat.f_blocks, stat.f_bfree, stat.f_bavail))
}

/// Used share of a file system from statvfs block counts, as RocketMQ (and `df`) compute it:
/// used / (used + available to us), rounded up. Blocks reserved for root count in neither, so a
/// file system with a large reserve does not look fuller than it is.
fn used_percent(blocks: u64, free: u64, available: u64) -> u32 {
    let used = u128::from(blocks.saturating_sub(free));
    let entire = used + u128::from(available);
    if entire == 0 {
        return 0;
    }
    (used * 100).div_ceil(entire) as u32
}

async fn flush_loop(store: std::rc::Weak<MessageStore>) {
    let _running = TaskGuard(store.clone());
    loop {
        if store.upgrade().is_none_or(|s| s.state.stopped.get()) {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        let flushed = s.flushed.get();
        // Wait for work: any append under SYNC_FLUSH (group commit: whatever arrived while the
        // previous flush ran goes in this one); enough dirty bytes or the interval under ASYNC.
        match s.config.flush_mode {
            FlushMode::Sync => {
                let appended = &s.appended;
                futures_lite::future::or(
                    async {
                        appended.wait_for(flushed + 1).await;
                    },
                    runtime::sleep(Duration::from_millis(100)),
                )
                .await;
            }
            FlushMode::Async => {
                // Stream sealed chunks to the disk as they fill, a few writes always in flight
                // (big writes, no copy, no sync); fdatasync on the interval or when asked.
                s.start_chunk_writes();
                let appended = &s.appended;
                let requests = &s.flush_requests;
                let written_out = &s.written_out;
                // Requests already served are not waited for again; one that arrived while the
                // previous flush ran is still pending and makes this wait return at once.
                let served = s.flush_requests_served.get();
                let seen = appended.get();
                let seen_written = written_out.get();
                let chunk_bytes = s.config.chunk_bytes as u64;
                let interval = Duration::from_millis(s.config.flush_interval_ms.min(200));
                futures_lite::future::or(
                    futures_lite::future::or(
                        async {
                            appended.wait_for(seen + chunk_bytes).await;
                        },
                        async {
                            written_out.wait_for(seen_written + 1).await;
                        },
                    ),
                    futures_lite::future::or(
                        async {
                            requests.wait_for(served + 1).await;
                        },
                        runtime::sleep(interval),
                    ),
                )
                .await;
                let sync_due = requests.get() > served
                    || runtime::now_ms() - s.last_flush_ms.get()
                        >= s.config.flush_interval_ms as i64;
                if !sync_due {
                    continue;
                }
                // fdatasync must cover the pipelined writes: let them finish first.
                while s.writes_in_flight.get() > 0 {
                    let seen_written = written_out.get();
                    written_out.wait_for(seen_written + 1).await;
                }
            }
        }
        if s.state.stopped.get() {
            return; // a crash simulation must not flush on its way out
        }
        s.flush_requests_served.set(s.flush_requests.get());
        match s.flush_once().await {
            Ok(_) => {
                if s.state.flush_error.borrow_mut().take().is_some() {
                    info!("commit log flush recovered");
                }
            }
            Err(e) => {
                error!(error = %e, "commit log flush failed; retrying");
                *s.state.flush_error.borrow_mut() = Some(e.to_string());
                s.flushed.wake_all();
                drop(s);
                runtime::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Ticks `clock_ms` at a twentieth of the sync flush timeout (at most every 100 ms).
async fn clock_loop(store: std::rc::Weak<MessageStore>) {
    let _running = TaskGuard(store.clone());
    let Some(tick_ms) = store
        .upgrade()
        .map(|s| (s.config.sync_flush_timeout_ms / 20).clamp(1, 100))
    else {
        return;
    };
    loop {
        runtime::sleep(Duration::from_millis(tick_ms)).await;
        let Some(s) = store.upgrade() else { return };
        if s.state.stopped.get() {
            return;
        }
        s.clock_ms.advance(runtime::now_ms().max(0) as u64);
    }
}

async fn prepare_loop(store: std::rc::Weak<MessageStore>) {
    let _running = TaskGuard(store.clone());
    let mut served_rolls = 0u64;
    loop {
        if store.upgrade().is_none_or(|s| s.state.stopped.get()) {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        // Prepare the next segment once the active one is half used (earlier only competes
        // with the writer for the disk), or at once when a writer is waiting for it.
        // Read before deciding, so a request that arrives while preparing is not slept through.
        let rolled = s.segments_rolled.get();
        let wanted = rolled > served_rolls;
        let half_used = {
            let log = s.log.borrow();
            let pos = log.write_pos();
            pos - log.segment_start_of(pos) >= s.config.segment_bytes / 2
        };
        if !s.log.borrow().has_next_segment() && (wanted || half_used) {
            served_rolls = s.segments_rolled.get();
            let (settings, start) = {
                let log = s.log.borrow();
                (log.settings().clone(), log.next_segment_start())
            };
            match commit_log::prepare_segment(&settings, start).await {
                Ok(segment) => {
                    let mut log = s.log.borrow_mut();
                    if !log.has_next_segment() && log.next_segment_start() == start {
                        log.set_next_segment(segment);
                    }
                    drop(log);
                    if s.state.segment_error.borrow_mut().take().is_some() {
                        info!(start, "commit log segment prepared again: accepting writes");
                    }
                    s.segments_ready.advance(s.segments_ready.get() + 1);
                }
                Err(e) => {
                    // Typically ENOSPC: writers that need the segment are refused until it can
                    // be prepared.
                    error!(error = %e, start, "preparing the next commit log segment failed");
                    *s.state.segment_error.borrow_mut() = Some(e.to_string());
                    s.segments_ready.advance(s.segments_ready.get() + 1);
                    drop(s);
                    runtime::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let rolled_mark = &s.segments_rolled;
        futures_lite::future::or(
            async {
                rolled_mark.wait_for(rolled + 1).await;
            },
            runtime::sleep(Duration::from_millis(200)),
        )
        .await;
    }
}

async fn checkpoint_loop(store: std::rc::Weak<MessageStore>) {
    let _running = TaskGuard(store.clone());
    loop {
        if store.upgrade().is_none_or(|s| s.state.stopped.get()) {
            return;
        }
        let Some(interval) = store
            .upgrade()
            .map(|s| s.config.flush_consume_queue_interval_ms)
        else {
            return;
        };
        runtime::sleep(Duration::from_millis(interval.min(200))).await;
        let Some(s) = store.upgrade() else { return };
        if s.state.stopped.get() {
            return;
        }
        let due = runtime::now_ms() - s.last_checkpoint_ms.get() >= interval as i64;
        drop(s);
        if !due {
            continue;
        }
        let Some(s) = store.upgrade() else { return };
        if let Err(e) = s.sync_queues_and_checkpoint().await {
            warn!(error = %e, "consume queue sync / checkpoint failed");
        }
    }
}

async fn retention_loop(store: std::rc::Weak<MessageStore>) {
    let _running = TaskGuard(store.clone());
    let mut ticks = 0u32;
    loop {
        if store.upgrade().is_none_or(|s| s.state.stopped.get()) {
            return;
        }
        // A pass every 10 s, checking the stop flag every 200 ms.
        runtime::sleep(Duration::from_millis(200)).await;
        ticks += 1;
        if !ticks.is_multiple_of(50) {
            continue;
        }
        let Some(s) = store.upgrade() else { return };
        let now = runtime::now_ms();
        let hour = local_hour(now);
        if let Err(e) = s.enforce_retention(now, hour).await {
            warn!(error = %e, "retention pass failed");
        }
    }
}

/// A writer's place in the back-pressure queue; dropping it (success, refusal or a dropped
/// request) admits the next writer.
struct Ticket<'a> {
    store: &'a MessageStore,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.store.admitted.advance(self.number + 1);
    }
}

/// Decrements the running-task count when a background task exits.
struct TaskGuard(std::rc::Weak<MessageStore>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.upgrade() {
            s.state.tasks_running.set(s.state.tasks_running.get() - 1);
        }
    }
}

fn local_hour(ms: i64) -> u32 {
    super::index_file::local_time_name(ms)[8..10]
        .parse()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::commit_log::tests::on_reactor;
    use thruster_client::protocol::message::encode_properties;

    pub(crate) fn message(
        topic: &str,
        queue_id: i32,
        body: &[u8],
        tags: &str,
        keys: &str,
    ) -> PutMessage {
        let uniq = format!("U{}", String::from_utf8_lossy(body));
        let properties = [("TAGS", tags), ("KEYS", keys), ("UNIQ_KEY", uniq.as_str())];
        PutMessage {
            properties: encode_properties(properties.into_iter().filter(|(_, v)| !v.is_empty())),
            born_timestamp: 1_700_000_000_000,
            ..PutMessage::new(
                topic,
                queue_id,
                Bytes::copy_from_slice(body),
                "127.0.0.1:10911".parse().unwrap(),
            )
        }
    }

    fn config(dir: &std::path::Path, mode: FlushMode) -> StoreConfig {
        StoreConfig {
            flush_mode: mode,
            flush_interval_ms: 20,
            flush_consume_queue_interval_ms: 50,
            segment_bytes: 64 << 10,
            chunk_bytes: 8 << 10,
            memory_window_bytes: 32 << 10,
            max_message_bytes: 16 << 10,
            ..StoreConfig::small_for_tests(dir)
        }
    }

    async fn bodies(result: &GetResult) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for m in &result.messages {
            let bytes = m.bytes().await.unwrap();
            let record = message::decode_record(&bytes, true).unwrap();
            assert_eq!(record.queue_offset as u64, m.queue_offset);
            assert_eq!(record.physical_offset as u64, m.phys_offset);
            out.push(record.body.to_vec());
        }
        out
    }

    #[test]
    fn put_get_statuses_filters_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let store = MessageStore::open(config(&root, FlushMode::Sync))
                .await
                .unwrap();
            for i in 0..10 {
                let tags = if i % 2 == 0 { "even" } else { "odd" };
                let r = store
                    .put(message(
                        "T",
                        1,
                        format!("m{i}").as_bytes(),
                        tags,
                        &format!("k{i} shared"),
                    ))
                    .await;
                assert_eq!(r.status, PutStatus::Ok);
                assert_eq!(r.queue_offset, i);
            }
            let all = store.get_messages("T", 1, 0, 32, &|_| true);
            assert_eq!(all.status, GetStatus::Found);
            assert_eq!(all.next_begin_offset, 10);
            assert_eq!(
                bodies(&all).await,
                (0..10)
                    .map(|i| format!("m{i}").into_bytes())
                    .collect::<Vec<_>>()
            );
            let even = i64::from(message::java_string_hash("even"));
            let filtered = store.get_messages("T", 1, 0, 32, &|code| code == even);
            assert_eq!(filtered.messages.len(), 5);
            let limited = store.get_messages("T", 1, 3, 2, &|_| true);
            assert_eq!((limited.messages.len(), limited.next_begin_offset), (2, 5));
            assert_eq!(
                store.get_messages("T", 1, 10, 32, &|_| true).status,
                GetStatus::OffsetOverflowOne
            );
            let badly = store.get_messages("T", 1, 11, 32, &|_| true);
            assert_eq!(
                (badly.status, badly.next_begin_offset),
                (GetStatus::OffsetOverflowBadly, 10)
            );
            assert_eq!(
                store.get_messages("T", 2, 0, 32, &|_| true).status,
                GetStatus::NoMatchedLogicQueue
            );
            let none = store.get_messages("T", 1, 0, 32, &|_| false);
            assert_eq!(
                (none.status, none.next_begin_offset),
                (GetStatus::NoMatchedMessage, 10)
            );
            assert_eq!(store.max_offset("T", 1), 10);
            assert_eq!(store.min_offset("T", 1), Some(0));

            let (found, _, _) = store
                .query_by_key("T", "k3", 32, 0, i64::MAX)
                .await
                .unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(
                &message::decode_record(&found[0], true).unwrap().body[..],
                b"m3"
            );
            let (shared, _, _) = store
                .query_by_key("T", "shared", 32, 0, i64::MAX)
                .await
                .unwrap();
            assert_eq!(shared.len(), 10);
            let (by_uniq, _, _) = store
                .query_by_key("T", "Um7", 32, 0, i64::MAX)
                .await
                .unwrap();
            assert_eq!(by_uniq.len(), 1);
            let phys = all.messages[4].phys_offset;
            let record = store.read_record(phys).await.unwrap().unwrap();
            assert_eq!(
                &message::decode_record(&record, true).unwrap().body[..],
                b"m4"
            );
            assert!(store
                .read_record(store.commit_log_max_offset())
                .await
                .unwrap()
                .is_none());

            let t0 = all.messages.first().map(|_| ()).map(|_| 0).unwrap_or(0);
            assert_eq!(
                store
                    .search_offset_by_timestamp("T", 1, t0, false)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                store
                    .search_offset_by_timestamp("T", 1, i64::MAX, false)
                    .await
                    .unwrap(),
                10
            );
            assert!(store.earliest_store_time("T", 1).await.unwrap().is_some());

            let big = message("T", 1, &vec![b'x'; 20 << 10], "", "");
            assert!(matches!(
                store.put(big).await.status,
                PutStatus::MessageIllegal(_)
            ));
            let long_topic = message(&"t".repeat(128), 0, b"x", "", "");
            assert!(matches!(
                store.put(long_topic).await.status,
                PutStatus::MessageIllegal(_)
            ));
            // Recovery reads a NUL in properties as a torn record: never stored.
            let nul = message("T", 1, b"x", "Tag\0A", "");
            assert!(matches!(
                store.put(nul).await.status,
                PutStatus::MessageIllegal(remark) if remark.contains("NUL")
            ));
            store.shutdown().await.unwrap();
        });
    }

    #[test]
    fn batches_are_consecutive_records_and_survive_a_clean_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let store = MessageStore::open(config(&root, FlushMode::Async))
                .await
                .unwrap();
            let mut expected = Vec::new();
            for round in 0..40 {
                let batch: Vec<PutMessage> = (0..5)
                    .map(|i| {
                        message(
                            "B",
                            0,
                            format!("b{round}-{i}").repeat(40).as_bytes(),
                            "",
                            "",
                        )
                    })
                    .collect();
                expected.extend(batch.iter().map(|m| m.body.to_vec()));
                let r = store.put_batch(batch).await;
                assert_eq!(r.status, PutStatus::Ok);
                assert_eq!(r.queue_offset, round * 5);
                assert_eq!(r.phys_offsets.len(), 5);
            }
            assert!(
                store.log.borrow().segments().count() > 1,
                "batches crossed segments"
            );
            store.shutdown().await.unwrap();
            drop(store);
            let store = MessageStore::open(config(&root, FlushMode::Async))
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut offset = 0;
            while offset < 200 {
                let r = store.get_messages("B", 0, offset, 32, &|_| true);
                assert_eq!(r.status, GetStatus::Found);
                got.extend(bodies(&r).await);
                offset = r.next_begin_offset;
            }
            assert_eq!(got, expected);
            let r = store.put(message("B", 0, b"after", "", "")).await;
            assert_eq!(r.queue_offset, 200);
            store.shutdown().await.unwrap();
        });
    }

    #[test]
    fn disk_use_counts_like_rocketmq_not_the_root_reserve() {
        // 100 blocks, 30 free of which 10 reserved for root: 70 used of 90 usable -> 78 %.
        assert_eq!(used_percent(100, 30, 20), 78);
        assert_eq!(used_percent(100, 100, 100), 0);
        assert_eq!(used_percent(100, 0, 0), 100);
        assert_eq!(used_percent(0, 0, 0), 0);
        // This machine's root file system at one point: 252 G, 68 G used, 24 G available. The
        // old formula, (blocks - available) / blocks, said 90 % and refused writes.
        assert_eq!(used_percent(252, 184, 24), 74);
    }

    #[test]
    fn a_full_disk_refuses_writes_until_space_returns_and_expired_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let mut cfg = config(&root, FlushMode::Sync);
            cfg.file_reserved_time_hours = 1;
            let store = MessageStore::open(cfg).await.unwrap();
            for i in 0..600 {
                assert_eq!(
                    store
                        .put(message(
                            "R",
                            0,
                            format!("r{i}").repeat(40).as_bytes(),
                            "",
                            ""
                        ))
                        .await
                        .status,
                    PutStatus::Ok
                );
            }
            let segments_at_start = store.log.borrow().segments().count();
            assert!(segments_at_start >= 4, "{segments_at_start}");
            let used = Rc::new(Cell::new(95u32));
            let probe = used.clone();
            store.set_disk_usage_probe(Box::new(move || Ok(probe.get())));
            store
                .enforce_retention(runtime::now_ms(), 12)
                .await
                .unwrap();
            assert_eq!(store.log.borrow().segments().count(), segments_at_start - 1);
            match store.put(message("R", 0, b"refused", "", "")).await.status {
                PutStatus::ServiceNotAvailable(reason) => {
                    assert!(reason.contains("disk full"), "{reason}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            // Below the warning level writes are accepted again; above diskMaxUsedSpaceRatio
            // only expired segments go, and none is expired yet.
            used.set(80);
            store
                .enforce_retention(runtime::now_ms(), 12)
                .await
                .unwrap();
            assert_eq!(store.log.borrow().segments().count(), segments_at_start - 1);
            assert_eq!(
                store.put(message("R", 0, b"accepted", "", "")).await.status,
                PutStatus::Ok
            );
            // Two hours later, at the delete hour, every expired segment but the active one
            // goes; readers of old offsets are moved forward.
            used.set(10);
            store
                .enforce_retention(runtime::now_ms() + 2 * 3_600_000, 4)
                .await
                .unwrap();
            assert_eq!(store.log.borrow().segments().count(), 1);
            let min = store.min_offset("R", 0).unwrap();
            assert!(min > 0);
            let r = store.get_messages("R", 0, 0, 32, &|_| true);
            assert_eq!(
                (r.status, r.next_begin_offset),
                (GetStatus::OffsetTooSmall, min)
            );
            let r = store.get_messages("R", 0, min, 32, &|_| true);
            assert_eq!(r.status, GetStatus::Found);
            store.shutdown().await.unwrap();
        });
    }

    #[test]
    fn sync_flush_hides_records_until_they_are_durable_and_async_shows_them_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let store = MessageStore::open(config(&root.join("a"), FlushMode::Async))
                .await
                .unwrap();
            store.put(message("V", 0, b"x", "", "")).await;
            assert_eq!(
                store.get_messages("V", 0, 0, 1, &|_| true).status,
                GetStatus::Found
            );
            store.shutdown().await.unwrap();
            let store = MessageStore::open(config(&root.join("s"), FlushMode::Sync))
                .await
                .unwrap();
            let r = store.put(message("V", 0, b"y", "", "")).await;
            assert_eq!(r.status, PutStatus::Ok);
            assert!(
                store.flushed.get() >= r.phys_offsets[0] + r.wrote_bytes as u64,
                "acked only once durable"
            );
            assert_eq!(
                store.get_messages("V", 0, 0, 1, &|_| true).status,
                GetStatus::Found
            );
            store.shutdown().await.unwrap();
        });
    }
}
