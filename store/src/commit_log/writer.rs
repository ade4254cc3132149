//! Appends: a record is encoded in place into the active chunk through `ChunkWriter` (an
//! unsafe `BufMut`), crossing chunk boundaries; a record that does not fit its segment rolls to
//! the next one behind a BLANK record.

use bytes::buf::UninitSlice;
use bytes::BufMut;
use thruster_protocol::message::{BLANK_BYTES, MAGIC_BLANK};

use super::chunk::{Chunk, ChunkData};
use super::{AppendError, CommitLog};

impl CommitLog {
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
