//! Reads: `read_slices` hands out the stored bytes as slices (sealed chunks shared, the active
//! chunk copied, older data as file ranges for sendfile); `materialize` reads them into one
//! buffer.

use std::io;
use std::rc::Rc;

use bytes::Bytes;

use thruster_protocol::message::BLANK_BYTES;

use super::chunk::ChunkData;
use super::segment::Segment;
use super::{CommitLog, ReadError};
use crate::runtime::IoBuffer;

/// A piece of stored data, as the network layer should send it.
#[derive(Clone)]
pub enum Slice {
    /// In a sealed chunk: shared, no copy.
    Shared {
        buffer: Rc<IoBuffer>,
        start: usize,
        len: usize,
    },
    /// Copied (from the chunk still being appended to, or read from disk).
    Owned(Bytes),
    /// On disk: `len` bytes at `pos` of a segment file (for sendfile/splice).
    File {
        segment: Rc<Segment>,
        pos: u64,
        len: usize,
    },
}

impl Slice {
    pub fn len(&self) -> usize {
        match self {
            Slice::Shared { len, .. } | Slice::File { len, .. } => *len,
            Slice::Owned(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slice::Shared { start, len, .. } => write!(f, "Shared({start}+{len})"),
            Slice::Owned(b) => write!(f, "Owned({})", b.len()),
            Slice::File { segment, pos, len } => write!(f, "File({}@{pos}+{len})", segment.start),
        }
    }
}

/// Reads the slices into one buffer (disk slices with O_DIRECT reads).
pub async fn materialize(slices: &[Slice]) -> io::Result<Bytes> {
    if let [Slice::Owned(bytes)] = slices {
        return Ok(bytes.clone());
    }
    let mut out = Vec::with_capacity(slices.iter().map(Slice::len).sum());
    for slice in slices {
        match slice {
            Slice::Shared { buffer, start, len } => {
                out.extend_from_slice(&buffer.as_bytes()[*start..start + len])
            }
            Slice::Owned(bytes) => out.extend_from_slice(bytes),
            Slice::File { segment, pos, len } => {
                let bytes = segment.file.read_at(*pos, *len).await?;
                if bytes.len() != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} ends before {pos}+{len}", segment.path().display()),
                    ));
                }
                out.extend_from_slice(&bytes);
            }
        }
    }
    Ok(Bytes::from(out))
}

impl CommitLog {
    /// The stored bytes `[pos, pos + len)` as slices: memory when resident, file ranges
    /// otherwise. Only whole records should be asked for.
    pub fn read_slices(&self, pos: u64, len: usize) -> Result<Vec<Slice>, ReadError> {
        let min = self.min_offset();
        if pos < min {
            return Err(ReadError::BelowMinimum { pos, min });
        }
        let end = pos + len as u64;
        if end > self.write_pos {
            return Err(ReadError::PastEnd {
                pos,
                len,
                end: self.write_pos,
            });
        }
        let memory_start = self.chunks.front().map_or(self.write_pos, |c| c.start);
        let mut slices = Vec::with_capacity(1);
        let mut at = pos;
        if at < memory_start {
            let segment_start = self.segment_start_of(at);
            let Some(segment) = self.segments.get(&segment_start) else {
                return Err(ReadError::BelowMinimum { pos, min });
            };
            let disk_end = end.min(memory_start);
            slices.push(Slice::File {
                segment: segment.clone(),
                pos: at - segment_start,
                len: (disk_end - at) as usize,
            });
            at = disk_end;
        }
        if at < end {
            self.memory_slices(at, end, &mut slices);
        }
        debug_assert_eq!(slices.iter().map(Slice::len).sum::<usize>(), len);
        Ok(slices)
    }
}

impl CommitLog {
    /// The log's bytes from `pos` as they are, for a slave: at most up to `end`, which must not
    /// pass the end of `pos`'s segment. Stops early where memory holds nothing (the padding
    /// after a BLANK record, which only exists on disk): the BLANK's length says where the
    /// next segment starts, so nothing after it is needed.
    pub fn read_raw(&self, pos: u64, end: u64) -> Result<Vec<Slice>, ReadError> {
        let min = self.min_offset();
        if pos < min {
            return Err(ReadError::BelowMinimum { pos, min });
        }
        let segment_start = self.segment_start_of(pos);
        assert!(end <= segment_start + self.settings.segment_bytes);
        let end = end.min(self.write_pos.max(pos));
        let memory_start = self.chunks.front().map_or(self.write_pos, |c| c.start);
        let mut slices = Vec::with_capacity(2);
        let mut at = pos;
        if at < memory_start && at < end {
            let Some(segment) = self.segments.get(&segment_start) else {
                return Err(ReadError::BelowMinimum { pos, min });
            };
            let disk_end = end.min(memory_start);
            slices.push(Slice::File {
                segment: segment.clone(),
                pos: at - segment_start,
                len: (disk_end - at) as usize,
            });
            at = disk_end;
        }
        self.memory_slices(at, end, &mut slices);
        Ok(slices)
    }

    /// Adds the memory chunks' slices of `[at, end)`: sealed chunks shared, the active one
    /// copied. Stops early at a gap, which only the padding after a BLANK leaves (it exists
    /// on disk only).
    fn memory_slices(&self, mut at: u64, end: u64, slices: &mut Vec<Slice>) {
        let first = self.chunks.partition_point(|c| c.end() <= at);
        for chunk in self.chunks.iter().skip(first) {
            if at >= end || chunk.start > at {
                break;
            }
            let from = (at - chunk.start) as usize;
            let to = (end.min(chunk.end()) - chunk.start) as usize;
            match &chunk.data {
                ChunkData::Sealed(buffer) => slices.push(Slice::Shared {
                    buffer: buffer.clone(),
                    start: from,
                    len: to - from,
                }),
                ChunkData::Active(buffer) => slices.push(Slice::Owned(Bytes::copy_from_slice(
                    &buffer.as_bytes()[from..to],
                ))),
                ChunkData::Moving => unreachable!("observed mid-seal"),
            }
            at = chunk.start + to as u64;
        }
    }

    /// Asks the kernel to read `[pos, pos + len)` of its segment file ahead (a slave catching
    /// up will ask for it next: the disk works while the slave digests the last answer).
    /// Nothing for data still in memory.
    pub fn prefetch(&self, pos: u64, len: u64) {
        let memory_start = self.chunks.front().map_or(self.write_pos, |c| c.start);
        if pos >= memory_start || pos < self.min_offset() {
            return;
        }
        let segment_start = self.segment_start_of(pos);
        let Some(segment) = self.segments.get(&segment_start) else {
            return;
        };
        let end = (pos + len)
            .min(memory_start)
            .min(segment_start + self.settings.segment_bytes);
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the advice only starts readahead.
        unsafe {
            libc::posix_fadvise(
                segment.reader.as_raw_fd(),
                (pos - segment_start) as libc::off_t,
                (end - pos) as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Where a record of `len` bytes appended now would start: here, or at the next segment
    /// when it does not fit with room for a BLANK (the rule `append` follows).
    pub fn next_record_start(&self, len: usize) -> u64 {
        let segment_end = self.segment_start_of(self.write_pos) + self.settings.segment_bytes;
        if self.write_pos + len as u64 + BLANK_BYTES as u64 > segment_end {
            segment_end
        } else {
            self.write_pos
        }
    }
}
