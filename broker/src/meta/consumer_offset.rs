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
    /// Changed since the last persist.
    dirty: bool,
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
            dirty: false,
        })
    }

    /// Stores what the client gives (RocketMQ 4.9 does no monotonicity check).
    pub fn commit(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let entry = self.table.entry(key(topic, group)).or_default();
        if entry.insert(queue_id, offset) != Some(offset) {
            self.dirty = true;
        }
    }

    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.table.get(&key(topic, group))?.get(&queue_id).copied()
    }

    /// Writes the table if it changed.
    pub fn persist(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let file = OffsetFile {
            offset_table: self.table.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        write_file_atomically(&self.path, &bytes)?;
        self.dirty = false;
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
}
