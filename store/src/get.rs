//! The read path: messages of a queue from an offset (as slices of the CommitLog: shared
//! chunks, copies, file ranges), offsets, lookups by key, offset or time, and the wait of a
//! parked pull for its queue to grow.

use std::io;

use bytes::Bytes;
use thruster_protocol::message::{self};

use super::commit_log::{materialize, CommitLog};
use super::config::TransferLimits;
use super::consume_queue::{ConsumeQueue, CqEntry};
use super::message_store::{FoundMessage, GetResult, GetStatus, MessageStore};

/// ConsumeQueue entries scanned per read at least (16000 bytes / 20).
const SCAN_ENTRIES_MIN: u64 = 800;

impl MessageStore {
    /// Completes when `topic`/`queue_id` holds a message at `offset`, or at
    /// [`MessageStore::wake_waiting`]. Read the queue first, and do not yield in between.
    pub async fn wait_for_message(&self, topic: &str, queue_id: i32, offset: u64) {
        self.heads.wait_beyond(topic, queue_id, offset).await
    }

    /// Completes every [`MessageStore::wait_for_message`] in progress (shutdown).
    pub fn wake_waiting(&self) {
        self.heads.wake_all();
    }

    /// Queues somebody waits on (for tests: waits leave nothing behind).
    pub fn queues_waited_on(&self) -> usize {
        self.heads.len()
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
        if let Some(result) = out_of_range(offset, min, max) {
            return result;
        }
        let scan = QueueScan {
            queue,
            log: &log,
            log_min: log.min_offset(),
            visible_end,
            hot_window_bytes: self.hot_window_bytes,
            limits: self.config.transfer_limits,
        };
        scan.collect(offset, min, max, max_count, filter)
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

    /// Up to `count` ConsumeQueue entries of a queue from `index` (QUERY_CONSUME_QUEUE), with
    /// the queue's min and max offsets; `None` for an unknown queue.
    pub fn queue_entries(
        &self,
        topic: &str,
        queue_id: i32,
        index: u64,
        count: usize,
    ) -> Option<(u64, u64, Vec<crate::consume_queue::CqEntry>)> {
        let queues = self.queues.borrow();
        let queue = queues.get(topic, queue_id)?;
        let max = visible_max_offset(queue, self.visible.get());
        let entries = (index..max)
            .take(count)
            .map_while(|offset| queue.get(offset))
            .collect();
        Some((queue.min_offset(), max, entries))
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

    /// CommitLog bytes appended but not yet flushed (RocketMQ's `remainHowManyDataToFlush`).
    pub fn flush_behind_bytes(&self) -> u64 {
        self.appended.get().saturating_sub(self.flushed.get())
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
        let min = self.min_offset(topic, queue_id).unwrap_or(0);
        self.store_time_at_offset(topic, queue_id, min).await
    }

    /// Store time of the readable message at a queue offset (RocketMQ
    /// `getMessageStoreTimeStamp`), `None` when there is none there.
    pub async fn store_time_at_offset(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
    ) -> io::Result<Option<i64>> {
        let entry = self
            .queues
            .borrow()
            .get(topic, queue_id)
            .and_then(|q| q.get(offset));
        match entry {
            Some(entry) if entry.end() <= self.visible.get() => {
                self.store_timestamp_at(entry).await
            }
            _ => Ok(None),
        }
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

/// The empty answer to a read from `offset` outside `min..max`, `None` when inside.
fn out_of_range(offset: u64, min: u64, max: u64) -> Option<GetResult> {
    let (status, next) = if max == 0 {
        (GetStatus::NoMessageInQueue, 0)
    } else if offset < min {
        (GetStatus::OffsetTooSmall, min)
    } else if offset == max {
        (GetStatus::OffsetOverflowOne, offset)
    } else if offset > max {
        (GetStatus::OffsetOverflowBadly, max)
    } else {
        return None;
    };
    Some(empty_result(status, next, min, max))
}

/// One read of a queue: the queue, the log its entries point into, and where readable ends.
struct QueueScan<'a> {
    queue: &'a ConsumeQueue,
    log: &'a CommitLog,
    log_min: u64,
    visible_end: u64,
    hot_window_bytes: u64,
    limits: TransferLimits,
}

/// What a queue entry gave.
enum EntryRead {
    Found(FoundMessage),
    /// `filter` rejected its tag code.
    Filtered,
    /// Its record is gone from the log (below the log's start, or unreadable).
    Removed,
}

impl QueueScan<'_> {
    /// Up to `max_count` messages from `offset` (below `max`) that `filter` accepts, within
    /// RocketMQ's transfer limits.
    fn collect(
        &self,
        offset: u64,
        min: u64,
        max: u64,
        max_count: usize,
        filter: &dyn Fn(i64) -> bool,
    ) -> GetResult {
        // RocketMQ scans at most max(16000, maxMsgNums × 20) bytes of ConsumeQueue per pull.
        let scan_limit = SCAN_ENTRIES_MIN.max(max_count as u64);
        let mut messages: Vec<FoundMessage> = Vec::new();
        let mut bytes = 0usize;
        let mut status = GetStatus::NoMatchedMessage;
        let mut next = offset;
        while next < max && next - offset < scan_limit {
            let Some(entry) = self.queue.get(next) else {
                if messages.is_empty() {
                    status = GetStatus::OffsetFoundNull;
                }
                break;
            };
            let found = match self.read(next, &entry, filter) {
                EntryRead::Found(found) => found,
                EntryRead::Filtered => {
                    next += 1;
                    continue;
                }
                EntryRead::Removed => {
                    status = GetStatus::MessageWasRemoving;
                    next += 1;
                    continue;
                }
            };
            // The first message always goes, whatever its size.
            if !messages.is_empty() && self.batch_full(messages.len(), bytes, &entry, max_count) {
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

    /// The message queue entry `entry` (at `queue_offset`) points to, unless filtered or gone.
    fn read(&self, queue_offset: u64, entry: &CqEntry, filter: &dyn Fn(i64) -> bool) -> EntryRead {
        if entry.phys_offset < self.log_min {
            return EntryRead::Removed;
        }
        if !filter(entry.tags_code) {
            return EntryRead::Filtered;
        }
        let Ok(slices) = self.log.read_slices(entry.phys_offset, entry.size as usize) else {
            return EntryRead::Removed;
        };
        EntryRead::Found(FoundMessage {
            queue_offset,
            phys_offset: entry.phys_offset,
            size: entry.size,
            tags_code: entry.tags_code,
            slices,
        })
    }

    /// Whether a batch of `count` messages and `bytes` bytes is full before `entry`'s message.
    fn batch_full(&self, count: usize, bytes: usize, entry: &CqEntry, max_count: usize) -> bool {
        // RocketMQ's rule: hot unless further behind the end than a share of physical
        // memory (then likely out of the page cache).
        let hot = self.visible_end.saturating_sub(entry.phys_offset) <= self.hot_window_bytes;
        let limits = &self.limits;
        let (max_bytes, max_msgs) = if hot {
            (limits.memory_bytes_max, limits.memory_count_max)
        } else {
            (limits.disk_bytes_max, limits.disk_count_max)
        };
        count >= max_count.min(max_msgs) || bytes + entry.size as usize > max_bytes
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
