//! Which shard of a Thruster broker owns a (topic, queue): a pure function of the topic, the
//! queue id and the shard count, so every shard computes it without asking anyone, and so does
//! a shard-aware client (it lives here, in the protocol crate, for both to share).
//!
//! A topic's queues go round-robin over the shards, starting at a shard picked by the topic's
//! hash: one topic spreads over all cores, and many small topics do not all start on shard 0.

use std::net::SocketAddr;

use crate::body::{decode_lenient, KvTable};
use crate::codes::{request_code, response_code};
use crate::command::RemotingCommand;
use crate::header::EmptyHeader;
use crate::message::java_string_hash;

/// GET_BROKER_RUNTIME_INFO keys by which a Thruster broker advertises its shards: the count,
/// and each shard's own address (`host:port;host:port`, by shard id). Other brokers do not
/// send them, and a client then behaves like any RocketMQ client.
pub const SHARD_COUNT_KEY: &str = "thrusterShards";
pub const SHARD_ADDRS_KEY: &str = "thrusterShardAddrs";

/// GET_BROKER_RUNTIME_INFO, which carries the shard map.
pub fn shard_map_request() -> RemotingCommand {
    RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO, &EmptyHeader {})
}

/// The shard map in a runtime-info response; `None` for any other broker.
pub fn parse_shard_map(response: &RemotingCommand) -> Option<ShardMap> {
    if response.code != response_code::SUCCESS {
        return None;
    }
    let table: KvTable = decode_lenient("runtime info", &response.body).ok()?;
    ShardMap::from_runtime_info(&table.table)
}

/// A broker's shards, as advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    pub addrs: Vec<SocketAddr>,
}

impl ShardMap {
    /// From the runtime-info table; `None` for a broker that is not sharded this way.
    pub fn from_runtime_info(
        table: &std::collections::BTreeMap<String, String>,
    ) -> Option<ShardMap> {
        let count: usize = table.get(SHARD_COUNT_KEY)?.parse().ok()?;
        let addrs: Vec<SocketAddr> = table
            .get(SHARD_ADDRS_KEY)?
            .split(';')
            .map(|a| a.trim().parse().ok())
            .collect::<Option<_>>()?;
        (count > 0 && addrs.len() == count).then_some(ShardMap { addrs })
    }

    /// The address serving `queue_id` of `topic`.
    pub fn addr_of(&self, topic: &str, queue_id: i32) -> SocketAddr {
        self.addrs[owner_of(topic, queue_id, self.addrs.len())]
    }
}

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
    fn shard_maps_come_only_from_complete_advertisements() {
        let mut table = std::collections::BTreeMap::new();
        assert_eq!(
            ShardMap::from_runtime_info(&table),
            None,
            "a plain RocketMQ broker"
        );
        table.insert(SHARD_COUNT_KEY.to_string(), "2".to_string());
        table.insert(
            SHARD_ADDRS_KEY.to_string(),
            "127.0.0.1:1;127.0.0.1:2".to_string(),
        );
        let map = ShardMap::from_runtime_info(&table).unwrap();
        let owner = owner_of("T", 1, 2);
        assert_eq!(map.addr_of("T", 1), map.addrs[owner]);
        table.insert(SHARD_COUNT_KEY.to_string(), "3".to_string());
        assert_eq!(
            ShardMap::from_runtime_info(&table),
            None,
            "count and list disagree"
        );
    }

    #[test]
    fn ownership_is_stable_and_total() {
        assert_eq!(owner_of("a", 0, 1), 0);
        assert_eq!(owner_of("TopicTest", 3, 4), owner_of("TopicTest", 3, 4));
        assert!(owner_of("x", -1, 3) < 3);
    }
}
