//! Topics deleted while the CommitLog still holds their records (see `topic_removal`):
//! recovery's replay skips their records, so their ConsumeQueues do not come back.

use std::collections::BTreeMap;
use std::io;

use tracing::warn;

use super::config::StoreConfig;

/// Deleted topics remembered per shard (entries, each a topic name and an offset: a few KiB).
pub const DELETED_TOPICS_MAX: usize = 1024;

/// Topics deleted while the log still holds their records: topic -> the log's end when it was
/// deleted. File layout: a line `<topic> <end>` per topic, then a line `.`; whatever follows
/// the `.` line is ignored (the file is rewritten in place, never truncated).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeletedTopics {
    ends: BTreeMap<String, u64>,
    /// Bumped by every change: a writer that finds it moved writes again.
    version: u64,
}

impl DeletedTopics {
    pub fn load(config: &StoreConfig) -> io::Result<DeletedTopics> {
        let path = config.deleted_topics_path();
        let Some(bytes) = config.storage.read_file(&path)? else {
            return Ok(DeletedTopics::default());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut ends = BTreeMap::new();
        for line in text.lines() {
            if line == "." {
                return Ok(DeletedTopics { ends, version: 0 });
            }
            let parsed = line
                .rsplit_once(' ')
                .and_then(|(topic, end)| Some((topic.to_owned(), end.parse::<u64>().ok()?)));
            let Some((topic, end)) = parsed else {
                break;
            };
            ends.insert(topic, end);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a list of deleted topics", path.display()),
        ))
    }

    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the record of `topic` at log position `pos` belongs to a deleted topic.
    pub fn covers(&self, topic: &str, pos: u64) -> bool {
        self.ends.get(topic).is_some_and(|end| pos < *end)
    }

    /// Remembers `topic` deleted at log end `end`; forgets what lies wholly below `log_min`
    /// and, past the bound, the oldest.
    pub fn add(&mut self, topic: &str, end: u64, log_min: u64) {
        self.version += 1;
        self.ends.insert(topic.to_owned(), end);
        self.ends.retain(|_, end| *end > log_min);
        while self.ends.len() > DELETED_TOPICS_MAX {
            let oldest = self
                .ends
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(topic, _)| topic.clone())
                .expect("over the bound, so not empty");
            warn!(topic = %oldest, "deleted topic forgotten: {DELETED_TOPICS_MAX} are kept");
            self.ends.remove(&oldest);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut text: String = self
            .ends
            .iter()
            .map(|(topic, end)| format!("{topic} {end}\n"))
            .collect();
        text.push_str(".\n");
        text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_topics_round_trip_and_stay_bounded() {
        let mut deleted = DeletedTopics::default();
        deleted.add("A", 100, 0);
        deleted.add("B", 300, 0);
        assert!(deleted.covers("A", 99) && !deleted.covers("A", 100));
        assert!(!deleted.covers("C", 0));
        // Below the log's start nothing is left to skip.
        deleted.add("C", 400, 150);
        assert!(!deleted.covers("A", 99));
        for i in 0..DELETED_TOPICS_MAX as u64 {
            deleted.add(&format!("T{i}"), 1_000 + i, 0);
        }
        assert_eq!(deleted.ends.len(), DELETED_TOPICS_MAX);
        assert!(!deleted.covers("B", 0), "the oldest went first");
        let text = deleted.encode();
        assert!(text.ends_with(b".\n"));
    }
}
