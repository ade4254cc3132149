//! Opening a store: the lock, the checkpoint, the recovery scan of the CommitLog (a torn tail
//! is cut), re-dispatch of what the ConsumeQueues and index may lack, and the start of the
//! background tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use thruster_protocol::message::{self};
use tracing::{info, warn};

use super::checkpoint::Checkpoint;
use super::commit_log::{CommitLog, CommitLogSettings};
use super::config::{shard_base_offset, FlushMode, StoreConfig};
use super::consume_queue::{ConsumeQueue, QueueTable};
use super::deleted_topics::DeletedTopics;
use super::dispatch::{dispatch, dispatches_to_queue};
use super::flush::{checkpoint_loop, clock_loop, flush_loop, prepare_loop};
use super::index_file::IndexService;
use super::message_store::{MessageStore, State, StoreStats};
use super::queue_heads::QueueHeads;
use crate::runtime;
use crate::runtime::tasks::TaskRegistry;
use crate::runtime::watermark::Watermark;

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
        let (lock, crashed) = take_lock_and_abort_marker(&config)?;
        let checkpoint = Checkpoint::load(&config.storage, &config.checkpoint_path())?;
        let start = recovery_start(&config, checkpoint, crashed);
        let mut queues = open_queues(&config)?;
        let deleted_topics = DeletedTopics::load(&config)?;
        let mut index = IndexService::open(
            &config.storage,
            &config.index_dir(),
            config.index_hash_slots,
            config.index_entries,
        )?;
        if crashed {
            // The dead process's writes to the queue and index files may still be unsynced
            // (a process crash leaves them in the page cache), and so may their names: the
            // checkpoint recovery writes before serving must not claim them durable unsynced.
            // (Found by the simulated-disk crash test: a restart after a failed shutdown, then
            // a power loss, lost ConsumeQueue entries and files below the checkpoint.)
            for queue in queues.values_mut() {
                queue.assume_unsynced();
            }
            index.assume_unsynced();
        }
        let log = recover_log(
            &config,
            start,
            crashed,
            &mut queues,
            &mut index,
            &deleted_topics,
        )
        .await?;
        let store = Rc::new(MessageStore::recovered(
            config,
            lock,
            checkpoint.unwrap_or_default(),
            log,
            queues,
            index,
        ));
        *store.deleted_topics.borrow_mut() = deleted_topics;
        // Everything recovered is durable: record that before serving.
        store.sync_queues_and_checkpoint().await?;
        // The disk usage before the segment preparer starts: on a nearly full disk it must not
        // prepare a segment ahead (see `may_prepare_ahead`).
        if let Err(e) = store.refresh_disk_usage().await {
            warn!(error = %e, "measuring disk usage failed");
        }
        store.start_background_tasks();
        Ok(store)
    }

    /// The store over a recovered log, queues and index: every watermark at the log's end.
    fn recovered(
        config: StoreConfig,
        lock: std::fs::File,
        checkpoint: Checkpoint,
        log: CommitLog,
        queues: QueueTable,
        index: IndexService,
    ) -> MessageStore {
        let end = log.write_pos();
        let root = config.root_dir.clone();
        MessageStore {
            log: RefCell::new(log),
            queues: RefCell::new(queues),
            deleted_topics: RefCell::new(DeletedTopics::default()),
            index: RefCell::new(index),
            flushed: Watermark::new(end),
            written: Watermark::new(end),
            write_out_planned_to: Cell::new(end),
            appended: Watermark::new(end),
            visible: Watermark::new(end),
            flush_requests: Watermark::new(0),
            next_ticket: Cell::new(0),
            admitted: Watermark::new(0),
            written_out: Watermark::new(0),
            segments_rolled: Watermark::new(0),
            segments_ready: Watermark::new(0),
            clock_ms: Watermark::new(runtime::now_ms().max(0) as u64),
            heads: QueueHeads::default(),
            tasks: TaskRegistry::new(format!("store-{}", config.shard_id)),
            state: State {
                disk_full: Cell::new(false),
                disk_used_percent: Cell::new(None),
                segment_error: RefCell::new(None),
                flush_error: RefCell::new(None),
                sync_failed: RefCell::new(None),
                queue_sync_failed: Cell::new(false),
                shutting_down: Cell::new(false),
                stopped: Cell::new(false),
            },
            disk_usage: RefCell::new(std::sync::Arc::new(move || {
                super::disk_usage::disk_used_percent(&root)
            })),
            last_checkpoint: Cell::new(checkpoint),
            last_checkpoint_ms: Cell::new(0),
            last_flush_ms: Cell::new(0),
            flush_requests_served: Cell::new(0),
            writes_in_flight: Cell::new(0),
            stats: Cell::new(StoreStats::default()),
            hot_window_bytes: config.hot_window_bytes(),
            _lock: lock,
            config,
        }
    }

    fn start_background_tasks(self: &Rc<Self>) {
        self.spawn_background("flusher", flush_loop);
        self.spawn_background("segment-preparer", prepare_loop);
        self.spawn_background("checkpointer", checkpoint_loop);
        // Both modes: puts wait (for the flush, or for the write) with a deadline.
        self.spawn_background("clock", clock_loop);
    }
}

/// Takes the store's lock, then leaves the abort marker a clean shutdown removes; returns the
/// lock and whether the previous run crashed (its marker was still there).
fn take_lock_and_abort_marker(config: &StoreConfig) -> io::Result<(std::fs::File, bool)> {
    let lock = lock_store(config)?;
    let crashed = config.abort_path().exists();
    std::fs::write(config.abort_path(), b"").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("creating {}: {e}", config.abort_path().display()),
        )
    })?;
    Ok((lock, crashed))
}

/// Where the recovery scan of the CommitLog starts, and what the checkpoint says is durable.
#[derive(Clone, Copy)]
struct RecoveryStart {
    recover_from: u64,
    known_durable: u64,
}

fn recovery_start(
    config: &StoreConfig,
    checkpoint: Option<Checkpoint>,
    crashed: bool,
) -> RecoveryStart {
    let base = shard_base_offset(config.shard_id);
    let mut recover_from = checkpoint.map_or(base, |c| c.recover_from.max(base));
    // The log is durable below `log_flushed`; the queues only below `recover_from`.
    let known_durable = checkpoint.map_or(base, |c| c.log_flushed.max(base));
    if crashed {
        // After a crash, validate the whole segment holding the checkpoint (as RocketMQ
        // rescans whole files): damage anywhere in the newest data is found and cut there.
        recover_from = base + (recover_from - base) / config.segment_bytes * config.segment_bytes;
    }
    RecoveryStart {
        recover_from,
        known_durable,
    }
}

/// Opens the CommitLog (scanning from `start`, cutting a torn tail, re-dispatching what it
/// scans), rewrites durably what the checkpoint did not cover, and cuts the queues to match.
async fn recover_log(
    config: &StoreConfig,
    start: RecoveryStart,
    crashed: bool,
    queues: &mut QueueTable,
    index: &mut IndexService,
    deleted_topics: &DeletedTopics,
) -> io::Result<CommitLog> {
    let RecoveryStart {
        recover_from,
        known_durable,
    } = start;
    let (log, redispatched, redispatched_ends) =
        replay_log(config, recover_from, queues, index, deleted_topics).await?;
    log.rewrite_durably(known_durable).await?;
    let end = log.write_pos();
    let scan_start = recover_from.min(end);
    let truncated = truncate_queues(queues, &redispatched_ends, scan_start);
    // Segments deleted by retention leave entries in the oldest ConsumeQueue files: a queue
    // starts past them, as it did before the restart (GET_MIN_OFFSET answered 0 otherwise).
    let log_min = log.min_offset();
    for queue in queues.values_mut() {
        queue.skip_below(log_min);
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
    Ok(log)
}

/// Per queue, the end of what the re-dispatch wrote: its true end (see `truncate_queues`).
type RedispatchedEnds = HashMap<(String, i32), u64>;

/// Opens the CommitLog from `recover_from`, dispatching every record the scan finds to the
/// queues and the index; returns the log, how many records it re-dispatched, and where.
async fn replay_log(
    config: &StoreConfig,
    recover_from: u64,
    queues: &mut QueueTable,
    index: &mut IndexService,
    deleted_topics: &DeletedTopics,
) -> io::Result<(CommitLog, u64, RedispatchedEnds)> {
    let settings = CommitLogSettings {
        dir: config.commit_log_dir(),
        base_offset: shard_base_offset(config.shard_id),
        segment_bytes: config.segment_bytes,
        chunk_bytes: config.chunk_bytes,
        memory_window_bytes: config.memory_window_bytes,
        prewrite_segments: config.prewrite_segments,
        dsync_writes: config.flush_mode == FlushMode::Sync,
        storage: config.storage.clone(),
    };
    let mut redispatched = 0u64;
    let mut dispatch_error = None;
    let mut redispatched_ends = RedispatchedEnds::new();
    let log = CommitLog::open(
        settings,
        recover_from,
        config.check_crc_on_recover,
        |pos, bytes| {
            let Ok(record) = message::decode_record(bytes, false) else {
                return;
            };
            if deleted_topics.covers(&record.topic, pos) {
                return; // the topic was deleted after this record: its queues stay gone
            }
            redispatched += 1;
            if let Err(e) = dispatch(
                config,
                queues,
                index,
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
            if dispatches_to_queue(record.sys_flag) {
                let end = record.queue_offset as u64 + 1;
                let key = (record.topic.to_string(), record.queue_id);
                let known = redispatched_ends.entry(key).or_default();
                *known = (*known).max(end);
            }
        },
    )
    .await?;
    if let Some(e) = dispatch_error {
        return Err(e);
    }
    Ok((log, redispatched, redispatched_ends))
}

/// Cuts every queue to what the recovered log backs; returns how many entries were cut.
fn truncate_queues(
    queues: &mut QueueTable,
    redispatched_ends: &RedispatchedEnds,
    scan_start: u64,
) -> u64 {
    // Queue entries past the last checkpoint may be anything after a power loss: lost,
    // torn (decoding as a wrong entry), or left by records the log lost. A queue that got
    // re-dispatched records ends with the last of them (they were all rewritten; what is
    // below them is durable); one that got none holds only records below the scan start.
    // (Found by the simulated-disk crash test once the queues were on it: cutting only
    // entries past the log's end served torn entries pointing into other records.)
    let mut truncated = 0;
    for queue in queues.values_mut() {
        let key = (queue.topic().to_owned(), queue.queue_id());
        truncated += match redispatched_ends.get(&key) {
            Some(&queue_end) => queue.truncate_to(queue_end),
            None => queue.truncate_to_log_end(scan_start),
        };
    }
    truncated
}

/// Opens every ConsumeQueue found on disk that this shard owns (all of its own tree, or its
/// share of the common one).
fn open_queues(config: &StoreConfig) -> io::Result<QueueTable> {
    let mut queues = QueueTable::default();
    let root = config.consume_queue_dir();
    let storage = &config.storage;
    if !storage.dir_exists(&root) {
        return Ok(queues);
    }
    for topic_name in storage.list_dir(&root)? {
        for queue in storage.list_dir(&root.join(&topic_name))? {
            let Ok(queue_id) = queue.parse::<i32>() else {
                continue;
            };
            let owner = thruster_protocol::shard::owner_of(
                &topic_name,
                queue_id,
                config.shard_count.into(),
            );
            if !config.consume_queue_per_shard && owner != usize::from(config.shard_id) {
                continue;
            }
            let cq = ConsumeQueue::open(
                storage,
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
