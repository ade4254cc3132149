//! Who is connected: producer groups and consumer groups with their subscriptions, built from
//! HEART_BEAT and UNREGISTER_CLIENT.
//!
//! Replicated: a shard applies each client event it receives and forwards it to every other
//! shard, so each holds the same table (events about one connection come from one shard, in
//! order, and carry their own timestamps, so the copies converge). Any shard can then answer
//! GET_CONSUMER_LIST_BY_GROUP and check a pull's subscription without a hop, and when a group's
//! membership changes each shard notifies the group's connections it serves itself.

use std::collections::{BTreeMap, BTreeSet};

use thruster_protocol::body::heartbeat::{ConsumerData, SubscriptionData};

/// A connection, broker-wide: the shard serving it and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    pub shard: usize,
    pub id: u64,
}

/// A change to the client table.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Heartbeat {
        conn: ConnKey,
        client_id: String,
        producer_groups: Vec<String>,
        consumers: Vec<ConsumerData>,
        now_ms: i64,
    },
    Unregister {
        conn: ConnKey,
        producer_group: Option<String>,
        consumer_group: Option<String>,
    },
    /// The connection closed: it leaves every group.
    Closed { conn: ConnKey },
}

#[derive(Debug, Clone)]
struct Channel {
    client_id: String,
    last_update_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub consume_type: String,
    pub message_model: String,
    pub consume_from_where: String,
    pub subscriptions: BTreeMap<String, SubscriptionData>,
    channels: BTreeMap<ConnKey, Channel>,
}

impl ConsumerGroup {
    pub fn is_broadcasting(&self) -> bool {
        self.message_model == "BROADCASTING"
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    consumers: BTreeMap<String, ConsumerGroup>,
    producers: BTreeMap<String, BTreeMap<ConnKey, Channel>>,
}

impl ClientTable {
    /// Applies `event`; returns the consumer groups whose set of client ids changed.
    pub fn apply(&mut self, event: &ClientEvent) -> Vec<String> {
        let mut changed = Vec::new();
        match event {
            ClientEvent::Heartbeat {
                conn,
                client_id,
                producer_groups,
                consumers,
                now_ms,
            } => {
                let channel = Channel {
                    client_id: client_id.clone(),
                    last_update_ms: *now_ms,
                };
                for group in producer_groups {
                    self.producers
                        .entry(group.clone())
                        .or_default()
                        .insert(*conn, channel.clone());
                }
                for data in consumers {
                    let group = self.consumers.entry(data.group_name.clone()).or_default();
                    let before = group.client_ids();
                    group.consume_type = data.consume_type.clone();
                    group.message_model = data.message_model.clone();
                    group.consume_from_where = data.consume_from_where.clone();
                    group.subscriptions = data
                        .subscription_data_set
                        .iter()
                        .map(|s| (s.topic.clone(), s.clone()))
                        .collect();
                    group.channels.insert(*conn, channel.clone());
                    if group.client_ids() != before {
                        changed.push(data.group_name.clone());
                    }
                }
            }
            ClientEvent::Unregister {
                conn,
                producer_group,
                consumer_group,
            } => {
                if let Some(group) = producer_group {
                    self.remove_producer(group, conn);
                }
                if let Some(group) = consumer_group {
                    if self.remove_consumer(group, conn) {
                        changed.push(group.clone());
                    }
                }
            }
            ClientEvent::Closed { conn } => {
                let groups: Vec<String> = self.producers.keys().cloned().collect();
                for group in groups {
                    self.remove_producer(&group, conn);
                }
                let groups: Vec<String> = self.consumers.keys().cloned().collect();
                for group in groups {
                    if self.remove_consumer(&group, conn) {
                        changed.push(group);
                    }
                }
            }
        }
        changed
    }

    /// Drops channels silent for longer than `expired_ms`; returns the groups that changed.
    pub fn expire(&mut self, now_ms: i64, expired_ms: i64) -> Vec<String> {
        let stale = |c: &Channel| now_ms - c.last_update_ms > expired_ms;
        let mut changed = Vec::new();
        for producers in self.producers.values_mut() {
            producers.retain(|_, c| !stale(c));
        }
        self.producers.retain(|_, p| !p.is_empty());
        for (name, group) in self.consumers.iter_mut() {
            let before = group.channels.len();
            group.channels.retain(|_, c| !stale(c));
            if group.channels.len() != before {
                changed.push(name.clone());
            }
        }
        self.consumers.retain(|_, g| !g.channels.is_empty());
        changed
    }

    fn remove_producer(&mut self, group: &str, conn: &ConnKey) {
        if let Some(producers) = self.producers.get_mut(group) {
            producers.remove(conn);
            if producers.is_empty() {
                self.producers.remove(group);
            }
        }
    }

    /// `true` when the group's client ids changed.
    fn remove_consumer(&mut self, group: &str, conn: &ConnKey) -> bool {
        let Some(info) = self.consumers.get_mut(group) else {
            return false;
        };
        let before = info.client_ids();
        info.channels.remove(conn);
        let changed = info.client_ids() != before;
        if info.channels.is_empty() {
            self.consumers.remove(group);
        }
        changed
    }

    pub fn consumer_group(&self, group: &str) -> Option<&ConsumerGroup> {
        self.consumers.get(group)
    }

    /// Client ids of a consumer group, sorted (the rebalance input every client must agree on).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .get(group)
            .map(|g| g.client_ids().into_iter().collect())
            .unwrap_or_default()
    }

    /// Connections of `group` served by `shard`.
    pub fn local_connections(&self, group: &str, shard: usize) -> Vec<u64> {
        self.consumers.get(group).map_or_else(Vec::new, |g| {
            g.channels
                .keys()
                .filter(|k| k.shard == shard)
                .map(|k| k.id)
                .collect()
        })
    }

    pub fn consumer_group_count(&self) -> usize {
        self.consumers.len()
    }

    pub fn producer_group_count(&self) -> usize {
        self.producers.len()
    }
}

impl ConsumerGroup {
    fn client_ids(&self) -> BTreeSet<String> {
        self.channels
            .values()
            .map(|c| c.client_id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(shard: usize, id: u64, client: &str, group: &str, now_ms: i64) -> ClientEvent {
        ClientEvent::Heartbeat {
            conn: ConnKey { shard, id },
            client_id: client.into(),
            producer_groups: vec!["p".into()],
            consumers: vec![ConsumerData {
                group_name: group.into(),
                message_model: "CLUSTERING".into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: "T".into(),
                    sub_string: "*".into(),
                    ..SubscriptionData::default()
                }],
                ..ConsumerData::default()
            }],
            now_ms,
        }
    }

    #[test]
    fn membership_changes_are_reported_once() {
        let mut table = ClientTable::default();
        assert_eq!(table.apply(&heartbeat(0, 1, "c1", "g", 0)), vec!["g"]);
        assert!(
            table.apply(&heartbeat(0, 1, "c1", "g", 10)).is_empty(),
            "refresh only"
        );
        assert_eq!(table.apply(&heartbeat(1, 7, "c2", "g", 20)), vec!["g"]);
        assert_eq!(table.consumer_ids("g"), vec!["c1", "c2"]);
        assert_eq!(table.local_connections("g", 1), vec![7]);
        assert!(table
            .consumer_group("g")
            .unwrap()
            .subscriptions
            .contains_key("T"));
        assert_eq!(
            table.apply(&ClientEvent::Closed {
                conn: ConnKey { shard: 0, id: 1 }
            }),
            vec!["g"]
        );
        assert_eq!(table.consumer_ids("g"), vec!["c2"]);
        assert_eq!(table.producer_group_count(), 1);
        let unregister = ClientEvent::Unregister {
            conn: ConnKey { shard: 1, id: 7 },
            producer_group: Some("p".into()),
            consumer_group: Some("g".into()),
        };
        assert_eq!(table.apply(&unregister), vec!["g"]);
        assert!(table.consumer_ids("g").is_empty());
        assert_eq!(table.producer_group_count(), 0);
    }

    #[test]
    fn silent_channels_expire() {
        let mut table = ClientTable::default();
        table.apply(&heartbeat(0, 1, "c1", "g", 0));
        table.apply(&heartbeat(0, 2, "c2", "g", 100_000));
        assert_eq!(table.expire(130_000, 120_000), vec!["g"]);
        assert_eq!(table.consumer_ids("g"), vec!["c2"]);
        assert!(table.expire(130_000, 120_000).is_empty());
    }
}
