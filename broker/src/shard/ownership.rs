//! Which shard owns a (topic, queue): a pure function of the topic, the queue id and the shard
//! count, so every shard computes it without asking anyone.
//!
//! A topic's queues go round-robin over the shards, starting at a shard picked by the topic's
//! hash: one topic spreads over all cores, and many small topics do not all start on shard 0.

use thruster_client::protocol::message::java_string_hash;

/// The shard that owns `queue_id` of `topic` among `shard_count` shards.
pub fn owner_of(topic: &str, queue_id: i32, shard_count: usize) -> usize {
    assert!(shard_count > 0, "a broker has at least one shard");
    let start = u64::from(java_string_hash(topic) as u32);
    // Queue ids are non-negative on this path; a negative one (which the caller refuses) must
    // still map somewhere without panicking.
    let queue = u64::from(queue_id as u32);
    ((start + queue) % shard_count as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_of_a_topic_spread_round_robin_over_shards() {
        for shards in 1..=8 {
            let owners: Vec<usize> = (0..16).map(|q| owner_of("TopicTest", q, shards)).collect();
            for q in 1..16 {
                assert_eq!(owners[q], (owners[q - 1] + 1) % shards);
            }
            assert!(owners.iter().all(|&o| o < shards));
        }
    }

    #[test]
    fn ownership_is_stable_and_total() {
        assert_eq!(owner_of("a", 0, 1), 0);
        assert_eq!(owner_of("TopicTest", 3, 4), owner_of("TopicTest", 3, 4));
        assert!(owner_of("x", -1, 3) < 3);
    }
}
