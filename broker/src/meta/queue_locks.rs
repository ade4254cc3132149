//! Queue locks for orderly consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ): group → queue →
//! holder. Shard 0 owns the table (lock requests hop there); locks live in memory only, as in
//! RocketMQ. A lock not refreshed for `LOCK_MAX_LIVE_MS` may be taken by another client.

use std::collections::{BTreeMap, BTreeSet};

use thruster_protocol::body::heartbeat::MessageQueue;

/// `rocketmq.broker.rebalance.lockMaxLiveTime`.
pub const LOCK_MAX_LIVE_MS: i64 = 60_000;
/// Queues one request may name (a group's queues on one broker).
pub const QUEUES_PER_REQUEST_MAX: usize = 4096;

#[derive(Debug, Clone)]
struct Holder {
    client_id: String,
    last_update_ms: i64,
}

#[derive(Debug, Default)]
pub struct QueueLocks {
    groups: BTreeMap<String, BTreeMap<MessageQueue, Holder>>,
}

impl QueueLocks {
    /// Grants each queue that is free, already `client_id`'s, or held by a lock that expired;
    /// returns every requested queue `client_id` now holds.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &BTreeSet<MessageQueue>,
        now_ms: i64,
    ) -> BTreeSet<MessageQueue> {
        let locks = self.groups.entry(group.to_owned()).or_default();
        let mut held = BTreeSet::new();
        for queue in queues.iter().take(QUEUES_PER_REQUEST_MAX) {
            let grant = match locks.get(queue) {
                None => true,
                Some(holder) => {
                    holder.client_id == client_id
                        || now_ms - holder.last_update_ms > LOCK_MAX_LIVE_MS
                }
            };
            if grant {
                locks.insert(
                    queue.clone(),
                    Holder {
                        client_id: client_id.to_owned(),
                        last_update_ms: now_ms,
                    },
                );
                held.insert(queue.clone());
            }
        }
        held
    }

    /// Releases the queues `client_id` holds among `queues`.
    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &BTreeSet<MessageQueue>) {
        if let Some(locks) = self.groups.get_mut(group) {
            for queue in queues {
                if locks.get(queue).is_some_and(|h| h.client_id == client_id) {
                    locks.remove(queue);
                }
            }
            if locks.is_empty() {
                self.groups.remove(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(ids: &[i32]) -> BTreeSet<MessageQueue> {
        ids.iter()
            .map(|&queue_id| MessageQueue {
                topic: "T".into(),
                broker_name: "b".into(),
                queue_id,
            })
            .collect()
    }

    #[test]
    fn a_queue_has_one_holder_until_released_or_expired() {
        let mut locks = QueueLocks::default();
        assert_eq!(locks.lock("g", "c1", &queues(&[0, 1]), 0), queues(&[0, 1]));
        // c2 gets only what c1 does not hold.
        assert_eq!(locks.lock("g", "c2", &queues(&[1, 2]), 1_000), queues(&[2]));
        // c1 refreshes; another group is independent.
        assert_eq!(locks.lock("g", "c1", &queues(&[1]), 2_000), queues(&[1]));
        assert_eq!(locks.lock("h", "c2", &queues(&[1]), 2_000), queues(&[1]));
        // Released: c2 may take it.
        locks.unlock("g", "c1", &queues(&[1]));
        assert_eq!(locks.lock("g", "c2", &queues(&[1]), 3_000), queues(&[1]));
        // c2 cannot unlock c1's queue 0; after 60 s of silence it can take it.
        locks.unlock("g", "c2", &queues(&[0]));
        assert!(locks.lock("g", "c2", &queues(&[0]), 60_000).is_empty());
        assert_eq!(locks.lock("g", "c2", &queues(&[0]), 60_001), queues(&[0]));
    }
}
