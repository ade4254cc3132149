//! The store checkpoint of a shard (`checkpoint-<shard>`), one 4096-byte page:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | physicMsgTimestamp: store time of the last flushed CommitLog record |
//! | 8 | 8 | logicsMsgTimestamp: store time of the last record whose ConsumeQueue entry is durable |
//! | 16 | 8 | indexMsgTimestamp: same for the IndexFile |
//! | 24 | 8 | recoverFrom: a record boundary below which CommitLog, ConsumeQueues and index are all durable |
//! | 32 | 4 | CRC32 of bytes 0..32 (a torn page is detected and ignored) |
//! | 36 | 8 | logFlushed: the CommitLog is durable below it (at or past recoverFrom) |
//! | 44 | 4 | CRC32 of bytes 0..44 |
//!
//! The first 24 bytes are RocketMQ's; the rest is Thruster's (RocketMQ 5 uses offset 24 for
//! controller state, which Thruster does not have). `recoverFrom` lags `logFlushed` while a
//! ConsumeQueue written below it waits for its sync (`consume_queue::SyncPolicy`): recovery
//! re-dispatches from `recoverFrom` but rewrites only what lies past `logFlushed`. A page
//! written before `logFlushed` existed (its second CRC does not match) reads as
//! `logFlushed = recoverFrom`.

use std::io;
use std::path::Path;

use super::storage::Storage;

pub const PAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub physic_msg_timestamp: i64,
    pub logics_msg_timestamp: i64,
    pub index_msg_timestamp: i64,
    pub recover_from: u64,
    pub log_flushed: u64,
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE_BYTES];
        page[0..8].copy_from_slice(&self.physic_msg_timestamp.to_be_bytes());
        page[8..16].copy_from_slice(&self.logics_msg_timestamp.to_be_bytes());
        page[16..24].copy_from_slice(&self.index_msg_timestamp.to_be_bytes());
        page[24..32].copy_from_slice(&self.recover_from.to_be_bytes());
        let crc = crc32fast::hash(&page[0..32]);
        page[32..36].copy_from_slice(&crc.to_be_bytes());
        page[36..44].copy_from_slice(&self.log_flushed.to_be_bytes());
        let crc = crc32fast::hash(&page[0..44]);
        page[44..48].copy_from_slice(&crc.to_be_bytes());
        page
    }

    fn decode(page: &[u8]) -> Option<Checkpoint> {
        if page.len() < 36 {
            return None;
        }
        let crc = u32::from_be_bytes(page[32..36].try_into().ok()?);
        if crc != crc32fast::hash(&page[0..32]) {
            return None;
        }
        let i64_at = |at: usize| i64::from_be_bytes(page[at..at + 8].try_into().expect("8 bytes"));
        let recover_from = i64_at(24) as u64;
        let extended = page.len() >= 48
            && u32::from_be_bytes(page[44..48].try_into().ok()?) == crc32fast::hash(&page[0..44]);
        Some(Checkpoint {
            physic_msg_timestamp: i64_at(0),
            logics_msg_timestamp: i64_at(8),
            index_msg_timestamp: i64_at(16),
            recover_from,
            log_flushed: match extended {
                true => (i64_at(36) as u64).max(recover_from),
                false => recover_from,
            },
        })
    }

    /// Reads the checkpoint; `None` when missing or torn (recovery then scans everything).
    pub fn load(storage: &Storage, path: &Path) -> io::Result<Option<Checkpoint>> {
        Ok(storage
            .read_file(path)?
            .and_then(|page| Checkpoint::decode(&page)))
    }

    /// Writes and fdatasyncs the page, off the reactor thread.
    /// The file's name is not fsynced into its directory: a checkpoint lost with it only makes
    /// recovery scan from the start, as a torn one does.
    pub async fn store(&self, storage: &Storage, path: &Path) -> io::Result<()> {
        storage
            .write_file_synced(path, self.encode())
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("writing checkpoint: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_page_detection() {
        let c = Checkpoint {
            physic_msg_timestamp: 1,
            logics_msg_timestamp: 2,
            index_msg_timestamp: 3,
            recover_from: 1 << 56,
            log_flushed: (1 << 56) + 4096,
        };
        let page = c.encode();
        assert_eq!(page.len(), PAGE_BYTES);
        assert_eq!(Checkpoint::decode(&page), Some(c));
        let mut torn = page.clone();
        torn[25] ^= 1;
        assert_eq!(Checkpoint::decode(&torn), None);
        // A page from before `logFlushed`: the log is durable below `recoverFrom` only.
        let mut old = page.clone();
        old[36..48].fill(0);
        let old = Checkpoint::decode(&old).expect("the first 36 bytes are intact");
        assert_eq!((old.recover_from, old.log_flushed), (1 << 56, 1 << 56));
        let mut torn_tail = page.clone();
        torn_tail[40] ^= 1;
        assert_eq!(Checkpoint::decode(&torn_tail).unwrap().log_flushed, 1 << 56);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Checkpoint::load(&Storage::Real, &dir.path().join("none")).unwrap(),
            None
        );
    }
}
