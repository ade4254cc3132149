//! The memory window: chunk buffers come from a pool of evicted ones, and written chunks leave
//! memory, oldest first, once the chunks exceed `memory_window_bytes`. Unwritten data is never
//! evicted (appends wait for a flush instead), so memory is bounded.

use std::rc::Rc;

use super::chunk::{Chunk, ChunkData};
use super::CommitLog;
use crate::runtime::{self, IoBuffer};

impl CommitLog {
    /// A chunk buffer, reused when one is free. Not zeroed: zeroing every chunk cost as much
    /// as copying the data into it (8 % of the store bench). Bytes past a chunk's `written`
    /// are never served, and are zeroed on their way to the file (`seal`, `pending_write`).
    pub(super) fn take_chunk_buffer(&mut self) -> IoBuffer {
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

    pub(super) fn chunk_buffers_max(&self) -> u64 {
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

    /// Drops written chunks from the front while memory exceeds the window.
    pub(super) fn evict(&mut self) {
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
}
