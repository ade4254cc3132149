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

fn key(topic: &str, group: &str) -> String {
    format!("{topic}@{group}")
}

impl ConsumerOffsets {
    pub fn load(path: PathBuf) -> io::Result<ConsumerOffsets> {
        let file: Option<OffsetFile> = read_json_file(&path, "consumer offsets")?;
        Ok(ConsumerOffsets {
            path,
            table: file.map(|f| f.offset_table).unwrap_or_default(),
            changes: 0,
            changes_persisted: 0,
        })
    }

    /// Stores what the client gives (RocketMQ 4.9 does no monotonicity check).
    pub fn commit(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let entry = self.table.entry(key(topic, group)).or_default();
        if entry.insert(queue_id, offset) != Some(offset) {
            self.changes += 1;
        }
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
        offsets.commit("g", "T", 0, 250);
        offsets.commit("g", "T", 1, 248);
        offsets.persist().unwrap();
        offsets.commit("g", "T", 1, 300);
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
        offsets.commit("g", "T", 0, 1);
        let first = offsets.snapshot().unwrap().expect("changed");
        offsets.commit("g", "T", 0, 2); // while `first` is being written
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
}
