//! ConsumeQueue: the index of one (topic, queue): entry i is the i-th message of the queue.
//!
//! Entry (20 bytes, big-endian): commitlog offset (8) | record size (4) | tag hash code (8).
//! Files hold `entries_per_file` entries (300 000 = 6 000 000 bytes by default) and are named by
//! the 20-digit logical byte offset of their first entry, under
//! `consumequeue/<topic>/<queueId>/`. A filler entry (offset 0, size `i32::MAX`) pads a queue
//! whose first file does not start at its first entry.
//!
//! Entries are placed at the index given by the record's QUEUEOFFSET, so dispatching a record
//! twice (recovery re-dispatch) writes the same bytes twice: idempotent.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::PAGE_BYTES;
use super::mapped_file::{MappedFile, SyncHandle};
use super::storage::Storage;

pub const ENTRY_BYTES: u64 = 20;
const FILLER_SIZE: i32 = i32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub phys_offset: u64,
    pub size: u32,
    pub tags_code: i64,
}

impl CqEntry {
    pub fn end(&self) -> u64 {
        self.phys_offset + u64::from(self.size)
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&(self.phys_offset as i64).to_be_bytes());
        out[8..12].copy_from_slice(&(self.size as i32).to_be_bytes());
        out[12..20].copy_from_slice(&self.tags_code.to_be_bytes());
    }

    /// `None` for an empty slot; fillers decode with `size == i32::MAX`.
    fn decode(bytes: &[u8]) -> Option<CqEntry> {
        let phys = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let size = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let tags_code = i64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes"));
        (phys >= 0 && size > 0).then_some(CqEntry {
            phys_offset: phys as u64,
            size: size as u32,
            tags_code,
        })
    }

    fn is_filler(&self) -> bool {
        self.size == FILLER_SIZE as u32
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CqError {
    #[error("queue {queue}: entry {offset} leaves a gap after {max}")]
    Gap {
        queue: String,
        offset: u64,
        max: u64,
    },
    #[error("queue {queue}: writing entry {offset}: {error}")]
    Io {
        queue: String,
        offset: u64,
        error: String,
    },
}

/// A shard's ConsumeQueues, by topic then queue id, so that a lookup by `&str` neither
/// allocates nor hashes a (String, i32) key: every put looks its queue up.
#[derive(Default)]
pub struct QueueTable {
    topics: HashMap<String, HashMap<i32, ConsumeQueue>>,
}

impl QueueTable {
    pub fn get(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue> {
        self.topics.get(topic)?.get(&queue_id)
    }

    pub fn get_mut(&mut self, topic: &str, queue_id: i32) -> Option<&mut ConsumeQueue> {
        self.topics.get_mut(topic)?.get_mut(&queue_id)
    }

    /// The queue, from `open` when not in the table yet.
    pub fn get_or_open(
        &mut self,
        topic: &str,
        queue_id: i32,
        open: impl FnOnce() -> io::Result<ConsumeQueue>,
    ) -> io::Result<&mut ConsumeQueue> {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_owned(), HashMap::new());
        }
        let queues = self.topics.get_mut(topic).expect("inserted");
        match queues.entry(queue_id) {
            Entry::Occupied(queue) => Ok(queue.into_mut()),
            Entry::Vacant(slot) => Ok(slot.insert(open()?)),
        }
    }

    pub fn insert(&mut self, queue: ConsumeQueue) {
        self.topics
            .entry(queue.topic.clone())
            .or_default()
            .insert(queue.queue_id, queue);
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ConsumeQueue> {
        self.topics.values_mut().flat_map(HashMap::values_mut)
    }

    /// Takes every queue of `topic` out of the table.
    pub fn remove_topic(&mut self, topic: &str) -> Vec<ConsumeQueue> {
        self.topics
            .remove(topic)
            .map(|queues| queues.into_values().collect())
            .unwrap_or_default()
    }

    /// The topics with queues in the table.
    pub fn topics(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    /// Every (topic, queue id), sorted.
    pub fn ids(&self) -> Vec<(String, i32)> {
        let mut ids: Vec<_> = self
            .topics
            .iter()
            .flat_map(|(topic, queues)| queues.keys().map(|id| (topic.clone(), *id)))
            .collect();
        ids.sort();
        ids
    }
}

pub struct ConsumeQueue {
    storage: Storage,
    topic: String,
    queue_id: i32,
    dir: PathBuf,
    entries_per_file: u64,
    files: BTreeMap<u64, MappedFile>,
    /// First readable entry.
    min_offset: u64,
    /// Next entry to be written.
    max_offset: u64,
    /// Files written since the last sync (by first entry).
    dirty: std::collections::BTreeSet<u64>,
    /// Since when the queue has writes no sync covers (`None`: none).
    unsynced: Option<Unsynced>,
}

/// A queue's writes since its last sync: what decides when a checkpoint pass syncs it, and how
/// far back the checkpoint must stay while it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unsynced {
    /// The lowest CommitLog position of an entry written since the sync: the checkpoint's
    /// `recover_from` stays at or below it until the queue is synced.
    first_pos: u64,
    /// When the first of those writes happened (a monotonic clock: a wall clock set back
    /// must not keep a queue unsynced).
    since: Instant,
    /// The queue's end (entries) at that first write: the dirty pages are counted from it.
    from_entry: u64,
    /// Written where the count from `from_entry` says nothing (a cut tail, a failed sync, a
    /// crash): due at the next pass, and `first_pos` is 0 (nothing of it is known durable).
    forced: bool,
}

/// When a checkpoint pass syncs a queue's files (RocketMQ's `flushConsumeQueueLeastPages` and
/// `flushConsumeQueueThoroughInterval`): syncing every written queue every pass costs one
/// fdatasync (a device flush) and one write fault per queue and second, which grows with the
/// number of queues written, not with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Synced once this many 4 KiB pages were written since its last sync.
    pub least_pages: u64,
    /// Synced once its oldest unsynced write is this old.
    pub thorough_interval: Duration,
}

impl SyncPolicy {
    /// Every queue with a write is due (shutdown, recovery, explicit checkpoints).
    pub const ALL: SyncPolicy = SyncPolicy {
        least_pages: 0,
        thorough_interval: Duration::ZERO,
    };
}

impl ConsumeQueue {
    pub fn dir_for(root: &Path, topic: &str, queue_id: i32) -> PathBuf {
        root.join(topic).join(queue_id.to_string())
    }

    /// Opens the queue's files and finds its bounds: the max offset is the first empty slot
    /// after the last file's valid entries.
    pub fn open(
        storage: &Storage,
        root: &Path,
        topic: &str,
        queue_id: i32,
        entries_per_file: u64,
    ) -> io::Result<ConsumeQueue> {
        let dir = Self::dir_for(root, topic, queue_id);
        let mut queue = ConsumeQueue {
            storage: storage.clone(),
            topic: topic.to_owned(),
            queue_id,
            dir,
            entries_per_file,
            files: BTreeMap::new(),
            min_offset: 0,
            max_offset: 0,
            dirty: Default::default(),
            unsynced: None,
        };
        if storage.dir_exists(&queue.dir) {
            for name in storage.list_dir(&queue.dir)? {
                let name = name.as_str();
                let Ok(byte_offset) = name.parse::<u64>() else {
                    continue;
                };
                if name.len() != 20 || byte_offset % (entries_per_file * ENTRY_BYTES) != 0 {
                    continue;
                }
                let first = byte_offset / ENTRY_BYTES;
                let file = MappedFile::open(
                    storage,
                    &queue.dir.join(name),
                    entries_per_file * ENTRY_BYTES,
                    true,
                )?;
                queue.files.insert(first, file);
            }
        }
        if let Some((&first, _)) = queue.files.iter().next() {
            queue.min_offset = first;
            queue.max_offset = first;
            // Valid entries are contiguous from the start of the first file.
            'files: for (&file_first, file) in &queue.files {
                if file_first != queue.max_offset {
                    break;
                }
                for i in 0..entries_per_file {
                    let at = (i * ENTRY_BYTES) as usize;
                    if CqEntry::decode(&file.bytes()[at..at + ENTRY_BYTES as usize]).is_none() {
                        queue.max_offset = file_first + i;
                        break 'files;
                    }
                }
                queue.max_offset = file_first + entries_per_file;
            }
            while queue.min_offset < queue.max_offset
                && queue.entry(queue.min_offset).is_some_and(|e| e.is_filler())
            {
                queue.min_offset += 1;
            }
            // Files wholly past the end (after a gap or a torn tail) hold nothing readable.
            let keep_until = queue.file_first(queue.max_offset);
            let stale: Vec<u64> = queue
                .files
                .range(keep_until + 1..)
                .map(|(k, _)| *k)
                .collect();
            for first in stale {
                if let Some(file) = queue.files.remove(&first) {
                    file.remove(storage)?;
                }
            }
        }
        Ok(queue)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    pub fn max_offset(&self) -> u64 {
        self.max_offset
    }

    fn file_first(&self, offset: u64) -> u64 {
        offset / self.entries_per_file * self.entries_per_file
    }

    /// The entry at `offset`, if it is within the queue's bounds.
    pub fn get(&self, offset: u64) -> Option<CqEntry> {
        if offset < self.min_offset || offset >= self.max_offset {
            return None;
        }
        self.entry(offset)
    }

    fn entry(&self, offset: u64) -> Option<CqEntry> {
        let file = self.files.get(&self.file_first(offset))?;
        let at = ((offset % self.entries_per_file) * ENTRY_BYTES) as usize;
        CqEntry::decode(&file.bytes()[at..at + ENTRY_BYTES as usize])
    }

    /// Places `entry` at `offset`. Offsets below the max are already present (re-dispatch
    /// after a restart) and are written again: an entry in a page torn at a crash may decode
    /// as a wrong one, and one that reads right may not be on the disk (a sync that failed in
    /// the dead process left its page clean in the page cache, fsyncgate), so the next sync
    /// must write it. An offset past the max is refused unless the queue is empty, in which
    /// case it starts there (padded with fillers inside its file).
    pub fn put(&mut self, offset: u64, entry: CqEntry) -> Result<(), CqError> {
        if offset < self.max_offset {
            if offset >= self.min_offset {
                self.write(offset, entry).map_err(|e| CqError::Io {
                    queue: format!("{}:{}", self.topic, self.queue_id),
                    offset,
                    error: e.to_string(),
                })?;
            }
            return Ok(());
        }
        if offset > self.max_offset {
            if self.max_offset != self.min_offset {
                return Err(CqError::Gap {
                    queue: format!("{}:{}", self.topic, self.queue_id),
                    offset,
                    max: self.max_offset,
                });
            }
            let first = self.file_first(offset);
            for filler in first.max(self.max_offset)..offset {
                self.write(
                    filler,
                    CqEntry {
                        phys_offset: 0,
                        size: FILLER_SIZE as u32,
                        tags_code: 0,
                    },
                )
                .map_err(|e| CqError::Io {
                    queue: format!("{}:{}", self.topic, self.queue_id),
                    offset,
                    error: e.to_string(),
                })?;
            }
            self.min_offset = offset;
        }
        self.write(offset, entry).map_err(|e| CqError::Io {
            queue: format!("{}:{}", self.topic, self.queue_id),
            offset,
            error: e.to_string(),
        })?;
        self.max_offset = offset + 1;
        Ok(())
    }

    fn write(&mut self, offset: u64, entry: CqEntry) -> io::Result<()> {
        let first = self.file_first(offset);
        let (file, at) = self.slot(offset)?;
        entry.encode(file.bytes_mut_range(at, ENTRY_BYTES as usize));
        self.dirty.insert(first);
        match &mut self.unsynced {
            // Fillers (position 0) point nowhere: the real entry after them carries the position.
            Some(u) if !entry.is_filler() => u.first_pos = u.first_pos.min(entry.phys_offset),
            Some(_) => {}
            None => {
                self.unsynced = Some(Unsynced {
                    first_pos: if entry.is_filler() {
                        u64::MAX
                    } else {
                        entry.phys_offset
                    },
                    since: Instant::now(),
                    from_entry: offset,
                    forced: false,
                })
            }
        }
        Ok(())
    }

    /// Marks the queue due at the next pass, with nothing of it known durable.
    fn force_unsynced(&mut self) {
        self.unsynced = Some(Unsynced {
            first_pos: 0,
            since: self.unsynced.map_or_else(Instant::now, |u| u.since),
            from_entry: self.max_offset,
            forced: true,
        });
    }

    /// The file that holds `offset` (opened or created) and the entry's byte position in it,
    /// with disk space reserved for the entry.
    fn slot(&mut self, offset: u64) -> io::Result<(&mut MappedFile, usize)> {
        let first = self.file_first(offset);
        if !self.files.contains_key(&first) {
            let path = self.dir.join(format!("{:020}", first * ENTRY_BYTES));
            let file = MappedFile::open(
                &self.storage,
                &path,
                self.entries_per_file * ENTRY_BYTES,
                true,
            )?;
            self.files.insert(first, file);
        }
        let at = ((offset % self.entries_per_file) * ENTRY_BYTES) as usize;
        let file = self.files.get_mut(&first).expect("just inserted");
        file.reserve(at + ENTRY_BYTES as usize)?;
        Ok((file, at))
    }

    /// Makes sure the next entry can be written (its file open, its disk space allocated), so
    /// a put that could not be dispatched is refused before its record is appended.
    pub fn prepare_next(&mut self) -> io::Result<()> {
        self.slot(self.max_offset).map(|_| ())
    }

    /// Removes trailing entries that reference commitlog bytes at or past `log_end` (data lost
    /// in a crash), or that do not follow the entry before them (torn at a crash: a page
    /// written back in part can hold an entry whose offset lost its low bytes). Returns how
    /// many were removed.
    pub fn truncate_to_log_end(&mut self, log_end: u64) -> u64 {
        self.truncate_while(|queue, last, e| {
            !e.is_filler()
                && e.end() <= log_end
                && (last == queue.min_offset
                    || queue
                        .entry(last - 1)
                        .is_none_or(|p| p.is_filler() || p.end() <= e.phys_offset))
        })
    }

    /// Removes the entries at `end` and past it. Returns how many were removed.
    pub fn truncate_to(&mut self, end: u64) -> u64 {
        self.truncate_while(|queue, last, _| last < end.max(queue.min_offset))
    }

    /// Removes trailing entries until `keep(queue, offset, entry)` holds for the last one.
    fn truncate_while(&mut self, keep: impl Fn(&Self, u64, &CqEntry) -> bool) -> u64 {
        let mut removed = 0;
        while self.max_offset > self.min_offset {
            let last = self.max_offset - 1;
            if let Some(e) = self.entry(last) {
                if keep(self, last, &e) {
                    break;
                }
            }
            let first = self.file_first(last);
            if let Some(file) = self.files.get_mut(&first) {
                let at = ((last % self.entries_per_file) * ENTRY_BYTES) as usize;
                // Without disk space for it the entry is not zeroed (it is past the queue's
                // end regardless, and the next recovery cuts it again).
                match file.reserve(at + ENTRY_BYTES as usize) {
                    Ok(()) => {
                        file.bytes_mut_range(at, ENTRY_BYTES as usize).fill(0);
                        self.dirty.insert(first);
                        self.force_unsynced();
                    }
                    Err(e) => tracing::warn!(error = %e, "a cut ConsumeQueue entry left as it was"),
                }
            }
            self.max_offset = last;
            removed += 1;
        }
        removed
    }

    /// The largest commitlog end referenced (0 when empty).
    pub fn max_phys_end(&self) -> u64 {
        if self.max_offset == self.min_offset {
            return 0;
        }
        self.entry(self.max_offset - 1).map_or(0, |e| e.end())
    }

    /// Marks every file dirty (after a failed sync, nothing taken is known durable).
    pub fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.files.keys().copied());
        if !self.dirty.is_empty() {
            self.force_unsynced();
        }
    }

    /// After a crash: every file (data and name, and the queue's directories) is synced by
    /// the next checkpoint, which would otherwise claim durable what the dead process wrote.
    pub fn assume_unsynced(&mut self) {
        for file in self.files.values_mut() {
            // <queue id>/, <topic>/, and the ConsumeQueue root holding the topic's name.
            file.assume_unsynced(3);
        }
        self.mark_all_dirty();
    }

    /// When the queue is due under `policy` at `now`: `Some(since)` (when its oldest unsynced
    /// write happened, which orders the due queues), `None` when it has nothing to sync or is
    /// not due yet.
    pub fn sync_due(&self, policy: SyncPolicy, now: Instant) -> Option<Instant> {
        let u = self.unsynced?;
        let pages = |entries: u64| entries * ENTRY_BYTES / PAGE_BYTES;
        let dirty_pages = pages(self.max_offset).saturating_sub(pages(u.from_entry)) + 1;
        (u.forced
            || dirty_pages >= policy.least_pages
            || now.saturating_duration_since(u.since) >= policy.thorough_interval)
            .then_some(u.since)
    }

    /// The lowest CommitLog position of an entry written since the last sync (`None`: all
    /// synced): a checkpoint that leaves the queue unsynced recovers from there at most.
    pub fn unsynced_from(&self) -> Option<u64> {
        self.unsynced.map(|u| u.first_pos)
    }

    /// Sync handles of files written since the last call.
    pub fn take_dirty(&mut self) -> Vec<SyncHandle> {
        self.unsynced = None;
        let dirty = std::mem::take(&mut self.dirty);
        self.files
            .iter_mut()
            .filter(|(first, _)| dirty.contains(first))
            .map(|(_, file)| file.sync_handle())
            .collect()
    }

    /// After commitlog segments below `log_min` were deleted: drops files whose entries all
    /// point below it and moves the min offset to the first entry at or above it.
    /// Hands every file of the queue, then its directory, to `doomed`: the queue is gone
    /// (its topic was deleted).
    pub fn destroy(self, doomed: &mut super::doomed::Doomed) {
        for file in self.files.into_values() {
            doomed.paths.push(file.unmap());
        }
        doomed.dirs.push(self.dir);
    }

    pub fn delete_below(&mut self, log_min: u64, doomed: &mut super::doomed::Doomed) {
        while self.files.len() > 1 {
            let (&first, _) = self.files.iter().next().expect("non-empty");
            let last_in_file =
                (first + self.entries_per_file - 1).min(self.max_offset.saturating_sub(1));
            match self.entry(last_in_file) {
                Some(e) if e.end() <= log_min => {
                    let file = self.files.remove(&first).expect("present");
                    self.dirty.remove(&first);
                    doomed.paths.push(file.unmap());
                }
                _ => break,
            }
        }
        let first_file = self.files.keys().next().copied().unwrap_or(self.max_offset);
        self.min_offset = self.min_offset.max(first_file);
        self.skip_below(log_min);
    }

    /// Moves the queue's start past entries whose records are below `log_min` (deleted).
    pub fn skip_below(&mut self, log_min: u64) {
        while self.min_offset < self.max_offset
            && self
                .entry(self.min_offset)
                .is_none_or(|e| e.is_filler() || e.phys_offset < log_min)
        {
            self.min_offset += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> CqEntry {
        CqEntry {
            phys_offset: i * 100,
            size: 100,
            tags_code: i as i64 - 5,
        }
    }

    #[test]
    fn entries_span_files_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 3, 10).unwrap();
        for i in 0..25 {
            q.put(i, entry(i)).unwrap();
        }
        let torn = CqEntry {
            phys_offset: 999,
            size: 1,
            tags_code: 0,
        };
        q.put(7, torn).unwrap(); // rewritten (recovery repairs torn entries this way)
        assert_eq!(q.get(7), Some(torn));
        q.put(7, entry(7)).unwrap();
        assert_eq!(q.get(7), Some(entry(7)));
        assert_eq!((q.min_offset(), q.max_offset()), (0, 25));
        assert_eq!(q.get(25), None);
        assert!(q.put(27, entry(27)).is_err(), "gaps are refused");
        assert_eq!(q.max_phys_end(), 2500);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("T/3"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.contains(&"00000000000000000200".to_string()),
            "{names:?}"
        );
        drop(q);
        let q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 3, 10).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (0, 25));
        assert_eq!(q.get(24), Some(entry(24)));
    }

    #[test]
    fn truncation_to_the_log_end_and_deletion_below_the_log_min() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 0, 10).unwrap();
        for i in 0..30 {
            q.put(i, entry(i)).unwrap();
        }
        assert_eq!(q.truncate_to_log_end(2050), 10);
        assert_eq!(q.max_offset(), 20);
        drop(q);
        let mut q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 0, 10).unwrap();
        assert_eq!(q.max_offset(), 20);
        q.put(20, entry(20)).unwrap();
        let mut doomed = crate::doomed::Doomed::default();
        q.delete_below(1_250, &mut doomed);
        // Retention deletes the taken-out files off the reactor; here, at once.
        for path in doomed.paths {
            std::fs::remove_file(path).unwrap();
        }
        assert_eq!(q.min_offset(), 13);
        assert!(!dir.path().join("T/0/00000000000000000000").exists());
        assert_eq!(q.get(12), None);
        assert_eq!(q.get(13), Some(entry(13)));
    }

    #[test]
    fn a_queue_may_start_past_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 0, 10).unwrap();
        q.put(13, entry(13)).unwrap();
        q.put(14, entry(14)).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (13, 15));
        drop(q);
        let q = ConsumeQueue::open(&Storage::Real, dir.path(), "T", 0, 10).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (13, 15));
        assert_eq!(q.get(13), Some(entry(13)));
    }
}
