//! A versioned table of named configs whose accounted memory is bounded: the topic table and
//! the subscription-group table are both one. Clients create entries (a send auto-creates a
//! topic, a heartbeat a group), so a new entry is refused past the bound; existing entries
//! still change and removal gives the memory back.

use std::collections::BTreeMap;

use thruster_protocol::body::DataVersion;

use crate::remoting::Failure;

/// A config the table can hold: its name, and what it costs in memory.
pub trait TableEntry: Clone + PartialEq {
    /// What the table calls its entries in messages (`topic`, `subscription group`).
    const KIND: &'static str;
    fn name(&self) -> &str;
    /// Accounted memory of the entry (its strings and a fixed overhead).
    fn bytes(&self) -> usize;
}

#[derive(Debug, Clone)]
pub struct BoundedTable<V> {
    entries: BTreeMap<String, V>,
    data_version: DataVersion,
    /// Accounted memory of `entries` (`TableEntry::bytes`).
    table_bytes: usize,
    bytes_max: usize,
}

impl<V: TableEntry> BoundedTable<V> {
    pub fn new(bytes_max: usize) -> BoundedTable<V> {
        BoundedTable {
            entries: BTreeMap::new(),
            data_version: DataVersion::default(),
            table_bytes: 0,
            bytes_max,
        }
    }

    /// Adds persisted entries (they win over built-in ones); the version never goes back.
    pub fn merge(&mut self, entries: impl IntoIterator<Item = V>, version: &DataVersion) {
        for entry in entries {
            self.insert(entry);
        }
        self.data_version.counter = self.data_version.counter.max(version.counter);
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces or adds `entry`; `true` when anything changed (and the version moved).
    pub fn upsert(&mut self, entry: V, now_ms: i64) -> bool {
        if self.entries.get(entry.name()) == Some(&entry) {
            return false;
        }
        self.insert(entry);
        self.data_version.next(now_ms);
        true
    }

    /// Adds without moving the version (building the table).
    pub fn insert(&mut self, entry: V) {
        self.table_bytes += entry.bytes();
        if let Some(old) = self.entries.insert(entry.name().to_owned(), entry) {
            self.table_bytes -= old.bytes();
        }
    }

    pub fn remove(&mut self, name: &str, now_ms: i64) -> bool {
        let removed = self.entries.remove(name);
        if let Some(old) = &removed {
            self.table_bytes -= old.bytes();
            self.data_version.next(now_ms);
        }
        removed.is_some()
    }

    /// Accounted memory of the table (the bound limits new entries).
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    /// Whether `entry` may be stored: a change to an existing entry always may; a new one
    /// only while the table stays within its bound.
    pub fn room_for(&self, entry: &V) -> Result<(), Failure> {
        let old_bytes = self.entries.get(entry.name()).map_or(0, V::bytes);
        let new_bytes = self.table_bytes - old_bytes + entry.bytes();
        if old_bytes == 0 && new_bytes > self.bytes_max {
            return Err(Failure::system(format!(
                "{kind} table full ({} of {} bytes, {} entries): {kind}[{}] not created",
                self.table_bytes,
                self.bytes_max,
                self.entries.len(),
                entry.name(),
                kind = V::KIND,
            )));
        }
        Ok(())
    }

    pub fn data_version(&self) -> &DataVersion {
        &self.data_version
    }

    /// Moves the version (a table built from defaults counts as one change).
    pub fn bump_version(&mut self, now_ms: i64) {
        self.data_version.next(now_ms);
    }
}
