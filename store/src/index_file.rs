//! IndexFile: lookup of messages by key (`KEYS` elements and `UNIQ_KEY`) within a time range.
//!
//! Layout (big-endian), `slots` hash slots and `entries` entries:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | beginTimestamp: store time of the first indexed message (ms) |
//! | 8 | 8 | endTimestamp |
//! | 16 | 8 | beginPhyOffset |
//! | 24 | 8 | endPhyOffset |
//! | 32 | 4 | hashSlotCount: slots in use |
//! | 36 | 4 | indexCount: next entry number; starts at 1 (entry 0 is never used) |
//! | 40 | 4 × slots | slot: number of the newest entry of the slot, 0 = empty |
//! | 40 + 4 × slots | 20 × entries | entry: key hash (4), commitlog offset (8), seconds since beginTimestamp (4), previous entry of the slot (4) |
//!
//! Key = `topic#key`; hash = |Java String.hashCode| (MIN_VALUE becomes 0); slot = hash % slots.
//! Files are named by creation time, `yyyyMMddHHmmssSSS` local time, under `index/<shard>/`;
//! a new one starts when the newest is full, continuing its end values.

use std::io;
use std::path::{Path, PathBuf};

use thruster_protocol::message::java_string_hash;

use super::mapped_file::{self, MappedFile, SyncHandle};
use super::storage::Storage;

const HEADER_BYTES: usize = 40;
const SLOT_BYTES: usize = 4;
const ENTRY_BYTES: usize = 20;

pub fn file_bytes(slots: u32, entries: u32) -> u64 {
    HEADER_BYTES as u64
        + u64::from(slots) * SLOT_BYTES as u64
        + u64::from(entries) * ENTRY_BYTES as u64
}

/// The non-negative hash RocketMQ uses for index keys.
pub fn key_hash(key: &str) -> u32 {
    let hash = java_string_hash(key);
    if hash == i32::MIN {
        0
    } else {
        hash.unsigned_abs()
    }
}

pub struct IndexFile {
    map: MappedFile,
    slots: u32,
    entries: u32,
    pub begin_timestamp: i64,
    pub end_timestamp: i64,
    pub begin_phy_offset: u64,
    pub end_phy_offset: u64,
    slot_count: u32,
    index_count: u32,
    /// Written since the last sync handle was taken.
    dirty: bool,
}

impl IndexFile {
    /// Opens `path`, creating it with the header continuing `previous` (end phy offset, end
    /// timestamp) when new.
    pub fn open(
        storage: &Storage,
        path: &Path,
        slots: u32,
        entries: u32,
        previous: Option<(u64, i64)>,
    ) -> io::Result<IndexFile> {
        let mut map = MappedFile::open(storage, path, file_bytes(slots, entries), false)?;
        // The header and the hash slots (written anywhere) get their disk space now; entries
        // are reserved as they are appended (`put`).
        map.reserve(HEADER_BYTES + slots as usize * SLOT_BYTES)?;
        // A file that existed has its header; a new one (all zeros) gets it here.
        let existed = map.bytes()[..HEADER_BYTES].iter().any(|b| *b != 0);
        let mut file = IndexFile {
            map,
            slots,
            entries,
            begin_timestamp: 0,
            end_timestamp: 0,
            begin_phy_offset: 0,
            end_phy_offset: 0,
            slot_count: 0,
            index_count: 1,
            dirty: false,
        };
        if existed {
            let b = file.map.bytes();
            let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
            let i32_at = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
            file.begin_timestamp = i64_at(0);
            file.end_timestamp = i64_at(8);
            file.begin_phy_offset = i64_at(16) as u64;
            file.end_phy_offset = i64_at(24) as u64;
            file.slot_count = i32_at(32) as u32;
            file.index_count = (i32_at(36) as u32).clamp(1, entries);
        } else if let Some((end_phy, end_ts)) = previous {
            file.begin_phy_offset = end_phy;
            file.end_phy_offset = end_phy;
            file.begin_timestamp = end_ts;
            file.end_timestamp = end_ts;
            file.write_header();
        } else {
            file.write_header();
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        self.map.path()
    }

    pub fn is_full(&self) -> bool {
        self.index_count >= self.entries
    }

    /// Whether anything was indexed.
    pub fn is_empty(&self) -> bool {
        self.index_count <= 1
    }

    fn write_header(&mut self) {
        let (begin_ts, end_ts, begin_phy, end_phy, slot_count, index_count) = (
            self.begin_timestamp,
            self.end_timestamp,
            self.begin_phy_offset,
            self.end_phy_offset,
            self.slot_count,
            self.index_count,
        );
        self.dirty = true;
        let b = self.map.bytes_mut_range(0, HEADER_BYTES);
        b[0..8].copy_from_slice(&begin_ts.to_be_bytes());
        b[8..16].copy_from_slice(&end_ts.to_be_bytes());
        b[16..24].copy_from_slice(&(begin_phy as i64).to_be_bytes());
        b[24..32].copy_from_slice(&(end_phy as i64).to_be_bytes());
        b[32..36].copy_from_slice(&(slot_count as i32).to_be_bytes());
        b[36..40].copy_from_slice(&(index_count as i32).to_be_bytes());
    }

    fn slot_at(&self, slot: u32) -> usize {
        HEADER_BYTES + slot as usize * SLOT_BYTES
    }

    fn entry_at(&self, number: u32) -> usize {
        HEADER_BYTES + self.slots as usize * SLOT_BYTES + number as usize * ENTRY_BYTES
    }

    fn read_u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.map.bytes()[at..at + 4].try_into().expect("4 bytes"))
    }

    /// Indexes `key` for the record at `phys_offset`; false when the file is full, an error
    /// when the file system has no room for the entry (nothing written).
    pub fn put(&mut self, key: &str, phys_offset: u64, store_timestamp: i64) -> io::Result<bool> {
        if self.is_full() {
            return Ok(false);
        }
        self.map
            .reserve(self.entry_at(self.index_count) + ENTRY_BYTES)?;
        let hash = key_hash(key);
        let slot = hash % self.slots;
        let slot_at = self.slot_at(slot);
        let mut previous = self.read_u32(slot_at);
        if previous >= self.index_count {
            previous = 0; // garbage from a crash: treat as empty
        }
        let time_diff = if self.begin_timestamp <= 0 {
            0
        } else {
            ((store_timestamp - self.begin_timestamp) / 1000).clamp(0, i64::from(i32::MAX)) as i32
        };
        let number = self.index_count;
        let entry_at = self.entry_at(number);
        let b = self.map.bytes_mut_range(entry_at, ENTRY_BYTES);
        b[0..4].copy_from_slice(&(hash as i32).to_be_bytes());
        b[4..12].copy_from_slice(&(phys_offset as i64).to_be_bytes());
        b[12..16].copy_from_slice(&time_diff.to_be_bytes());
        b[16..20].copy_from_slice(&(previous as i32).to_be_bytes());
        self.map
            .bytes_mut_range(slot_at, SLOT_BYTES)
            .copy_from_slice(&(number as i32).to_be_bytes());
        if self.index_count <= 1 {
            self.begin_phy_offset = phys_offset;
            self.begin_timestamp = store_timestamp;
        }
        if previous == 0 {
            self.slot_count += 1;
        }
        self.index_count += 1;
        self.end_phy_offset = phys_offset;
        self.end_timestamp = store_timestamp;
        self.write_header();
        Ok(true)
    }

    /// Whether the file's time range overlaps `[begin, end]`.
    pub fn time_matches(&self, begin: i64, end: i64) -> bool {
        (begin < self.begin_timestamp && end > self.end_timestamp)
            || (begin >= self.begin_timestamp && begin <= self.end_timestamp)
            || (end >= self.begin_timestamp && end <= self.end_timestamp)
    }

    /// Commitlog offsets of entries whose hash matches `key` and whose time is in
    /// `[begin, end]`, newest first, at most `max` in `out`. Hash collisions are possible; the
    /// caller re-checks the key on the records.
    pub fn query(&self, key: &str, begin: i64, end: i64, max: usize, out: &mut Vec<u64>) {
        let hash = key_hash(key);
        let mut number = self.read_u32(self.slot_at(hash % self.slots));
        let mut steps = 0u32;
        while number > 0 && number < self.index_count && out.len() < max && steps < self.entries {
            steps += 1; // bounded walk even over a corrupt chain
            let at = self.entry_at(number);
            let b = self.map.bytes();
            let entry_hash = u32::from_be_bytes(b[at..at + 4].try_into().expect("4"));
            let phys = i64::from_be_bytes(b[at + 4..at + 12].try_into().expect("8"));
            let diff = i32::from_be_bytes(b[at + 12..at + 16].try_into().expect("4"));
            let previous = u32::from_be_bytes(b[at + 16..at + 20].try_into().expect("4"));
            let time = self.begin_timestamp + i64::from(diff) * 1000;
            if entry_hash == hash && time >= begin && time <= end && phys >= 0 {
                out.push(phys as u64);
            }
            if previous == number || time < begin {
                break;
            }
            number = previous;
        }
    }

    pub fn sync_handle(&mut self) -> SyncHandle {
        self.dirty = false;
        self.map.sync_handle()
    }

    /// Drops the mapping; the file is left for the caller to delete (off the reactor).
    pub fn unmap(self) -> PathBuf {
        self.map.unmap()
    }
}

/// The index files of a shard, oldest first.
pub struct IndexService {
    storage: Storage,
    dir: PathBuf,
    slots: u32,
    entries: u32,
    files: Vec<IndexFile>,
    /// Reused for each `topic#key` (a put indexes a key or two per message).
    key_scratch: String,
}

impl IndexService {
    pub fn open(
        storage: &Storage,
        dir: &Path,
        slots: u32,
        entries: u32,
    ) -> io::Result<IndexService> {
        storage.create_dir_all(dir)?;
        let mut names: Vec<String> = storage
            .list_dir(dir)?
            .into_iter()
            .filter(|n| n.len() == 17 && n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            files.push(IndexFile::open(
                storage,
                &dir.join(name),
                slots,
                entries,
                None,
            )?);
        }
        Ok(IndexService {
            storage: storage.clone(),
            dir: dir.to_owned(),
            slots,
            entries,
            files,
            key_scratch: String::new(),
        })
    }

    /// Commitlog end of what is indexed (re-dispatch after a crash skips records below it).
    pub fn end_phy_offset(&self) -> Option<u64> {
        self.files
            .iter()
            .rev()
            .find(|f| !f.is_empty())
            .map(|f| f.end_phy_offset)
    }

    /// Indexes `topic#key` for each key of a record.
    pub fn put_keys<'k>(
        &mut self,
        topic: &str,
        keys: impl Iterator<Item = &'k str>,
        phys_offset: u64,
        store_timestamp: i64,
    ) -> io::Result<()> {
        if self.end_phy_offset().is_some_and(|end| phys_offset <= end) {
            return Ok(()); // indexed before the restart
        }
        let mut full_key = std::mem::take(&mut self.key_scratch);
        let result = self.put_keys_with(&mut full_key, topic, keys, phys_offset, store_timestamp);
        self.key_scratch = full_key;
        result
    }

    fn put_keys_with<'k>(
        &mut self,
        full_key: &mut String,
        topic: &str,
        keys: impl Iterator<Item = &'k str>,
        phys_offset: u64,
        store_timestamp: i64,
    ) -> io::Result<()> {
        for key in keys.filter(|k| !k.is_empty()) {
            full_key.clear();
            full_key.push_str(topic);
            full_key.push('#');
            full_key.push_str(key);
            if !self
                .current()?
                .put(full_key, phys_offset, store_timestamp)?
            {
                let file = self.files.last().expect("current() created one");
                let previous = Some((file.end_phy_offset, file.end_timestamp));
                self.open_next(previous)?;
                let ok = self.files.last_mut().expect("pushed").put(
                    full_key,
                    phys_offset,
                    store_timestamp,
                )?;
                debug_assert!(ok);
            }
        }
        Ok(())
    }

    fn current(&mut self) -> io::Result<&mut IndexFile> {
        if self.files.is_empty() {
            self.open_next(None)?;
        }
        Ok(self.files.last_mut().expect("non-empty"))
    }

    /// Starts a new index file after `previous` (its end offset and timestamp, if any).
    fn open_next(&mut self, previous: Option<(u64, i64)>) -> io::Result<()> {
        let path = self.new_file_path(crate::runtime::now_ms());
        let file = IndexFile::open(&self.storage, &path, self.slots, self.entries, previous)?;
        self.files.push(file);
        Ok(())
    }

    fn new_file_path(&self, now_ms: i64) -> PathBuf {
        let name = local_time_name(now_ms);
        // Names must grow: two files within one millisecond (tiny test indexes) or a clock that
        // went back would otherwise collide or sort wrongly.
        let last = self
            .files
            .last()
            .and_then(|f| f.path().file_name()?.to_str()?.parse::<u64>().ok());
        let name = match (name.parse::<u64>(), last) {
            (Ok(n), Some(last)) if n <= last => format!("{:017}", last + 1),
            _ => name,
        };
        self.dir.join(name)
    }

    /// Offsets of records indexed under `topic#key` with store time in `[begin, end]`, newest
    /// files first, at most `max`.
    pub fn query(&self, topic: &str, key: &str, max: usize, begin: i64, end: i64) -> Vec<u64> {
        let full_key = format!("{topic}#{key}");
        let mut out = Vec::new();
        for file in self.files.iter().rev() {
            if out.len() >= max {
                break;
            }
            if file.time_matches(begin, end) {
                file.query(&full_key, begin, end, max, &mut out);
            }
        }
        out
    }

    /// (last update timestamp, last indexed commitlog offset), for QUERY_MESSAGE responses.
    pub fn last_update(&self) -> (i64, u64) {
        self.files
            .last()
            .map_or((0, 0), |f| (f.end_timestamp, f.end_phy_offset))
    }

    /// Sync handles of the files written since the last call: not only the newest, or a
    /// file that filled up between two checkpoints would keep its last entries unsynced.
    pub fn sync_handles(&mut self) -> Vec<SyncHandle> {
        self.files
            .iter_mut()
            .filter(|f| f.dirty)
            .map(IndexFile::sync_handle)
            .collect()
    }

    /// After a crash: every index file (data and name) is synced by the next checkpoint.
    pub fn assume_unsynced(&mut self) {
        for file in &mut self.files {
            file.dirty = true;
            // index/<shard>/ and index/.
            file.map.assume_unsynced(2);
        }
    }

    /// Deletes files whose every entry points below `log_min`, keeping the newest.
    pub fn delete_below(&mut self, log_min: u64, doomed: &mut super::doomed::Doomed) {
        while self.files.len() > 1 && self.files[0].end_phy_offset < log_min {
            doomed.paths.push(self.files.remove(0).unmap());
        }
    }

    /// Drops index files newer than `timestamp` after a crash (they are rebuilt by re-dispatch).
    pub fn sync_all(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        mapped_file::sync_all(self.files.iter_mut().map(IndexFile::sync_handle).collect())
    }
}

/// `yyyyMMddHHmmssSSS` in local time, as Java names index files.
pub fn local_time_name(ms: i64) -> String {
    let secs = ms.div_euclid(1000) as libc::time_t;
    let millis = ms.rem_euclid(1000);
    // SAFETY: localtime_r writes into the `tm` we own; a zeroed tm is a valid initial value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("{:017}", ms.max(0));
    }
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_chains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("20260101000000000");
        let mut file = IndexFile::open(&Storage::Real, &path, 4, 16, None).unwrap();
        let t0 = 1_700_000_000_000;
        assert!(file.put("T#a", 100, t0).unwrap());
        assert!(file.put("T#b", 200, t0 + 1_500).unwrap());
        assert!(file.put("T#a", 300, t0 + 3_000).unwrap());
        let mut out = Vec::new();
        file.query("T#a", t0, t0 + 10_000, 10, &mut out);
        assert_eq!(out, vec![300, 100]);
        out.clear();
        file.query("T#a", t0 + 2_000, t0 + 10_000, 10, &mut out);
        assert_eq!(out, vec![300]);
        assert_eq!(file.index_count, 4);
        drop(file);
        // Byte positions of the reference layout.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, file_bytes(4, 16));
        assert_eq!(&bytes[0..8], &t0.to_be_bytes());
        assert_eq!(&bytes[36..40], &4i32.to_be_bytes());
        let entry1 = 40 + 4 * 4 + 20;
        assert_eq!(
            &bytes[entry1..entry1 + 4],
            &(key_hash("T#a") as i32).to_be_bytes()
        );
        assert_eq!(&bytes[entry1 + 4..entry1 + 12], &100i64.to_be_bytes());
        let file = IndexFile::open(&Storage::Real, &path, 4, 16, None).unwrap();
        let mut out = Vec::new();
        file.query("T#b", 0, i64::MAX, 10, &mut out);
        assert_eq!(out, vec![200]);
    }

    #[test]
    fn service_rolls_files_and_skips_what_was_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = IndexService::open(&Storage::Real, dir.path(), 8, 4).unwrap();
        let t0 = 1_700_000_000_000;
        for i in 0..10u64 {
            service
                .put_keys(
                    "T",
                    ["k", &format!("u{i}")].into_iter(),
                    i * 10,
                    t0 + i as i64,
                )
                .unwrap();
        }
        assert!(service.files.len() > 3, "rolled");
        assert_eq!(service.query("T", "k", 100, 0, i64::MAX).len(), 10);
        assert_eq!(service.query("T", "u7", 100, 0, i64::MAX), vec![70]);
        assert!(service.query("U", "k", 100, 0, i64::MAX).is_empty());
        service.put_keys("T", ["k"].into_iter(), 50, t0).unwrap(); // re-dispatch: skipped
        assert_eq!(service.query("T", "k", 100, 0, i64::MAX).len(), 10);
        drop(service);
        let service = IndexService::open(&Storage::Real, dir.path(), 8, 4).unwrap();
        assert_eq!(service.query("T", "k", 3, 0, i64::MAX), vec![90, 80, 70]);
        assert_eq!(service.end_phy_offset(), Some(90));
        assert_eq!(key_hash("polygenelubricants"), 0);
        assert_eq!(local_time_name(0).len(), 17);
    }
}
