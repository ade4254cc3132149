//! The put path: admission (refusals, the back-pressure ticket queue), encoding the records
//! straight into the CommitLog's active chunk, inline dispatch, and the wait for the group
//! commit that covers them (its write under ASYNC_FLUSH, its flush under SYNC_FLUSH).

use thruster_protocol::message::{self, body_crc, RecordRef};
use tracing::error;

use super::commit_log::AppendError;
use super::config::FlushMode;
use super::dispatch::{dispatch_to, dispatches_to_queue, queue_entry, DispatchRecord};
use super::message_store::{MessageStore, PutMessage, PutResult, PutStatus};
use crate::runtime;
use crate::runtime::watermark::Watermark;

impl MessageStore {
    pub(super) fn refusal(&self) -> Option<PutStatus> {
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
        let batch = match self.measure(&messages) {
            Ok(batch) => batch,
            Err(status) => return PutResult::refused(status),
        };
        // Under back-pressure (memory window full) writers go through in arrival order: a
        // ticket queue, so no writer can be overtaken again and again by newcomers.
        let mut ticket: Option<Ticket<'_>> = self.backlog_ticket();
        if let Some(t) = &ticket {
            self.admitted.wait_for(t.number).await;
        }
        let appended = loop {
            match self.append_and_dispatch(&messages, &batch) {
                Ok(appended) => break appended,
                Err(Retry::Refused(status)) => return PutResult::refused(status),
                Err(Retry::After(need)) => {
                    if let Err(status) = self.wait_for_room(need, &mut ticket).await {
                        return PutResult::refused(status);
                    }
                }
            }
            if let Some(status) = self.refusal() {
                return PutResult::refused(status);
            }
        };
        drop(ticket);
        let end = appended.start + batch.total_bytes as u64;
        self.count(|stats| {
            stats.puts += 1;
            stats.put_records += messages.len() as u64;
            stats.put_bytes += batch.total_bytes as u64;
        });
        self.appended.advance(end);
        if self.config.flush_mode == FlushMode::Async {
            self.visible.advance(end);
        }
        let status = self.acknowledgement(end, appended.store_timestamp).await;
        if batch.dispatched && matches!(status, PutStatus::Ok | PutStatus::FlushDiskTimeout) {
            let (topic, queue_id) = (messages[0].topic.as_str(), messages[0].queue_id);
            let queue_end = appended.queue_offset + messages.len() as u64;
            self.heads.advance(topic, queue_id, queue_end);
        }
        PutResult {
            status,
            phys_offsets: appended.phys_offsets,
            queue_offset: appended.queue_offset,
            store_timestamp: appended.store_timestamp,
            wrote_bytes: batch.total_bytes,
        }
    }

    /// Checks every message against the limits and computes each record's body CRC and
    /// length once.
    fn measure(&self, messages: &[PutMessage]) -> Result<Batch, PutStatus> {
        let (topic, queue_id) = (messages[0].topic.as_str(), messages[0].queue_id);
        let mut total_bytes = 0usize;
        let mut sizes = Vec::with_capacity(messages.len());
        for m in messages {
            assert!(
                m.topic == topic && m.queue_id == queue_id,
                "a batch belongs to one queue"
            );
            let record = record_ref(m, 0, 0, 0);
            if let Err(e) = record.check_limits() {
                return Err(PutStatus::MessageIllegal(e.to_string()));
            }
            let len = record.encoded_len();
            if len > self.config.max_message_bytes {
                return Err(PutStatus::MessageIllegal(format!(
                    "message of {len} bytes exceeds maxMessageSize {}",
                    self.config.max_message_bytes
                )));
            }
            total_bytes += len;
            sizes.push((body_crc(&m.body), len));
        }
        if total_bytes + 8 > self.config.segment_bytes as usize {
            return Err(PutStatus::MessageIllegal(format!(
                "batch of {total_bytes} bytes exceeds a commit log segment"
            )));
        }
        Ok(Batch {
            sizes,
            total_bytes,
            dispatched: dispatches_to_queue(messages[0].sys_flag),
        })
    }

    /// Takes the queue's next offsets, encodes the records straight into the CommitLog's
    /// chunk (one copy) and dispatches them inline, all without yielding: readers on this
    /// reactor see the log and the ConsumeQueue agree.
    fn append_and_dispatch(
        &self,
        messages: &[PutMessage],
        batch: &Batch,
    ) -> Result<Appended, Retry> {
        let (topic, queue_id) = (messages[0].topic.as_str(), messages[0].queue_id);
        let mut queues = self.queues.borrow_mut();
        let mut queue = match batch.dispatched {
            true => Some(
                queue_entry(&self.config, &mut queues, topic, queue_id)
                    .map_err(|e| Retry::Refused(PutStatus::ServiceNotAvailable(e.to_string())))?,
            ),
            false => None,
        };
        if let Some(q) = queue.as_deref_mut() {
            // Its entry's disk space first: a put the ConsumeQueue cannot take (ENOSPC) is
            // refused before its record is in the log.
            q.prepare_next().map_err(|e| {
                Retry::Refused(PutStatus::ServiceNotAvailable(format!(
                    "disk full or failing: {e}"
                )))
            })?;
        }
        let queue_offset = queue.as_ref().map_or(0, |q| q.max_offset());
        let store_timestamp = runtime::now_ms();
        let (start, ()) = self
            .log
            .borrow_mut()
            .append(batch.total_bytes, |start, writer| {
                let mut pos = start;
                for (i, m) in messages.iter().enumerate() {
                    let qo = if batch.dispatched {
                        queue_offset + i as u64
                    } else {
                        0
                    };
                    let record = record_ref(m, qo, pos, store_timestamp);
                    let (crc, len) = batch.sizes[i];
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
            })
            .map_err(Retry::After)?;
        let mut index = self.index.borrow_mut();
        let mut pos = start;
        let mut phys_offsets = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let len = batch.sizes[i].1;
            let record = DispatchRecord {
                pos,
                topic,
                queue_offset: queue_offset + i as u64,
                size: len as u32,
                sys_flag: m.sys_flag,
                properties: &m.properties,
                store_timestamp,
            };
            if let Err(e) = dispatch_to(&self.config, queue.as_deref_mut(), &mut index, &record) {
                // The record is in the log; recovery re-dispatches it. Report, do not lose it.
                error!(topic = %topic, queue_id, pos, error = %e, "dispatch failed");
            }
            phys_offsets.push(pos);
            pos += len as u64;
        }
        Ok(Appended {
            start,
            queue_offset,
            store_timestamp,
            phys_offsets,
        })
    }

    /// Waits until an append that did not fit can be tried again: the next segment prepared,
    /// or (our turn in the ticket queue, then) write-out progress freeing the memory window.
    pub(super) async fn wait_for_room<'a>(
        &'a self,
        need: AppendError,
        ticket: &mut Option<Ticket<'a>>,
    ) -> Result<(), PutStatus> {
        match need {
            AppendError::NeedSegment => {
                self.count(|stats| stats.segment_waits += 1);
                let seen = self.segments_ready.get();
                self.segments_rolled.advance(self.segments_rolled.get() + 1);
                self.segments_ready.wait_for(seen + 1).await;
                // Only a put that needs the next segment is refused when it cannot be
                // prepared: the rest of the current one still takes writes.
                if !self.log.borrow().has_next_segment() {
                    if let Some(e) = self.state.segment_error.borrow().as_ref() {
                        return Err(PutStatus::ServiceNotAvailable(format!(
                            "disk full or failing: preparing the next commit log segment \
                             failed: {e}"
                        )));
                    }
                }
            }
            AppendError::NeedFlush => {
                self.count(|stats| stats.window_waits += 1);
                if ticket.is_none() {
                    let t = self.take_ticket();
                    self.admitted.wait_for(t.number).await;
                    *ticket = Some(t);
                    return Ok(()); // our turn: try again before waiting for progress
                }
                match self.config.flush_mode {
                    // The flusher streams sealed chunks out continuously: wait for its progress
                    // (asking for a full sync here would stall every writer behind one huge
                    // flush).
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
        Ok(())
    }

    /// What the put answers: under SYNC_FLUSH after the group commit that covers `end`
    /// (durable: survives a power loss), under ASYNC_FLUSH after the write that covers it
    /// (in the kernel's hands: survives a crash of the process); FLUSH_DISK_TIMEOUT at the
    /// deadline (`syncFlushTimeout`, read from the shard's coarse clock, not a timer per put).
    /// Many puts share one write either way (group commit).
    async fn acknowledgement(&self, end: u64, store_timestamp: i64) -> PutStatus {
        let (mark, what) = match self.config.flush_mode {
            FlushMode::Sync => (&self.flushed, "flush"),
            FlushMode::Async => (&self.written, "write"),
        };
        let deadline_ms = store_timestamp.max(0) as u64 + self.config.sync_flush_timeout_ms;
        let reached =
            futures_lite::future::or(async { Some(self.wait_reached(mark, end).await) }, async {
                self.clock_ms.wait_for(deadline_ms).await;
                None
            })
            .await;
        match reached {
            Some(Ok(())) => PutStatus::Ok,
            Some(Err(e)) => {
                PutStatus::ServiceNotAvailable(format!("commit log {what} failed: {e}"))
            }
            None => PutStatus::FlushDiskTimeout,
        }
    }

    /// Waits until `mark` (`flushed` or `written`) reaches `end`; fails as soon as a write or
    /// flush fails (its waiters are woken, `Watermark::wake_all`) or the store's tasks have
    /// stopped (nothing would advance it any more).
    pub(super) async fn wait_reached(&self, mark: &Watermark, end: u64) -> Result<(), String> {
        loop {
            if mark.get() >= end {
                return Ok(());
            }
            if let Some(e) = self.state.flush_error.borrow().clone() {
                return Err(e);
            }
            if self.state.stopped.get() {
                return Err("the store stopped before it was written".into());
            }
            mark.wait_for(end).await;
        }
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

/// A writer's place in the back-pressure queue; dropping it (success, refusal or a dropped
/// request) admits the next writer.
pub(super) struct Ticket<'a> {
    store: &'a MessageStore,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.store.admitted.advance(self.number + 1);
    }
}

/// A batch measured once: each record's (body CRC, length), their sum, and whether the records
/// get ConsumeQueue entries.
struct Batch {
    sizes: Vec<(i32, usize)>,
    total_bytes: usize,
    dispatched: bool,
}

/// Where a batch landed.
struct Appended {
    start: u64,
    queue_offset: u64,
    store_timestamp: i64,
    phys_offsets: Vec<u64>,
}

/// Why an append must wait (and be tried again) or stop.
pub(super) enum Retry {
    After(AppendError),
    Refused(PutStatus),
}
