//! Durability: the flusher (group commit under SYNC_FLUSH; pipelined write-out and interval
//! fdatasync under ASYNC_FLUSH), the segment preparer, the ConsumeQueue/index sync with the
//! checkpoint, and the coarse clock SYNC_FLUSH deadlines are read from.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::checkpoint::Checkpoint;
use super::commit_log::{self};
use super::config::FlushMode;
use super::consume_queue::{ConsumeQueue, SyncPolicy};
use super::mapped_file;
use super::message_store::MessageStore;
use crate::runtime;
use crate::runtime::tasks::StopSignal;

/// Pause before the flusher retries a failed write or sync.
const FLUSH_RETRY_WAIT: Duration = Duration::from_millis(200);
/// Pause before the preparer retries a segment it could not prepare (ENOSPC, typically).
const SEGMENT_RETRY_WAIT: Duration = Duration::from_millis(500);
/// The clock ticks this many times per `syncFlushTimeout` (at most every 100 ms).
const CLOCK_TICKS_PER_TIMEOUT: u64 = 20;
/// ConsumeQueues a periodic checkpoint pass syncs at most (each an fdatasync, a device flush,
/// on the helper thread), so queues created or written together (a thousand topics created at
/// once) do not all come due in one pass and flood the device the CommitLog writes to: past it
/// the longest unsynced go first and the checkpoint stays behind the others. 10 000 queues of
/// a shard each written within `flushConsumeQueueThoroughInterval` (60 s) need 167 per
/// one-second pass; past 15 000 such queues per shard the checkpoint falls behind.
pub const QUEUE_SYNCS_PER_PASS_MAX: usize = 256;

impl MessageStore {
    pub(super) fn request_flush(&self) {
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

    /// Starts pipelined writes of sealed chunks until `writes_in_flight_max` are in flight.
    fn start_chunk_writes(self: &Rc<Self>) {
        while self.writes_in_flight.get() < self.config.writes_in_flight_max {
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
                    Ok(()) => {
                        s.log
                            .borrow_mut()
                            .complete_chunk_write(start, written, &segment);
                        s.advance_written();
                    }
                    Err(e) => {
                        s.log.borrow_mut().abort_chunk_write(start);
                        s.write_failed(&e);
                    }
                }
                s.written_out.advance(s.written_out.get() + 1);
                // Keep the pipeline full without waiting for the flusher to come round.
                if !s.tasks.is_stopping() {
                    s.start_chunk_writes();
                }
            });
        }
    }

    /// Moves `written` to the log's first byte not yet written (answering the ASYNC_FLUSH
    /// puts below it).
    fn advance_written(&self) {
        let written = self.log.borrow().written_pos();
        self.written.advance(written);
    }

    /// A write-out failed: its data is still in memory and is written again (the flusher
    /// plans it anew); until then puts are refused, and the puts waiting for it are answered
    /// with the error now (`wait_reached`).
    fn write_failed(&self, e: &io::Error) {
        error!(error = %e, "commit log write-out failed; will retry");
        *self.state.flush_error.borrow_mut() = Some(e.to_string());
        self.write_out_planned_to.set(self.written.get());
        self.written.wake_all();
        self.flushed.wake_all();
    }

    /// ASYNC_FLUSH: writes (no fdatasync) everything appended and not yet being written: one
    /// write per dirty chunk, the partial tail block copied. Every put that arrived before it
    /// is answered by this one write-out (group commit). Returns whether it succeeded.
    async fn write_out_once(&self) -> bool {
        let appended = self.appended.get();
        let Some(mut plan) = self.log.borrow_mut().plan_write_out() else {
            self.write_out_planned_to.set(appended);
            return true;
        };
        self.write_out_planned_to.set(plan.target);
        let started = std::time::Instant::now();
        let result = plan.execute_bounded(self.config.writes_in_flight_max).await;
        self.count(|stats| {
            stats.write_outs += 1;
            stats.write_out_us += started.elapsed().as_micros() as u64;
        });
        match result {
            Ok(()) => {
                self.log.borrow_mut().complete_flush(&plan);
                self.advance_written();
                self.written_out.advance(self.written_out.get() + 1);
                // A write error is over once a write succeeds (a failed fdatasync is not:
                // `sync_failed` keeps refusing, and `flush_once` keeps failing).
                if self.state.sync_failed.borrow().is_none()
                    && self.state.flush_error.borrow_mut().take().is_some()
                {
                    info!("commit log write-out recovered");
                }
                true
            }
            Err(e) => {
                self.log.borrow_mut().abort_flush(&plan);
                self.written_out.advance(self.written_out.get() + 1);
                self.write_failed(&e);
                false
            }
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
        let started = std::time::Instant::now();
        if let Err(e) = plan.execute_bounded(self.config.writes_in_flight_max).await {
            self.log.borrow_mut().abort_flush(&plan);
            if plan.sync_failed() {
                *self.state.sync_failed.borrow_mut() = Some(format!(
                    "{e}; writes refused until the broker restarts (data since the last \
                     successful fdatasync cannot be trusted)"
                ));
            }
            return Err(e);
        }
        self.log.borrow_mut().complete_flush(&plan);
        self.advance_written();
        self.written_out.advance(self.written_out.get() + 1);
        self.last_flush_ms.set(runtime::now_ms());
        let flushed_bytes = plan.target - self.flushed.get();
        self.count(|stats| {
            stats.flushes += 1;
            stats.flushed_bytes += flushed_bytes;
            stats
                .flush_latency
                .observe(started.elapsed().as_micros() as u64);
            stats.flush_group_bytes.observe(flushed_bytes);
        });
        self.flushed.advance(plan.target);
        if self.config.flush_mode == FlushMode::Sync {
            self.visible.advance(plan.target);
        }
        Ok(true)
    }

    /// Syncs every written ConsumeQueue and the index, then writes the checkpoint: shutdown,
    /// recovery and explicit checkpoints.
    pub(super) async fn sync_queues_and_checkpoint(&self) -> io::Result<()> {
        self.checkpoint_pass(SyncPolicy::ALL, usize::MAX).await
    }

    /// One checkpoint pass: syncs the ConsumeQueues `policy` says are due (the longest
    /// unsynced first, at most `queues_max` of them) and the index, then writes a checkpoint
    /// that recovers from the first entry a queue left unsynced still holds (or from what is
    /// flushed, if none).
    pub(super) async fn checkpoint_pass(
        &self,
        policy: SyncPolicy,
        queues_max: usize,
    ) -> io::Result<()> {
        // Everything below `flushed` is durable in the log, and was dispatched (inline)
        // before this point, so syncing the dirty queue and index files makes it durable there.
        let log_flushed = self.flushed.get();
        let (handles, synced_queues, unsynced_from) = self.take_due_queues(policy, queues_max);
        let recover_from = log_flushed.min(unsynced_from);
        let mut handles = handles;
        handles.extend(self.index.borrow_mut().sync_handles());
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
            log_flushed,
        };
        checkpoint
            .store(&self.config.storage, &self.config.checkpoint_path())
            .await?;
        self.last_checkpoint.set(checkpoint);
        self.last_checkpoint_ms.set(now);
        self.count(|stats| stats.queue_syncs += synced_queues as u64);
        Ok(())
    }

    /// Takes the sync handles of the queues due under `policy` (the longest unsynced first,
    /// at most `queues_max`); returns them, how many queues they cover, and the lowest
    /// CommitLog position a queue left unsynced holds an entry for (`u64::MAX`: none).
    fn take_due_queues(
        &self,
        policy: SyncPolicy,
        queues_max: usize,
    ) -> (Vec<mapped_file::SyncHandle>, usize, u64) {
        let now = Instant::now();
        let mut queues = self.queues.borrow_mut();
        let mut due: Vec<(Instant, &mut ConsumeQueue)> = queues
            .values_mut()
            .filter_map(|q| q.sync_due(policy, now).map(|since| (since, q)))
            .collect();
        if due.len() > queues_max {
            due.select_nth_unstable_by_key(queues_max, |(since, _)| *since);
            due.truncate(queues_max);
        }
        let synced = due.len();
        let mut handles = Vec::new();
        for (_, queue) in due {
            handles.extend(queue.take_dirty());
        }
        let unsynced_from = queues
            .values_mut()
            .filter_map(|q| q.unsynced_from())
            .min()
            .unwrap_or(u64::MAX);
        (handles, synced, unsynced_from)
    }
}

pub(super) async fn flush_loop(store: std::rc::Weak<MessageStore>, stop: StopSignal) {
    loop {
        if stop.is_set() {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        // Wait for work: any append under SYNC_FLUSH (group commit: whatever arrived while the
        // previous flush ran goes in this one); enough dirty bytes or the interval under ASYNC.
        let flush_due = match s.config.flush_mode {
            FlushMode::Sync => {
                wait_for_append(&s, &stop).await;
                gather_group(&s).await;
                true
            }
            FlushMode::Async => wait_for_async_flush(&s, &stop).await,
        };
        if !flush_due {
            continue;
        }
        if stop.is_set() {
            return; // a crash simulation must not flush on its way out
        }
        s.flush_requests_served.set(s.flush_requests.get());
        if !flush_and_report(&s).await {
            drop(s);
            stop.sleep(FLUSH_RETRY_WAIT).await;
        }
    }
}

/// SYNC_FLUSH: waits for anything appended past what is flushed (or for the stop).
async fn wait_for_append(s: &MessageStore, stop: &StopSignal) {
    let flushed = s.flushed.get();
    let appended = &s.appended;
    futures_lite::future::or(
        async {
            appended.wait_for(flushed + 1).await;
        },
        stop.wait(),
    )
    .await;
}

/// SYNC_FLUSH: while the group is smaller than `group_commit_bytes` (a size the disk syncs
/// for about the cost of the smallest write, from `io-properties.json`), lets the tasks already
/// runnable on this reactor run once, so puts that arrived with this one join its group. No
/// timer: a put alone on the shard waits one scheduling round, not a deadline.
async fn gather_group(s: &MessageStore) {
    if s.appended.get().saturating_sub(s.flushed.get()) < s.config.group_commit_bytes {
        futures_lite::future::yield_now().await;
    }
}

/// ASYNC_FLUSH: keeps the write-out going (sealed chunks pipelined as they fill; whatever
/// puts are waiting for, written as one group) and waits for a reason to fdatasync; returns
/// whether one is due, having let the pipelined writes finish (fdatasync must cover them).
async fn wait_for_async_flush(s: &Rc<MessageStore>, stop: &StopSignal) -> bool {
    // Stream sealed chunks to the disk as they fill, a few writes always in flight
    // (big writes, no copy, no sync); fdatasync on the interval or when asked.
    s.start_chunk_writes();
    // Requests already served are not waited for again; one that arrived while the
    // previous flush ran is still pending and makes this wait return at once.
    let served = s.flush_requests_served.get();
    wait_for_flush_work(s, stop, served).await;
    if stop.is_set() {
        return false;
    }
    if s.appended.get() > s.write_out_planned_to.get() {
        // Puts wait for this write (they are answered once their bytes are in the kernel's
        // hands): let the ones already runnable join it first, as under SYNC_FLUSH.
        gather_group(s).await;
        if !s.write_out_once().await {
            stop.sleep(FLUSH_RETRY_WAIT).await;
            return false;
        }
    }
    if !sync_due(s, served) {
        return false;
    }
    // fdatasync must cover the pipelined writes: let them finish first.
    let written_out = &s.written_out;
    while s.writes_in_flight.get() > 0 {
        let seen_written = written_out.get();
        written_out.wait_for(seen_written + 1).await;
    }
    true
}

/// ASYNC_FLUSH: waits for an append past the last write-out's plan (a put waits for its
/// write), a finished write-out, a flush request past `served`, or the flush interval (at most
/// 200 ms), whichever comes first.
async fn wait_for_flush_work(s: &MessageStore, stop: &StopSignal, served: u64) {
    let appended = &s.appended;
    let requests = &s.flush_requests;
    let written_out = &s.written_out;
    let planned_to = s.write_out_planned_to.get();
    let seen_written = written_out.get();
    let interval = Duration::from_millis(s.config.flush_interval_ms.min(200));
    futures_lite::future::or(
        futures_lite::future::or(
            async {
                appended.wait_for(planned_to + 1).await;
            },
            async {
                written_out.wait_for(seen_written + 1).await;
            },
        ),
        futures_lite::future::or(
            async {
                requests.wait_for(served + 1).await;
            },
            async {
                stop.sleep(interval).await;
            },
        ),
    )
    .await;
}

/// ASYNC_FLUSH: whether to fdatasync now: asked to (a request past `served`), enough dirty
/// bytes once the interval passed (`flushCommitLogLeastPages`), or the thorough interval passed.
fn sync_due(s: &MessageStore, served: u64) -> bool {
    let since_flush_ms = runtime::now_ms() - s.last_flush_ms.get();
    s.flush_requests.get() > served
        || (since_flush_ms >= s.config.flush_interval_ms as i64
            && s.log.borrow().unflushed_bytes() >= s.config.flush_least_bytes)
        || since_flush_ms >= s.config.flush_thorough_interval_ms as i64
}

/// Flushes once, recording a failure (waking the waiters so they see it) or the recovery
/// from one; returns whether the flush succeeded.
async fn flush_and_report(s: &MessageStore) -> bool {
    match s.flush_once().await {
        Ok(_) => {
            if s.state.flush_error.borrow_mut().take().is_some() {
                info!("commit log flush recovered");
            }
            true
        }
        Err(e) => {
            error!(error = %e, "commit log flush failed; retrying");
            *s.state.flush_error.borrow_mut() = Some(e.to_string());
            s.flushed.wake_all();
            false
        }
    }
}

/// Ticks `clock_ms` at a twentieth of the sync flush timeout (at most every 100 ms).
pub(super) async fn clock_loop(store: std::rc::Weak<MessageStore>, stop: StopSignal) {
    let Some(tick_ms) = store
        .upgrade()
        .map(|s| (s.config.sync_flush_timeout_ms / CLOCK_TICKS_PER_TIMEOUT).clamp(1, 100))
    else {
        return;
    };
    while stop.sleep(Duration::from_millis(tick_ms)).await {
        let Some(s) = store.upgrade() else { return };
        s.clock_ms.advance(runtime::now_ms().max(0) as u64);
    }
}

pub(super) async fn prepare_loop(store: std::rc::Weak<MessageStore>, stop: StopSignal) {
    let mut served_rolls = 0u64;
    loop {
        if stop.is_set() {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        // Prepare the next segment once the active one is half used (earlier only competes
        // with the writer for the disk), or at once when a writer is waiting for it.
        // Read before deciding, so a request that arrives while preparing is not slept through.
        let rolled = s.segments_rolled.get();
        let wanted = rolled > served_rolls;
        // Where the active segment is half used.
        let half_point = {
            let log = s.log.borrow();
            log.segment_start_of(log.write_pos()) + s.config.segment_bytes / 2
        };
        let half_used = s.log.borrow().write_pos() >= half_point;
        let due = !s.log.borrow().has_next_segment() && (wanted || half_used);
        if due && (wanted || s.may_prepare_ahead()) {
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
                    stop.sleep(SEGMENT_RETRY_WAIT).await;
                    continue;
                }
            }
        }
        // Woken by a writer that needs the next segment, by the writer crossing the active
        // segment's half, or (that point passed) by the writer moving into the next segment,
        // whose own half is then waited for; or by the stop.
        let (rolled_mark, appended) = (&s.segments_rolled, &s.appended);
        let half_reached = half_used || s.log.borrow().has_next_segment();
        // (past the active segment's end: a put now writes into the next one)
        let wake_at = match half_reached {
            true => half_point - s.config.segment_bytes / 2 + s.config.segment_bytes + 1,
            false => half_point,
        };
        futures_lite::future::or(
            futures_lite::future::or(
                async {
                    rolled_mark.wait_for(rolled + 1).await;
                },
                async {
                    appended.wait_for(wake_at).await;
                },
            ),
            stop.wait(),
        )
        .await;
    }
}

impl MessageStore {
    /// Whether a segment may be prepared before a writer needs it: not once the disk is past
    /// `diskMaxUsedSpaceRatio`, where a segment's worth of allocation or zeros (on a restart,
    /// right away) could push it over `diskSpaceCleanForciblyRatio` and delete unconsumed
    /// data; a writer that needs the segment still gets it. Reads the usage last measured (at
    /// open, before the preparer starts, then by every retention pass): the preparer never
    /// waits for a measure, so a writer waiting for a segment never does either.
    fn may_prepare_ahead(&self) -> bool {
        match self.state.disk_used_percent.get() {
            Some(used) if used >= self.config.disk_max_used_space_ratio => {
                self.count(|stats| stats.segments_not_prepared_ahead += 1);
                info!(
                    used_percent = used,
                    max_used_ratio = self.config.disk_max_used_space_ratio,
                    "disk nearly full: the next commit log segment is prepared when a write needs it, not ahead"
                );
                false
            }
            _ => true,
        }
    }
}

pub(super) async fn checkpoint_loop(store: std::rc::Weak<MessageStore>, stop: StopSignal) {
    loop {
        // Due `flushIntervalConsumeQueue` after the last checkpoint (shutdown and the flusher
        // take some too).
        let Some(wait_ms) = store.upgrade().map(|s| {
            let interval = s.config.flush_consume_queue_interval_ms as i64;
            (s.last_checkpoint_ms.get() + interval - runtime::now_ms()).clamp(1, interval.max(1))
        }) else {
            return;
        };
        if !stop.sleep(Duration::from_millis(wait_ms as u64)).await {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        let interval = s.config.flush_consume_queue_interval_ms as i64;
        if runtime::now_ms() - s.last_checkpoint_ms.get() < interval {
            continue;
        }
        let policy = SyncPolicy {
            least_pages: s.config.flush_consume_queue_least_pages,
            thorough_interval: Duration::from_millis(
                s.config.flush_consume_queue_thorough_interval_ms,
            ),
        };
        if let Err(e) = s.checkpoint_pass(policy, QUEUE_SYNCS_PER_PASS_MAX).await {
            warn!(error = %e, "consume queue sync / checkpoint failed");
        }
    }
}
