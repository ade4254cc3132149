//! `MessageStore`: one shard's store, its types and its life (start is in `recovery.rs`,
//! stop here). The rest of its behaviour lives in rooms of its own, each an `impl
//! MessageStore` block: `put.rs` (admission, append, inline dispatch, the SYNC_FLUSH wait),
//! `get.rs` (reads, lookups, the long-poll wait), `dispatch.rs` (ConsumeQueue and index
//! entries), `flush.rs` (flusher, segment preparer, checkpointer, clock), `recovery.rs`
//! (lock, checkpoint, scan, re-dispatch, task start), `retention.rs` (disk usage, expiry).
//!
//! Visibility: under SYNC_FLUSH a record is readable only once it is durable (a consumer never
//! sees a message a crash could still take back); under ASYNC_FLUSH as soon as it is appended.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::checkpoint::Checkpoint;
use super::commit_log::{materialize, CommitLog, Slice};
use super::config::StoreConfig;
use super::consume_queue::QueueTable;
use super::disk_usage::DiskUsageProbe;
use super::index_file::IndexService;
use super::queue_heads::QueueHeads;
use crate::runtime::tasks::{StopSignal, TaskRegistry};
use crate::runtime::watermark::Watermark;

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
    pub(super) fn refused(status: PutStatus) -> PutResult {
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

/// How long shutdown waits for the background tasks once stopped (each ends at its next await).
const TASKS_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters for benchmarks and runtime info.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub puts: u64,
    pub put_records: u64,
    /// Bytes of the records stored (as written to the CommitLog).
    pub put_bytes: u64,
    pub flushes: u64,
    pub flushed_bytes: u64,
    /// Puts that waited because unwritten data filled the memory window (the disk is behind).
    pub window_waits: u64,
    /// Puts that waited for the next segment to be prepared.
    pub segment_waits: u64,
    /// Times the next segment was not prepared ahead because the disk was past
    /// `diskMaxUsedSpaceRatio`.
    pub segments_not_prepared_ahead: u64,
    /// Async write-out: chunk writes completed, and their summed time from start to the
    /// store seeing the completion (which includes waiting for the reactor to reap it).
    pub chunk_writes: u64,
    pub chunk_write_us: u64,
    /// ASYNC_FLUSH: write-outs of what puts wait for (one per group of puts), and their
    /// summed time.
    pub write_outs: u64,
    pub write_out_us: u64,
    /// Each flush of the CommitLog: its time (µs, write and sync) and its group's size (bytes
    /// made durable by that one flush).
    pub flush_latency: crate::latency::Histogram,
    pub flush_group_bytes: crate::latency::Histogram,
    /// ConsumeQueues synced by checkpoint passes (each one fdatasync per written file).
    pub queue_syncs: u64,
}

pub(super) struct State {
    pub(super) disk_full: Cell<bool>,
    /// The store's file system's used share as retention last measured it (`None`: not yet).
    pub(super) disk_used_percent: Cell<Option<u32>>,
    /// Why preparing the next segment failed (ENOSPC, typically); cleared when one is prepared.
    /// Puts that need that segment meanwhile are refused with it.
    pub(super) segment_error: RefCell<Option<String>>,
    pub(super) flush_error: RefCell<Option<String>>,
    /// Set for good when an fdatasync of the CommitLog fails ("fsyncgate"): what it was to make
    /// durable may be lost, including write-outs no longer in memory, and a retried fdatasync
    /// would succeed without bringing it back. So the store stops advancing `flushed` (and the
    /// checkpoint), refuses puts and fails flushes until it is restarted; recovery then
    /// rewrites and syncs everything past the checkpoint (`CommitLog::rewrite_durably`). Write
    /// errors are different: the data is still in memory and the write is retried from it.
    pub(super) sync_failed: RefCell<Option<String>>,
    /// Set for good when syncing the ConsumeQueues or the index failed: their dirty pages may
    /// have been dropped by the kernel, so the checkpoint is not advanced again by this process
    /// (the next start re-dispatches from the last good one, which rewrites the entries).
    pub(super) queue_sync_failed: Cell<bool>,
    pub(super) shutting_down: Cell<bool>,
    /// The background tasks were stopped (shutdown's end, or `abandon`): nothing advances
    /// `written` or `flushed` any more, so a put still waiting on them is answered at once.
    pub(super) stopped: Cell<bool>,
}

pub struct MessageStore {
    pub(super) config: StoreConfig,
    pub(super) log: RefCell<CommitLog>,
    pub(super) queues: RefCell<QueueTable>,
    /// Deleted topics whose records the log still holds: recovery does not dispatch them.
    pub(super) deleted_topics: RefCell<super::deleted_topics::DeletedTopics>,
    /// Long-poll marks of the queues, advanced by the put that grows them.
    pub(super) heads: QueueHeads,
    pub(super) index: RefCell<IndexService>,
    /// CommitLog bytes made durable.
    pub(super) flushed: Watermark,
    /// CommitLog bytes written to the files (write completed, maybe not synced: in the
    /// kernel's hands, so they survive a crash of the process). ASYNC_FLUSH puts are answered
    /// once it passes them.
    pub(super) written: Watermark,
    /// ASYNC_FLUSH: `appended` when the flusher last planned a write-out; appends past it wake
    /// the flusher for the next one (reset to `written` when a write fails, so it is redone).
    pub(super) write_out_planned_to: Cell<u64>,
    /// CommitLog bytes appended (wakes the flusher).
    pub(super) appended: Watermark,
    /// Readable end of the CommitLog (flushed under SYNC_FLUSH, appended under ASYNC_FLUSH).
    pub(super) visible: Watermark,
    /// Bumped after every write-out (async mode) and flush: progress writers may wait for.
    pub(super) written_out: Watermark,
    /// Ticket queue of writers held back by a full memory window: `next_ticket` is handed
    /// out, `admitted` is the ticket whose turn it is.
    pub(super) next_ticket: Cell<u64>,
    pub(super) admitted: Watermark,
    /// Bumped to ask the flusher for a flush now (memory window full, `flush_now`).
    pub(super) flush_requests: Watermark,
    /// Bumped when a segment is consumed (wakes the preparer) and when one is ready.
    pub(super) segments_rolled: Watermark,
    pub(super) segments_ready: Watermark,
    /// Coarse wall clock (ms), ticked by `clock_loop`: waiting puts take their
    /// FLUSH_DISK_TIMEOUT deadline from it. One timer per shard instead of one per put (a
    /// timer per put cost an io_uring timeout and a cancel each, which halved group commits).
    pub(super) clock_ms: Watermark,
    pub(super) state: State,
    /// The background tasks (flusher, preparer, checkpointer, retention, clock), stopped at
    /// shutdown after the last flush, or at once by a simulated crash.
    pub(super) tasks: TaskRegistry,
    pub(super) disk_usage: RefCell<DiskUsageProbe>,
    pub(super) last_checkpoint: Cell<Checkpoint>,
    pub(super) last_checkpoint_ms: Cell<i64>,
    pub(super) last_flush_ms: Cell<i64>,
    pub(super) flush_requests_served: Cell<u64>,
    pub(super) writes_in_flight: Cell<usize>,
    pub(super) stats: Cell<StoreStats>,
    /// Reads within this many bytes of the end are hot (`hot_window_bytes`, computed once).
    pub(super) hot_window_bytes: u64,
    pub(super) _lock: std::fs::File,
}

impl MessageStore {
    /// Starts a background task in the store's registry. It holds the store weakly (the
    /// store's owner decides its life) and gets the stop signal to wait on.
    pub(super) fn spawn_background<F: std::future::Future<Output = ()> + 'static>(
        self: &Rc<Self>,
        name: &'static str,
        task: impl FnOnce(std::rc::Weak<MessageStore>, StopSignal) -> F,
    ) {
        self.tasks
            .spawn(name, task(Rc::downgrade(self), self.tasks.stop_signal()));
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn stats(&self) -> StoreStats {
        self.stats.get()
    }

    pub(super) fn count(&self, update: impl FnOnce(&mut StoreStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    /// Replaces the disk usage probe (tests simulate a full disk with it).
    pub fn set_disk_usage_probe(&self, probe: DiskUsageProbe) {
        *self.disk_usage.borrow_mut() = probe;
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
        self.tasks.stop();
        let _ = self.tasks.join(TASKS_JOIN_TIMEOUT).await;
        // Puts still waiting for a write or a flush would wait for ever (and their deadline's
        // clock has stopped too): they are answered now.
        self.state.stopped.set(true);
        self.written.wake_all();
        self.flushed.wake_all();
    }

    /// Test support: stop like a crashed process, without flushing or checkpointing. What was
    /// flushed is on disk; what was only in memory is lost when the store is dropped.
    pub async fn abandon(&self) {
        self.state.shutting_down.set(true);
        self.stop_tasks().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::commit_log::tests::on_reactor;
    use crate::config::TransferLimits;
    use crate::runtime;
    use crate::FlushMode;
    use thruster_protocol::message;
    use thruster_protocol::message::encode_properties;

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

    pub(crate) fn config(dir: &std::path::Path, mode: FlushMode) -> StoreConfig {
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
    fn a_pull_carries_no_more_than_the_limits_of_its_kind_and_the_ask() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let limits = TransferLimits {
                memory_count_max: 5,
                memory_bytes_max: 1 << 20,
                disk_count_max: 3,
                disk_bytes_max: 1 << 20,
            };
            let hot = StoreConfig {
                transfer_limits: limits,
                access_message_in_memory_max_ratio: 100,
                ..config(&root, FlushMode::Sync)
            };
            let store = MessageStore::open(hot.clone()).await.unwrap();
            let mut record_bytes = 0;
            for i in 0..20 {
                let r = store
                    .put(message("T", 0, &[b'x'; 100], "", &format!("k{i}")))
                    .await;
                assert_eq!(r.status, PutStatus::Ok);
                record_bytes = r.wrote_bytes;
            }
            let count = |store: &MessageStore, ask| {
                store.get_messages("T", 0, 0, ask, &|_| true).messages.len()
            };
            assert_eq!(count(&store, 32), 5, "hot: the memory count limit");
            assert_eq!(count(&store, 2), 2, "never more than asked");
            store.shutdown().await.unwrap();
            drop(store);
            // The byte limit stops before the message that would pass it.
            let by_bytes = StoreConfig {
                transfer_limits: TransferLimits {
                    memory_count_max: 100,
                    memory_bytes_max: 3 * record_bytes + 1,
                    ..limits
                },
                ..hot.clone()
            };
            let store = MessageStore::open(by_bytes).await.unwrap();
            assert_eq!(count(&store, 32), 3, "hot: the memory byte limit");
            store.shutdown().await.unwrap();
            drop(store);
            // Everything cold: the disk limits.
            let cold = StoreConfig {
                access_message_in_memory_max_ratio: 0,
                ..hot
            };
            let store = MessageStore::open(cold).await.unwrap();
            assert_eq!(count(&store, 32), 3, "cold: the disk count limit");
            store.shutdown().await.unwrap();
            drop(store);
        });
    }

    #[test]
    fn a_checkpoint_pass_syncs_the_due_queues_and_recovers_from_the_oldest_unsynced_entry() {
        use crate::consume_queue::SyncPolicy;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let config = StoreConfig {
                // No periodic pass during the test: the test runs them.
                flush_consume_queue_interval_ms: 3_600_000,
                ..config(&root, FlushMode::Sync)
            };
            let store = MessageStore::open(config).await.unwrap();
            // One entry in each of 20 queues (the oldest writes), then 300 entries (6000
            // bytes, two pages) in one more.
            let mut first_pos = Vec::new();
            for i in 0..20 {
                let r = store.put(message(&format!("T{i}"), 0, b"x", "", "")).await;
                assert_eq!(r.status, PutStatus::Ok);
                first_pos.push(r.phys_offsets[0]);
            }
            for _ in 0..300 {
                let r = store.put(message("Busy", 0, b"y", "", "")).await;
                assert_eq!(r.status, PutStatus::Ok);
            }
            let flushed = store.flushed.get();
            let syncs = |store: &MessageStore| store.stats().queue_syncs;
            let before = syncs(&store);
            let periodic = SyncPolicy {
                least_pages: 2,
                thorough_interval: Duration::from_secs(3600),
            };
            store.checkpoint_pass(periodic, 512).await.unwrap();
            assert_eq!(
                syncs(&store) - before,
                1,
                "only the queue with two pages written"
            );
            let checkpoint = store.last_checkpoint.get();
            assert_eq!(checkpoint.log_flushed, flushed);
            assert_eq!(
                checkpoint.recover_from, first_pos[0],
                "recovery re-dispatches from the oldest entry no sync covers"
            );
            // Every queue due, at most 5 a pass: the longest unsynced go first.
            let old = SyncPolicy {
                least_pages: 2,
                thorough_interval: Duration::ZERO,
            };
            store.checkpoint_pass(old, 5).await.unwrap();
            assert_eq!(syncs(&store) - before, 6);
            assert_eq!(store.last_checkpoint.get().recover_from, first_pos[5]);
            // A full checkpoint syncs the rest: recovery starts where the log is flushed.
            store.sync_queues_and_checkpoint().await.unwrap();
            assert_eq!(syncs(&store) - before, 21);
            let checkpoint = store.last_checkpoint.get();
            assert_eq!(
                (checkpoint.recover_from, checkpoint.log_flushed),
                (flushed, flushed)
            );
            // Nothing written since: nothing to sync.
            store.sync_queues_and_checkpoint().await.unwrap();
            assert_eq!(syncs(&store) - before, 21);
            store.shutdown().await.unwrap();
        });
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
    fn a_full_disk_refuses_writes_until_space_returns_and_expired_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let mut cfg = config(&root, FlushMode::Sync);
            cfg.file_reserved_time_hours = 1;
            let store = MessageStore::open(cfg.clone()).await.unwrap();
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
            let used = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(95));
            let probe = used.clone();
            store.set_disk_usage_probe(std::sync::Arc::new(move || {
                Ok(probe.load(std::sync::atomic::Ordering::Relaxed))
            }));
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
            used.store(80, std::sync::atomic::Ordering::Relaxed);
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
            used.store(10, std::sync::atomic::Ordering::Relaxed);
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
            // After a restart the queue still starts where the deleted data ended (its first
            // ConsumeQueue file may still hold entries of deleted segments).
            drop(store);
            let store = MessageStore::open(cfg).await.unwrap();
            assert_eq!(
                store.min_offset("R", 0),
                Some(min),
                "GET_MIN_OFFSET after a restart"
            );
            let r = store.get_messages("R", 0, 0, 32, &|_| true);
            assert_eq!(r.status, GetStatus::OffsetTooSmall);
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

    /// Polls `condition` every 5 ms until it holds or 10 s pass.
    async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            runtime::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[test]
    fn a_nearly_full_disk_gets_no_segment_ahead_and_writes_still_roll() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let store = MessageStore::open(config(&root, FlushMode::Sync))
                .await
                .unwrap();
            // Past diskMaxUsedSpaceRatio (75), below the warning level (90): writes go on.
            let used = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(80));
            let probe = used.clone();
            store.set_disk_usage_probe(std::sync::Arc::new(move || {
                Ok(probe.load(std::sync::atomic::Ordering::Relaxed))
            }));
            let segment_bytes = store.config.segment_bytes;
            let put = |i: usize| message("N", 0, format!("n{i}").repeat(100).as_bytes(), "", "");
            store.refresh_disk_usage().await.unwrap();
            let mut i = 0;
            while store.log.borrow().write_pos() < segment_bytes / 2 + 1024 {
                assert_eq!(store.put(put(i)).await.status, PutStatus::Ok);
                i += 1;
            }
            assert!(
                eventually(|| store.stats().segments_not_prepared_ahead > 0).await,
                "the preparer looked at the disk"
            );
            assert!(
                !store.log.borrow().has_next_segment(),
                "nothing prepared ahead"
            );
            // A write that needs the next segment still gets it.
            while store.log.borrow().segments().count() < 2 {
                assert_eq!(store.put(put(i)).await.status, PutStatus::Ok);
                i += 1;
            }
            assert!(
                store.stats().segment_waits > 0,
                "the roll waited for its segment"
            );
            // With room again, the next one is prepared ahead once this one is half used.
            used.store(50, std::sync::atomic::Ordering::Relaxed);
            store.refresh_disk_usage().await.unwrap();
            let second = segment_bytes;
            while store.log.borrow().write_pos() < second + segment_bytes / 2 + 1024 {
                assert_eq!(store.put(put(i)).await.status, PutStatus::Ok);
                i += 1;
            }
            assert!(
                eventually(|| store.log.borrow().has_next_segment()).await,
                "prepared ahead"
            );
            store.shutdown().await.unwrap();
        });
    }
}
