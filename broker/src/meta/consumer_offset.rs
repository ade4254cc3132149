//! Committed consumer offsets of the queues one shard owns. The owner is the only reader and
//! writer (offset requests hop to it), so no lock; each shard persists its own file,
//! `config/consumerOffset-<shard>.json`, in RocketMQ's shape
//! (`{"offsetTable":{"<topic>@<group>":{"<queueId>":<offset>}}}`, standard JSON keys).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{read_json_file, write_file_atomically};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct OffsetFile {
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

#[derive(Debug)]
pub struct ConsumerOffsets {
    path: PathBuf,
    table: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Changes made to the table (each commit that moved an offset counts one).
    changes: u64,
    /// `changes` as of the last snapshot that reached the disk.
    changes_persisted: u64,
    /// Accounted memory of `table` ([`entry_bytes`]), at most [`OFFSET_TABLE_BYTES_MAX`]
    /// (a loaded file may exceed it; then only existing entries move).
    table_bytes: usize,
}

/// A serialized table and where it goes: taken on the reactor (the table is owned there),
/// written and fdatasynced off it ([`OffsetSnapshot::write`]).
#[derive(Debug)]
pub struct OffsetSnapshot {
    path: PathBuf,
    bytes: Vec<u8>,
    changes: u64,
}

impl OffsetSnapshot {
    /// Blocking: a temporary file, fdatasync, rename. Run it off the reactor.
    pub fn write(&self) -> io::Result<()> {
        write_file_atomically(&self.path, &self.bytes)
    }
}

/// Memory the table of one shard may take, as accounted by [`entry_bytes`]: clients choose
/// groups, topics and queue ids, so the table refuses new entries past it (existing ones still
/// move).
pub const OFFSET_TABLE_BYTES_MAX: usize = 64 << 20;
/// What one `topic@group` key costs besides its text (map node, String, inner map).
const KEY_OVERHEAD_BYTES: usize = 96;
/// What one queue's offset costs in an inner map.
const QUEUE_ENTRY_BYTES: usize = 32;

/// The accounted memory of a new queue entry under `key` (and of the key, when it is new).
fn entry_bytes(key: &str, key_is_new: bool) -> usize {
    QUEUE_ENTRY_BYTES
        + if key_is_new {
            key.len() + KEY_OVERHEAD_BYTES
        } else {
            0
        }
}

/// A commit refused because the table is at [`OFFSET_TABLE_BYTES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consumer offset table full ({table_bytes} of {OFFSET_TABLE_BYTES_MAX} bytes): {key} queue {queue_id} not stored")]
pub struct OffsetTableFull {
    pub key: String,
    pub queue_id: i32,
    pub table_bytes: usize,
}

fn key(topic: &str, group: &str) -> String {
    format!("{topic}@{group}")
}

impl ConsumerOffsets {
    pub fn load(path: PathBuf) -> io::Result<ConsumerOffsets> {
        let file: Option<OffsetFile> = read_json_file(&path, "consumer offsets")?;
        let table: BTreeMap<String, BTreeMap<i32, i64>> =
            file.map(|f| f.offset_table).unwrap_or_default();
        let table_bytes = table
            .iter()
            .map(|(k, queues)| entry_bytes(k, true) + (queues.len() - 1) * QUEUE_ENTRY_BYTES)
            .sum();
        Ok(ConsumerOffsets {
            path,
            table,
            table_bytes,
            changes: 0,
            changes_persisted: 0,
        })
    }

    /// Stores what the client gives (RocketMQ 4.9 does no monotonicity check), unless that
    /// needs a new entry and the table is full.
    pub fn commit(
        &mut self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), OffsetTableFull> {
        let key = key(topic, group);
        let queues = self.table.get(&key);
        if queues.is_none_or(|q| !q.contains_key(&queue_id)) {
            let grown_bytes = self.table_bytes + entry_bytes(&key, queues.is_none());
            if grown_bytes > OFFSET_TABLE_BYTES_MAX {
                return Err(OffsetTableFull {
                    key,
                    queue_id,
                    table_bytes: self.table_bytes,
                });
            }
            self.table_bytes = grown_bytes;
        }
        let entry = self.table.entry(key).or_default();
        if entry.insert(queue_id, offset) != Some(offset) {
            self.changes += 1;
        }
        Ok(())
    }

    /// A commit of the broker's own (delayed-delivery progress: one entry per delay level),
    /// never refused, so clients filling the table cannot stop delayed delivery.
    pub fn commit_internal(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let key = key(topic, group);
        let queues = self.table.get(&key);
        if queues.is_none_or(|q| !q.contains_key(&queue_id)) {
            self.table_bytes += entry_bytes(&key, queues.is_none());
        }
        if self.table.entry(key).or_default().insert(queue_id, offset) != Some(offset) {
            self.changes += 1;
        }
    }

    /// Accounted memory of the table, at most [`OFFSET_TABLE_BYTES_MAX`] once it is full.
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.table.get(&key(topic, group))?.get(&queue_id).copied()
    }

    /// The table to write, if it changed since the last snapshot that was written.
    pub fn snapshot(&self) -> io::Result<Option<OffsetSnapshot>> {
        if self.changes == self.changes_persisted {
            return Ok(None);
        }
        let file = OffsetFile {
            offset_table: self.table.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        Ok(Some(OffsetSnapshot {
            path: self.path.clone(),
            bytes,
            changes: self.changes,
        }))
    }

    /// Records that `snapshot` reached the disk.
    pub fn persisted(&mut self, snapshot: &OffsetSnapshot) {
        self.changes_persisted = self.changes_persisted.max(snapshot.changes);
    }

    /// Writes the table if it changed, on this thread (tests, tools).
    pub fn persist(&mut self) -> io::Result<()> {
        if let Some(snapshot) = self.snapshot()? {
            snapshot.write()?;
            self.persisted(&snapshot);
        }
        Ok(())
    }

    /// Forgets every offset of `group` (DELETE_SUBSCRIPTIONGROUP with `removeOffset`); the
    /// number of `topic@group` keys removed.
    pub fn remove_group(&mut self, group: &str) -> usize {
        let suffix = format!("@{group}");
        self.remove_keys(|key| key.ends_with(&suffix))
    }

    /// Forgets every offset of `topic` (its deletion).
    pub fn remove_topic(&mut self, topic: &str) -> usize {
        let prefix = format!("{topic}@");
        self.remove_keys(|key| key.starts_with(&prefix))
    }

    fn remove_keys(&mut self, doomed: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<String> = self.table.keys().filter(|k| doomed(k)).cloned().collect();
        for key in &keys {
            if let Some(queues) = self.table.remove(key) {
                self.table_bytes -=
                    entry_bytes(key, true) + queues.len().saturating_sub(1) * QUEUE_ENTRY_BYTES;
                self.changes += 1;
            }
        }
        keys.len()
    }

    /// Topics `group` has offsets for.
    pub fn topics_of_group(&self, group: &str) -> std::collections::BTreeSet<String> {
        self.table
            .keys()
            .filter_map(|k| k.split_once('@'))
            .filter(|(_, g)| *g == group)
            .map(|(t, _)| t.to_owned())
            .collect()
    }

    /// Groups with offsets for `topic`.
    pub fn groups_of_topic(&self, topic: &str) -> std::collections::BTreeSet<String> {
        self.table
            .keys()
            .filter_map(|k| k.split_once('@'))
            .filter(|(t, _)| *t == topic)
            .map(|(_, g)| g.to_owned())
            .collect()
    }

    /// Copies `src`'s offsets of `topic` (every topic when `None`) to `dest` (CLONE_GROUP_OFFSET);
    /// entries the table has no room for are left out and counted in the error.
    pub fn clone_group(
        &mut self,
        src: &str,
        dest: &str,
        topic: Option<&str>,
    ) -> Result<usize, OffsetTableFull> {
        let copies: Vec<(String, i32, i64)> = self
            .table
            .iter()
            .filter_map(|(k, queues)| k.split_once('@').map(|(t, g)| (t, g, queues)))
            .filter(|(t, g, _)| *g == src && topic.is_none_or(|wanted| wanted == *t))
            .flat_map(|(t, _, queues)| queues.iter().map(move |(q, o)| (t.to_owned(), *q, *o)))
            .collect();
        for (t, queue_id, offset) in &copies {
            self.commit(dest, t, *queue_id, *offset)?;
        }
        Ok(copies.len())
    }

    /// Every (topic@group, queue, offset), for admin and tests.
    pub fn entries(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.table
            .iter()
            .flat_map(|(k, q)| q.iter().map(move |(id, off)| (k.as_str(), *id, *off)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_reload_and_read_fastjson_bare_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/consumerOffset-0.json");
        let mut offsets = ConsumerOffsets::load(path.clone()).unwrap();
        assert_eq!(offsets.query("g", "T", 0), None);
        offsets.commit("g", "T", 0, 250).unwrap();
        offsets.commit("g", "T", 1, 248).unwrap();
        offsets.persist().unwrap();
        offsets.commit("g", "T", 1, 300).unwrap();
        offsets.persist().unwrap();
        let reloaded = ConsumerOffsets::load(path.clone()).unwrap();
        assert_eq!(reloaded.query("g", "T", 0), Some(250));
        assert_eq!(reloaded.query("g", "T", 1), Some(300));
        assert_eq!(reloaded.entries().count(), 2);
        // A file as Java writes it (bare integer keys) loads too.
        std::fs::write(&path, r#"{"offsetTable":{"T@g":{0:7,3:9}}}"#).unwrap();
        let java = ConsumerOffsets::load(path).unwrap();
        assert_eq!(java.query("g", "T", 3), Some(9));
    }

    #[test]
    fn a_commit_made_while_a_snapshot_is_written_is_persisted_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumerOffset-0.json");
        let mut offsets = ConsumerOffsets::load(path.clone()).unwrap();
        offsets.commit("g", "T", 0, 1).unwrap();
        let first = offsets.snapshot().unwrap().expect("changed");
        offsets.commit("g", "T", 0, 2).unwrap(); // while `first` is being written
        first.write().unwrap();
        offsets.persisted(&first);
        let second = offsets
            .snapshot()
            .unwrap()
            .expect("the later commit is not on disk");
        second.write().unwrap();
        offsets.persisted(&second);
        assert!(
            offsets.snapshot().unwrap().is_none(),
            "nothing left to write"
        );
        let reloaded = ConsumerOffsets::load(path).unwrap();
        assert_eq!(reloaded.query("g", "T", 0), Some(2));
    }

    #[test]
    fn new_entries_are_refused_past_the_memory_bound_and_old_ones_still_move() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = ConsumerOffsets::load(dir.path().join("o.json")).unwrap();
        let mut stored = 0;
        let refused = loop {
            match offsets.commit(&format!("group-{stored}"), "T", 0, 1) {
                Ok(()) => stored += 1,
                Err(full) => break full,
            }
            assert!(stored < OFFSET_TABLE_BYTES_MAX, "never full");
        };
        assert!(offsets.table_bytes() <= OFFSET_TABLE_BYTES_MAX);
        assert!(refused.to_string().contains("full"), "{refused}");
        assert_eq!(offsets.query("group-0", "T", 0), Some(1));
        offsets
            .commit("group-0", "T", 0, 9)
            .expect("an existing entry moves");
        assert_eq!(offsets.query("group-0", "T", 0), Some(9));
        assert!(
            offsets.commit("group-0", "T", 1, 9).is_err(),
            "a new queue is an entry"
        );
        assert_eq!(offsets.entries().count(), stored);
    }
}
