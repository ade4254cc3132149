//! Replication, the store's side of it: a master hands out its log as it is (`read_log`,
//! `log_tail_crc`), and a slave appends those bytes at the same offsets (`put_replicated`),
//! building its own ConsumeQueues and index by dispatch, so a slave's log is the master's byte
//! for byte. The network side lives in the broker (`broker/src/ha`).

use bytes::Bytes;
use thruster_protocol::message::{self, RecordError, RecordStart};

use super::commit_log::{materialize, ReadError};
use super::config::FlushMode;
use super::dispatch::{dispatch_to, dispatches_to_queue, queue_entry, DispatchRecord};
use super::message_store::MessageStore;
use super::put::{Retry, Ticket};
use super::Slice;

/// Bytes before a log's end whose CRC a slave shows its master, proving the two logs agree
/// there (a slave that kept records its master lost in a crash would not match).
pub const TAIL_CHECK_BYTES_MAX: u64 = 4096;

/// How far a replicated append got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAppend {
    /// Bytes of the input used; the rest is a partial record to complete with the next bytes.
    pub consumed: usize,
    /// Where the master's next bytes belong (past a BLANK: the next segment's start).
    pub next_pos: u64,
    /// Where this store's readable log now ends.
    pub end: u64,
    /// The queues that grew (each once).
    pub queues: Vec<(String, i32)>,
}

/// Why replicated bytes were not (all) appended. Nothing is appended past the record named.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplicaError {
    #[error("replicated record at {pos} is damaged: {reason}")]
    Corrupt { pos: u64, reason: String },
    #[error("the master's log diverges from this one at {pos}: {reason}")]
    Diverged { pos: u64, reason: String },
    #[error("the store refused replicated records: {0}")]
    Refused(String),
}

impl MessageStore {
    /// The master's side: the log's bytes from `pos` up to `max_bytes`, never past the readable
    /// end or the end of `pos`'s segment (the slave continues at the next segment after the
    /// BLANK). Empty when nothing is readable past `pos`.
    pub fn read_log(&self, pos: u64, max_bytes: usize) -> Result<Vec<Slice>, ReadError> {
        let visible = self.visible.get();
        let log = self.log.borrow();
        if pos >= visible {
            if pos > visible {
                return Err(ReadError::PastEnd {
                    pos,
                    len: 0,
                    end: visible,
                });
            }
            return Ok(Vec::new());
        }
        if pos < log.min_offset() {
            return Err(ReadError::BelowMinimum {
                pos,
                min: log.min_offset(),
            });
        }
        let segment_end = log.segment_start_of(pos) + self.config.segment_bytes;
        let end = visible.min(segment_end).min(pos + max_bytes as u64);
        log.read_raw(pos, end)
    }

    /// After handing out `[.., pos)` to a slave: has the kernel read the next `len` bytes ahead
    /// if they are on disk.
    pub fn prefetch_log(&self, pos: u64, len: u64) {
        if pos < self.visible.get() {
            self.log.borrow().prefetch(pos, len);
        }
    }

    /// Completes once the readable log reaches past `pos`.
    pub async fn wait_for_log(&self, pos: u64) {
        self.visible.wait_for(pos + 1).await;
    }

    /// The bytes `log_tail_crc` covers before `end`: within `end`'s segment, at most
    /// `TAIL_CHECK_BYTES_MAX`.
    pub fn tail_range(&self, end: u64) -> (u64, u64) {
        let log = self.log.borrow();
        if end <= log.min_offset() {
            return (end, end);
        }
        let segment_start = log.segment_start_of(end);
        (
            end.saturating_sub(TAIL_CHECK_BYTES_MAX).max(segment_start),
            end,
        )
    }

    /// CRC-32 of the `len` bytes before `end` (`tail_range`), to compare logs at a handshake.
    pub async fn log_tail_crc(&self, end: u64, len: u64) -> std::io::Result<u32> {
        if len == 0 {
            return Ok(0);
        }
        let slices = self
            .log
            .borrow()
            .read_raw(end - len, end)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let bytes = materialize(&slices).await?;
        if bytes.len() as u64 != len {
            return Err(std::io::Error::other(format!(
                "log tail {}..{end}: read {} bytes",
                end - len,
                bytes.len()
            )));
        }
        Ok(crc32fast::hash(&bytes))
    }

    /// The slave's side: appends the master's log bytes that start at `pos` (where this log's
    /// next record belongs), whole records only, each validated as recovery would (CRC, no NUL)
    /// and checked to land at the offset and queue offset the master gave it. Returns once they
    /// are readable (under SYNC_FLUSH: durable), which is what the slave may acknowledge.
    pub async fn put_replicated(
        &self,
        pos: u64,
        bytes: &Bytes,
    ) -> Result<ReplicaAppend, ReplicaError> {
        if let Some(status) = self.refusal() {
            return Err(ReplicaError::Refused(format!("{status:?}")));
        }
        let mut consumed = 0usize;
        let mut next_pos = pos;
        let mut woken: Vec<(String, i32, u64)> = Vec::new();
        while consumed < bytes.len() {
            let rest = bytes.slice(consumed..);
            match message::peek_record(&rest) {
                Err(RecordError::Truncated { .. }) => break,
                Err(e) => return Err(corrupt(next_pos, e)),
                Ok(RecordStart::Blank { total_size }) => {
                    let segment_end =
                        self.log.borrow().segment_start_of(next_pos) + self.config.segment_bytes;
                    if next_pos + total_size as u64 != segment_end {
                        return Err(corrupt(next_pos, "a BLANK that does not end its segment"));
                    }
                    // The padding is not needed (and the master sends at most up to here).
                    consumed = bytes.len().min(consumed + total_size);
                    next_pos = segment_end;
                }
                Ok(RecordStart::Message { total_size }) => {
                    if total_size > rest.len() {
                        break;
                    }
                    let record = rest.slice(..total_size);
                    let queue = self.append_replicated(next_pos, &record).await?;
                    if let Some(queue) = queue {
                        match woken
                            .iter_mut()
                            .find(|(t, q, _)| *t == queue.0 && *q == queue.1)
                        {
                            Some(entry) => entry.2 = queue.2,
                            None => woken.push(queue),
                        }
                    }
                    consumed += total_size;
                    next_pos += total_size as u64;
                }
            }
        }
        let end = self.log.borrow().write_pos();
        // As a put: the next request acknowledges these bytes to the master, so they must be
        // flushed (SYNC_FLUSH) or at least written (ASYNC_FLUSH) first.
        let mark = match self.config.flush_mode {
            FlushMode::Sync => &self.flushed,
            FlushMode::Async => &self.written,
        };
        self.wait_reached(mark, end)
            .await
            .map_err(ReplicaError::Refused)?;
        for (topic, queue_id, queue_end) in &woken {
            self.heads.advance(topic, *queue_id, *queue_end);
        }
        Ok(ReplicaAppend {
            consumed,
            next_pos,
            end: self.visible.get(),
            queues: woken.into_iter().map(|(t, q, _)| (t, q)).collect(),
        })
    }

    /// Appends one replicated record at `pos` and dispatches it; returns its queue and the
    /// queue's new end when it has a ConsumeQueue entry.
    async fn append_replicated(
        &self,
        pos: u64,
        record: &Bytes,
    ) -> Result<Option<(String, i32, u64)>, ReplicaError> {
        let decoded = message::decode_record(record, true).map_err(|e| corrupt(pos, e))?;
        if decoded.looks_torn() {
            return Err(corrupt(pos, "NUL in the topic or properties"));
        }
        if decoded.physical_offset != pos as i64 {
            return Err(ReplicaError::Diverged {
                pos,
                reason: format!("the record says it is at {}", decoded.physical_offset),
            });
        }
        let mut ticket: Option<Ticket<'_>> = None;
        loop {
            match self.try_append_replicated(pos, record, &decoded) {
                Ok(queue) => {
                    let end = pos + record.len() as u64;
                    self.appended.advance(end);
                    if self.config.flush_mode == FlushMode::Async {
                        self.visible.advance(end);
                    }
                    self.count(|stats| {
                        stats.puts += 1;
                        stats.put_records += 1;
                    });
                    return Ok(queue);
                }
                Err(Retry::After(need)) => self
                    .wait_for_room(need, &mut ticket)
                    .await
                    .map_err(|status| ReplicaError::Refused(format!("{status:?}")))?,
                Err(Retry::Refused(status)) => {
                    return Err(ReplicaError::Refused(format!("{status:?}")))
                }
            }
        }
    }

    /// Appends without yielding, like a put: the log and the ConsumeQueue agree for readers.
    fn try_append_replicated(
        &self,
        pos: u64,
        record: &Bytes,
        decoded: &message::DecodedRecord,
    ) -> Result<Option<(String, i32, u64)>, Retry> {
        let len = record.len();
        let lands_at = self.log.borrow().next_record_start(len);
        if lands_at != pos {
            return Err(Retry::Refused(crate::PutStatus::ServiceNotAvailable(
                format!("replicated record for {pos} would land at {lands_at}: the logs diverged"),
            )));
        }
        let (topic, queue_id) = (decoded.topic.as_str(), decoded.queue_id);
        let dispatched = dispatches_to_queue(decoded.sys_flag);
        let mut queues = self.queues.borrow_mut();
        let mut queue = match dispatched {
            true => Some(
                queue_entry(&self.config, &mut queues, topic, queue_id).map_err(|e| {
                    Retry::Refused(crate::PutStatus::ServiceNotAvailable(e.to_string()))
                })?,
            ),
            false => None,
        };
        if let Some(q) = queue.as_deref_mut() {
            q.prepare_next().map_err(|e| {
                Retry::Refused(crate::PutStatus::ServiceNotAvailable(format!(
                    "disk full or failing: {e}"
                )))
            })?;
            if q.max_offset() != decoded.queue_offset as u64 {
                return Err(Retry::Refused(crate::PutStatus::ServiceNotAvailable(
                    format!(
                        "replicated record at {pos} has queue offset {} in {topic}:{queue_id}, \
                     which ends at {}: the logs diverged",
                        decoded.queue_offset,
                        q.max_offset()
                    ),
                )));
            }
        }
        let (start, ()) = self
            .log
            .borrow_mut()
            .append(len, |_, writer| bytes::BufMut::put_slice(writer, record))
            .map_err(Retry::After)?;
        debug_assert_eq!(start, pos);
        let dispatch = DispatchRecord {
            pos,
            topic,
            queue_offset: decoded.queue_offset as u64,
            size: len as u32,
            sys_flag: decoded.sys_flag,
            properties: &decoded.properties,
            store_timestamp: decoded.store_timestamp,
        };
        let mut index = self.index.borrow_mut();
        if let Err(e) = dispatch_to(&self.config, queue.as_deref_mut(), &mut index, &dispatch) {
            // The record is in the log; recovery re-dispatches it.
            tracing::error!(topic, queue_id, pos, error = %e, "dispatch of a replicated record failed");
        }
        Ok(queue.map(|q| (topic.to_owned(), queue_id, q.max_offset())))
    }
}

fn corrupt(pos: u64, reason: impl ToString) -> ReplicaError {
    ReplicaError::Corrupt {
        pos,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::commit_log::tests::on_reactor;
    use crate::message_store::tests::{config, message};
    use crate::{FlushMode, GetStatus, PutStatus};

    /// Copies the master's log into the slave the way the broker's HA loop does: reads of
    /// `step` bytes, partial records carried to the next read.
    async fn replicate(master: &MessageStore, slave: &MessageStore, step: usize) -> u64 {
        let mut next_pos = slave.commit_log_max_offset();
        let mut carry = Vec::new();
        loop {
            let read_pos = next_pos + carry.len() as u64;
            let slices = master.read_log(read_pos, step).unwrap();
            if slices.is_empty() {
                assert!(carry.is_empty(), "a partial record left at the end");
                return next_pos;
            }
            carry.extend_from_slice(&materialize(&slices).await.unwrap());
            let bytes = Bytes::from(std::mem::take(&mut carry));
            let done = slave.put_replicated(next_pos, &bytes).await.unwrap();
            carry = bytes[done.consumed..].to_vec();
            next_pos = done.next_pos;
        }
    }

    async fn whole_log(store: &MessageStore) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = store.commit_log_min_offset();
        let end = store.commit_log_max_offset();
        while pos < end {
            let slices = store.read_log(pos, 1 << 20).unwrap();
            let bytes = materialize(&slices).await.unwrap();
            out.extend_from_slice(&bytes);
            // Past a BLANK (at most 8 bytes of it are read from memory): the next segment.
            let segment_end = store.log.borrow().segment_start_of(pos) + store.config.segment_bytes;
            let read_end = pos + bytes.len() as u64;
            pos = if read_end < end
                && message::peek_record(&bytes[bytes.len().saturating_sub(8)..])
                    .is_ok_and(|r| matches!(r, RecordStart::Blank { .. }))
            {
                segment_end
            } else {
                read_end
            };
        }
        out
    }

    async fn fill(master: &MessageStore, count: usize) {
        for i in 0..count {
            let body = vec![b'a' + (i % 26) as u8; 200 + (i * 37) % 1800];
            let topic = if i % 3 == 0 { "A" } else { "B" };
            let r = master
                .put(message(topic, (i % 2) as i32, &body, "t", &format!("k{i}")))
                .await;
            assert_eq!(r.status, PutStatus::Ok);
        }
    }

    #[test]
    fn a_slave_log_is_the_masters_byte_for_byte_across_segments_and_restarts() {
        for (mode, step) in [(FlushMode::Async, 700), (FlushMode::Sync, 9_000)] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_owned();
            on_reactor(move || async move {
                let master = MessageStore::open(config(&root.join("m"), FlushMode::Async))
                    .await
                    .unwrap();
                let slave_config = config(&root.join("s"), mode);
                let slave = MessageStore::open(slave_config.clone()).await.unwrap();
                fill(&master, 150).await;
                assert!(master.commit_log_max_offset() > 2 * master.config.segment_bytes);
                let end = replicate(&master, &slave, step).await;
                assert_eq!(end, master.commit_log_max_offset());
                assert_eq!(slave.commit_log_max_offset(), end);
                assert_eq!(whole_log(&slave).await, whole_log(&master).await);
                for (topic, queue_id) in [("A", 0), ("A", 1), ("B", 0), ("B", 1)] {
                    let m = master.get_messages(topic, queue_id, 0, 1000, &|_| true);
                    let s = slave.get_messages(topic, queue_id, 0, 1000, &|_| true);
                    assert_eq!(s.status, GetStatus::Found);
                    let offsets = |r: &crate::GetResult| {
                        r.messages
                            .iter()
                            .map(|m| (m.queue_offset, m.phys_offset))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(offsets(&s), offsets(&m), "{topic}:{queue_id}");
                }
                // The slave restarts from its own end and continues.
                slave.shutdown().await.unwrap();
                drop(slave);
                let slave = MessageStore::open(slave_config).await.unwrap();
                assert_eq!(slave.commit_log_max_offset(), end);
                let (from, to) = slave.tail_range(end);
                assert!(to - from > 0);
                assert_eq!(
                    slave.log_tail_crc(to, to - from).await.unwrap(),
                    master.log_tail_crc(to, to - from).await.unwrap()
                );
                fill(&master, 60).await;
                let end = replicate(&master, &slave, step).await;
                assert_eq!(end, master.commit_log_max_offset());
                assert_eq!(whole_log(&slave).await, whole_log(&master).await);
                let (found, _, _) = slave.query_by_key("A", "k3", 8, 0, i64::MAX).await.unwrap();
                let (expected, _, _) = master
                    .query_by_key("A", "k3", 8, 0, i64::MAX)
                    .await
                    .unwrap();
                assert_eq!(found.len(), 2, "k3 was put by both fills");
                assert_eq!(
                    found.len(),
                    expected.len(),
                    "the slave's index has the master's keys"
                );
                slave.shutdown().await.unwrap();
                master.shutdown().await.unwrap();
            });
        }
    }

    #[test]
    fn records_that_do_not_continue_the_log_are_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let master = Rc::new(
                MessageStore::open(config(&root.join("m"), FlushMode::Async))
                    .await
                    .unwrap(),
            );
            let slave = MessageStore::open(config(&root.join("s"), FlushMode::Async))
                .await
                .unwrap();
            fill(&master, 3).await;
            let all = materialize(&master.read_log(0, 1 << 20).unwrap())
                .await
                .unwrap();
            let first = match message::peek_record(&all).unwrap() {
                RecordStart::Message { total_size } => total_size,
                RecordStart::Blank { .. } => unreachable!(),
            };
            // The second record offered where the first belongs: it says it is elsewhere.
            let second = all.slice(first..);
            let error = slave.put_replicated(0, &second).await.unwrap_err();
            assert!(
                matches!(error, ReplicaError::Diverged { pos: 0, .. }),
                "{error}"
            );
            assert_eq!(slave.commit_log_max_offset(), 0);
            // A damaged body fails its CRC.
            let mut damaged = all.to_vec();
            damaged[first - 1] ^= 0xFF;
            let error = slave
                .put_replicated(0, &Bytes::from(damaged))
                .await
                .unwrap_err();
            // The properties end the record; flipping their last byte breaks the NUL check or
            // the layout, or the body CRC when it lands in the body.
            assert!(
                matches!(error, ReplicaError::Corrupt { pos: 0, .. }),
                "{error}"
            );
            assert_eq!(slave.commit_log_max_offset(), 0);
            // A partial record is left for later, nothing stored.
            let done = slave
                .put_replicated(0, &all.slice(..first - 1))
                .await
                .unwrap();
            assert_eq!((done.consumed, done.next_pos), (0, 0));
            let done = slave.put_replicated(0, &all).await.unwrap();
            assert_eq!(done.next_pos, master.commit_log_max_offset());
            assert_eq!(done.consumed, all.len());
            slave.shutdown().await.unwrap();
            master.shutdown().await.unwrap();
        });
    }
}
