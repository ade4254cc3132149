//! Deleting topics' ConsumeQueues: a topic deleted by an operator (DELETE_TOPIC_IN_BROKER), or
//! every topic the broker no longer knows (CLEAN_UNUSED_TOPIC, Java's `cleanUnusedTopic`).
//!
//! Safe on the shard's reactor: the queues leave the table in one step, between two tasks, and
//! nothing keeps a queue across an await (puts dispatch, and reads copy entries out, without
//! yielding), so no reader or dispatcher holds one afterwards. The files and directories are
//! then deleted on the helper thread. A put that comes later for the topic opens a new, empty
//! queue: a re-created topic starts at offset 0. The CommitLog records stay until retention
//! removes their segments.
//!
//! A crash makes recovery replay the newest segment, which may hold the deleted topic's
//! records: dispatched again, they would bring its queues back, mixed with a re-created topic's
//! new entries. So a deletion first records, durably, the topic and the log's end at that
//! moment (`deleted-topics-<shard>`, [`DeletedTopics`](super::deleted_topics::DeletedTopics)); recovery dispatches no record of the
//! topic below that end. An entry is dropped once retention has deleted everything below its
//! end; at most `DELETED_TOPICS_MAX` are kept (past it the oldest goes, and a crash could bring
//! its queues back: CLEAN_UNUSED_TOPIC removes such leftovers once the broker's table no
//! longer has the topic).

use std::io;

use super::doomed::Doomed;
use super::message_store::MessageStore;

impl MessageStore {
    /// Deletes every ConsumeQueue of `topic` in this store, files and directories; returns how
    /// many queues there were.
    pub async fn delete_topic(&self, topic: &str) -> io::Result<usize> {
        self.delete_topics(&[topic.to_owned()]).await
    }

    /// Deletes the ConsumeQueues of every topic that `keep` refuses; returns those topics.
    pub async fn delete_topics_except(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> io::Result<Vec<String>> {
        let mut unused: Vec<String> = self
            .queues
            .borrow()
            .topics()
            .into_iter()
            .filter(|topic| !keep(topic))
            .collect();
        unused.sort();
        self.delete_topics(&unused).await?;
        Ok(unused)
    }

    async fn delete_topics(&self, topics: &[String]) -> io::Result<usize> {
        if topics.is_empty() {
            return Ok(0);
        }
        self.remember_deleted(topics).await?;
        let root = self.config.consume_queue_dir();
        let mut doomed = Doomed::default();
        let mut deleted = 0;
        {
            let mut queues = self.queues.borrow_mut();
            for topic in topics {
                for queue in queues.remove_topic(topic) {
                    queue.destroy(&mut doomed);
                    deleted += 1;
                }
                doomed.dirs.push(root.join(topic));
            }
        }
        doomed.delete(&self.config.storage).await?;
        Ok(deleted)
    }

    /// Records, durably, that `topics` were deleted at the log's current end: a record of
    /// theirs appended before now is never dispatched again.
    async fn remember_deleted(&self, topics: &[String]) -> io::Result<()> {
        let (end, log_min) = {
            let log = self.log.borrow();
            (log.write_pos(), log.min_offset())
        };
        {
            let mut deleted = self.deleted_topics.borrow_mut();
            for topic in topics {
                deleted.add(topic, end, log_min);
            }
        }
        // Concurrent deletions may finish their writes in any order: the last to see the
        // table unchanged after its write wrote the newest.
        loop {
            let (text, version) = {
                let deleted = self.deleted_topics.borrow();
                (deleted.encode(), deleted.version())
            };
            self.config
                .storage
                .write_file_synced(&self.config.deleted_topics_path(), text)
                .await?;
            if self.deleted_topics.borrow().version() == version {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::commit_log::tests::on_reactor;
    use crate::message_store::tests::{config, message};
    use crate::{FlushMode, GetStatus, MessageStore, PutStatus};

    #[test]
    fn a_deleted_topic_leaves_no_queue_and_starts_again_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        on_reactor(move || async move {
            let store = MessageStore::open(config(&root, FlushMode::Sync))
                .await
                .unwrap();
            for (topic, queue) in [("Gone", 0), ("Gone", 3), ("Kept", 0)] {
                for i in 0..3 {
                    let put = store
                        .put(message(
                            topic,
                            queue,
                            format!("{topic}{i}").as_bytes(),
                            "",
                            "",
                        ))
                        .await;
                    assert_eq!(put.status, PutStatus::Ok);
                }
            }
            let cq_root = store.config().consume_queue_dir();
            assert!(cq_root.join("Gone").join("3").exists());
            assert_eq!(store.delete_topic("Gone").await.unwrap(), 2);
            assert!(
                !cq_root.join("Gone").exists(),
                "the topic's directory is gone"
            );
            assert!(cq_root.join("Kept").join("0").exists());
            assert_eq!(
                store.get_messages("Gone", 0, 0, 32, &|_| true).status,
                GetStatus::NoMatchedLogicQueue
            );
            assert_eq!(store.max_offset("Kept", 0), 3);
            // Re-created: offsets start again at 0, and the new message is what is read.
            let again = store.put(message("Gone", 0, b"new", "", "")).await;
            assert_eq!((again.status, again.queue_offset), (PutStatus::Ok, 0));
            let read = store.get_messages("Gone", 0, 0, 32, &|_| true);
            assert_eq!(read.messages.len(), 1);
            // Unused topics: all but those kept.
            let removed = store
                .delete_topics_except(|topic| topic == "Kept")
                .await
                .unwrap();
            assert_eq!(removed, ["Gone"]);
            assert!(!cq_root.join("Gone").exists());
            assert_eq!(store.queue_ids(), [("Kept".to_owned(), 0)]);
            // A crash now: recovery replays the log, deleted topics' records included, and
            // dispatches none of them.
            store.flush_now().await.unwrap();
            store.abandon().await;
            drop(store);
            let store = MessageStore::open(config(&root, FlushMode::Sync))
                .await
                .unwrap();
            assert_eq!(store.queue_ids(), [("Kept".to_owned(), 0)]);
            assert!(!cq_root.join("Gone").exists());
            store.shutdown().await.unwrap();
        });
    }
}
