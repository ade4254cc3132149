//! Flushes: a plan is built under the log's borrow and executed without it. Per dirty chunk it
//! writes either the whole chunk without copying (a sealed chunk never written before) or the
//! dirty aligned range copied into a transient buffer (the partial tail block is rewritten as it
//! fills); on O_DSYNC segments a group commit spanning chunks goes out as one write per segment.
//! One flush at a time per shard, so two writes of the same tail block can never race. Between
//! flushes, sealed chunks are written out ahead, each its own write, without fdatasync
//! (`next_chunk_write`, up to `WRITES_IN_FLIGHT_MAX` in flight), so a flush has less to write.

use std::io;
use std::rc::Rc;

use super::chunk::{Chunk, ChunkData};
use super::segment::{align_down, align_up, Segment, BLOCK_BYTES};
use super::CommitLog;
use crate::runtime::{self, IoBuffer};

/// Writes in flight at once, in a flush and in the async write-out pipeline. Busy writers keep
/// the reactor from reaping completions (and submitting new writes) until they block or the
/// task quota ends, so the queue must outlast those stretches, not just cover the device's
/// latency. The store bench saw its chunk writes take 2.5 ms from start to reaped completion
/// at 8 in flight (the device needs about 1 ms for 2 MiB), which capped 1 KiB appends near
/// 8 x 256 KiB / 2.5 ms; 32 in flight (8 MiB, an eighth of the default memory window) lifted
/// the cap and cut window waits by 4, while raw writes are as fast at 8 as at 32. Segments
/// are allocated ahead, so these writes never wait in io_uring's worker threads.
/// The default of `StoreConfig::writes_in_flight_max` (`thruster-tune probe` may raise it).
pub const WRITES_IN_FLIGHT_MAX: usize = 32;
/// Coalesced group-commit write buffers kept for reuse, and the largest kept (a group can be as
/// large as the memory window; keeping those would hold that much memory for good).
const COPY_BUFFERS_MAX: usize = 4;
const COPY_BUFFER_KEPT_BYTES_MAX: usize = 4 << 20;

/// What a flush must write; built under the log's borrow, executed without it.
pub struct FlushPlan {
    pub target: u64,
    /// Whether the plan ends with fdatasync (durability) or only writes sealed chunks out.
    pub sync: bool,
    pub(super) writes: Vec<FlushWrite>,
    pub(super) synced: Vec<Rc<Segment>>,
    /// (chunk start, flushed bytes once done).
    pub(super) marks: Vec<(u64, usize)>,
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

pub(super) enum FlushWrite {
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
    /// [`FlushPlan::execute_bounded`] with the default bound.
    pub async fn execute(&mut self) -> io::Result<()> {
        self.execute_bounded(WRITES_IN_FLIGHT_MAX).await
    }

    /// Performs the writes (concurrently, about `writes_in_flight_max` at a time) and, for a
    /// sync plan, one fdatasync per segment written since the last sync.
    pub async fn execute_bounded(&mut self, writes_in_flight_max: usize) -> io::Result<()> {
        // A bounded number in flight: writes that extend a file queue up in io_uring's workers.
        let mut pending = std::mem::take(&mut self.writes)
            .into_iter()
            .map(FlushWrite::execute);
        loop {
            let batch: Vec<_> = pending.by_ref().take(writes_in_flight_max * 2).collect();
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

impl Chunk {
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

impl CommitLog {
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

    /// The writes that make everything appended so far durable (ending with fdatasync);
    /// `None` when nothing is dirty. No pipelined write-out may be in flight (the fdatasync
    /// must cover every write before it).
    pub fn plan_flush(&mut self) -> Option<FlushPlan> {
        if self.write_pos == self.flushed_pos {
            return None;
        }
        debug_assert!(
            self.chunks.iter().all(|c| !c.writing),
            "a durable flush is planned while a write-out is in flight"
        );
        Some(self.plan(true))
    }

    /// ASYNC_FLUSH: the writes (no fdatasync) that put everything appended so far, and not
    /// already being written, in the files (the kernel's hands: it then survives a crash of the
    /// process); `None` when nothing is left to write. The chunks it covers are marked
    /// `writing` until `complete_flush` or `abort_flush`, so the pipelined write-out never
    /// writes them at the same time.
    pub fn plan_write_out(&mut self) -> Option<FlushPlan> {
        self.chunks
            .iter()
            .any(|c| c.flushed < c.written && !c.writing)
            .then(|| self.plan(false))
    }

    /// Where the first byte not yet written to the files is (written, maybe not synced):
    /// everything below it was handed to the kernel by a completed write.
    pub fn written_pos(&self) -> u64 {
        self.chunks
            .iter()
            .find(|c| c.flushed < c.written)
            .map_or(self.write_pos, |c| c.start + c.flushed as u64)
    }

    /// A plan's writes failed: its chunks will be written again.
    pub fn abort_flush(&mut self, plan: &FlushPlan) {
        for (start, _) in &plan.marks {
            if let Some(chunk) = self.chunks.iter_mut().find(|c| c.start == *start) {
                chunk.writing = false;
            }
        }
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
        // Chunks a pipelined write-out is writing are left to it (never two writes of one
        // chunk at once; a durable plan has none, see `plan_flush`).
        let dirty: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| self.chunks[i].flushed < self.chunks[i].written && !self.chunks[i].writing)
            .collect();
        for &i in &dirty {
            let chunk = &self.chunks[i];
            if !plan.synced.iter().any(|s| Rc::ptr_eq(s, &chunk.segment)) {
                plan.synced.push(chunk.segment.clone());
            }
            plan.marks.push((chunk.start, chunk.written));
            self.chunks[i].writing = true;
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
                chunk.writing = false;
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
}
