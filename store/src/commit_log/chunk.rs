//! The write buffer's unit: records are encoded straight into aligned chunks (`chunk_bytes`);
//! buffers are reused without zeroing, and what lies past the data is zeroed on its way to the
//! file. A chunk is active while appended to, then sealed: immutable and shared with writes and
//! readers.

use std::rc::Rc;

use super::segment::Segment;
use crate::runtime::IoBuffer;

pub(super) enum ChunkData {
    /// Still being appended to.
    Active(IoBuffer),
    /// Full (or its segment rolled): immutable, shareable with writers and readers.
    Sealed(Rc<IoBuffer>),
    /// Only while `seal` moves the buffer.
    Moving,
}

pub(super) struct Chunk {
    /// Global offset of the chunk's first byte (chunk-aligned within its segment).
    pub(super) start: u64,
    pub(super) segment: Rc<Segment>,
    pub(super) data: ChunkData,
    /// Bytes of the chunk holding log data.
    pub(super) written: usize,
    /// Bytes written to the file (durable once a flush syncs the segment).
    pub(super) flushed: usize,
    /// A pipelined write-out of this (sealed) chunk is in flight.
    pub(super) writing: bool,
}

impl Chunk {
    pub(super) fn bytes(&self) -> &[u8] {
        match &self.data {
            ChunkData::Active(buffer) => buffer.as_bytes(),
            ChunkData::Sealed(buffer) => buffer.as_bytes(),
            ChunkData::Moving => unreachable!("observed mid-seal"),
        }
    }

    pub(super) fn seal(&mut self) {
        if let ChunkData::Active(_) = self.data {
            let ChunkData::Active(mut buffer) =
                std::mem::replace(&mut self.data, ChunkData::Moving)
            else {
                unreachable!()
            };
            // A reused buffer holds old bytes past `written`; a sealed chunk is written whole.
            buffer.as_bytes_mut()[self.written..].fill(0);
            self.data = ChunkData::Sealed(Rc::new(buffer));
        }
    }

    pub(super) fn end(&self) -> u64 {
        self.start + self.written as u64
    }
}
