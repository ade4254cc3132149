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

/// What admin tools show of a client connection (Java `ClientChannelInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The peer's `ip:port`.
    pub addr: String,
    /// `LanguageCode` name of its requests.
    pub language: String,
    /// `MQVersion` ordinal of its requests.
    pub version: i32,
}

/// One member of a group, as admin tools list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub conn: ConnKey,
    pub client_id: String,
    pub info: ClientInfo,
    pub last_update_ms: i64,
}

/// A change to the client table.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Heartbeat {
        conn: ConnKey,
        client_id: String,
        client: ClientInfo,
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
    info: ClientInfo,
    last_update_ms: i64,
}

impl Channel {
    fn member(&self, conn: ConnKey) -> Member {
        Member {
            conn,
            client_id: self.client_id.clone(),
            info: self.info.clone(),
            last_update_ms: self.last_update_ms,
        }
    }
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

/// Memory the client table may take (each shard holds a copy), as accounted below:
/// heartbeats name groups and subscriptions of the client's choosing, so a heartbeat that
/// would grow the table past this is refused (members refreshing or shrinking their
/// registrations never are).
pub const CLIENT_TABLE_BYTES_MAX: usize = 64 << 20;
/// What one group costs besides its strings (map node, struct, Strings).
const GROUP_OVERHEAD_BYTES: usize = 192;
/// What one member (connection) of a group costs besides its client id (its address and
/// language included: both are short, an `ip:port` and a name).
const CHANNEL_OVERHEAD_BYTES: usize = 160;
/// What one subscription costs besides its strings.
const SUBSCRIPTION_OVERHEAD_BYTES: usize = 128;

fn channel_bytes(client_id: &str) -> usize {
    CHANNEL_OVERHEAD_BYTES + client_id.len()
}

fn subscriptions_bytes<'a>(subscriptions: impl Iterator<Item = &'a SubscriptionData>) -> usize {
    subscriptions
        .map(|s| {
            SUBSCRIPTION_OVERHEAD_BYTES
                + s.topic.len()
                + s.sub_string.len()
                + s.expression_type.len()
                + s.tags_set.iter().map(String::len).sum::<usize>()
                + 4 * s.code_set.len()
        })
        .sum()
}

/// A consumer group's own memory: name, settings and subscriptions (members counted apart).
fn consumer_group_bytes(name: &str, consume_type: &str, model: &str, from_where: &str) -> usize {
    GROUP_OVERHEAD_BYTES + name.len() + consume_type.len() + model.len() + from_where.len()
}

fn consumer_data_bytes(data: &ConsumerData) -> usize {
    consumer_group_bytes(
        &data.group_name,
        &data.consume_type,
        &data.message_model,
        &data.consume_from_where,
    ) + subscriptions_bytes(data.subscription_data_set.iter())
}

impl ConsumerGroup {
    fn own_bytes(&self, name: &str) -> usize {
        consumer_group_bytes(
            name,
            &self.consume_type,
            &self.message_model,
            &self.consume_from_where,
        ) + subscriptions_bytes(self.subscriptions.values())
    }
}

/// What a member's entry adds: a new member its whole entry, a known one the change of its id.
fn member_growth(channels: Option<&BTreeMap<ConnKey, Channel>>, conn: &ConnKey, id: &str) -> isize {
    match channels.and_then(|c| c.get(conn)) {
        Some(old) => id.len() as isize - old.client_id.len() as isize,
        None => channel_bytes(id) as isize,
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    consumers: BTreeMap<String, ConsumerGroup>,
    producers: BTreeMap<String, BTreeMap<ConnKey, Channel>>,
    /// Accounted memory of both maps: every group's own bytes and every member's.
    table_bytes: usize,
}

impl ClientTable {
    /// Accounted memory of the table.
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    /// Whether applying `event` keeps the table within [`CLIENT_TABLE_BYTES_MAX`] or does not
    /// grow it: the shard that receives a heartbeat asks before applying and broadcasting it;
    /// the copies apply what their peer admitted.
    pub fn admits(&self, event: &ClientEvent) -> Result<(), String> {
        let ClientEvent::Heartbeat {
            conn,
            client_id,
            producer_groups,
            consumers,
            ..
        } = event
        else {
            return Ok(()); // only heartbeats grow the table
        };
        let mut growth = 0isize;
        for name in producer_groups {
            let channels = self.producers.get(name);
            if channels.is_none() {
                growth += (GROUP_OVERHEAD_BYTES + name.len()) as isize;
            }
            growth += member_growth(channels, conn, client_id);
        }
        for data in consumers {
            let group = self.consumers.get(&data.group_name);
            let old_bytes = group.map_or(0, |g| g.own_bytes(&data.group_name));
            growth += consumer_data_bytes(data) as isize - old_bytes as isize;
            growth += member_growth(group.map(|g| &g.channels), conn, client_id);
        }
        let after = self.table_bytes as isize + growth;
        if growth > 0 && after > CLIENT_TABLE_BYTES_MAX as isize {
            return Err(format!(
                "client table full ({} of {CLIENT_TABLE_BYTES_MAX} bytes): heartbeat refused",
                self.table_bytes
            ));
        }
        Ok(())
    }

    fn grow(&mut self, growth: isize) {
        self.table_bytes = (self.table_bytes as isize + growth) as usize;
    }

    /// Applies `event`; returns the consumer groups whose set of client ids changed.
    pub fn apply(&mut self, event: &ClientEvent) -> Vec<String> {
        let mut changed = Vec::new();
        match event {
            ClientEvent::Heartbeat {
                conn,
                client_id,
                client,
                producer_groups,
                consumers,
                now_ms,
            } => {
                let channel = Channel {
                    client_id: client_id.clone(),
                    info: client.clone(),
                    last_update_ms: *now_ms,
                };
                for group in producer_groups {
                    let mut growth = 0;
                    if !self.producers.contains_key(group) {
                        growth += (GROUP_OVERHEAD_BYTES + group.len()) as isize;
                    }
                    growth += member_growth(self.producers.get(group), conn, client_id);
                    self.grow(growth);
                    self.producers
                        .entry(group.clone())
                        .or_default()
                        .insert(*conn, channel.clone());
                }
                for data in consumers {
                    let existing = self.consumers.get(&data.group_name);
                    let growth = consumer_data_bytes(data) as isize
                        - existing.map_or(0, |g| g.own_bytes(&data.group_name)) as isize
                        + member_growth(existing.map(|g| &g.channels), conn, client_id);
                    self.grow(growth);
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
        let mut freed = 0usize;
        let mut drop_stale = |channels: &mut BTreeMap<ConnKey, Channel>| {
            let before = channels.len();
            channels.retain(|_, c| {
                let keep = !stale(c);
                if !keep {
                    freed += channel_bytes(&c.client_id);
                }
                keep
            });
            channels.len() != before
        };
        for producers in self.producers.values_mut() {
            drop_stale(producers);
        }
        for (name, group) in self.consumers.iter_mut() {
            if drop_stale(&mut group.channels) {
                changed.push(name.clone());
            }
        }
        self.producers.retain(|name, p| {
            if p.is_empty() {
                freed += GROUP_OVERHEAD_BYTES + name.len();
            }
            !p.is_empty()
        });
        self.consumers.retain(|name, g| {
            if g.channels.is_empty() {
                freed += g.own_bytes(name);
            }
            !g.channels.is_empty()
        });
        self.table_bytes -= freed;
        changed
    }

    fn remove_producer(&mut self, group: &str, conn: &ConnKey) {
        if let Some(producers) = self.producers.get_mut(group) {
            if let Some(old) = producers.remove(conn) {
                self.table_bytes -= channel_bytes(&old.client_id);
            }
            if producers.is_empty() {
                self.producers.remove(group);
                self.table_bytes -= GROUP_OVERHEAD_BYTES + group.len();
            }
        }
    }

    /// `true` when the group's client ids changed.
    fn remove_consumer(&mut self, group: &str, conn: &ConnKey) -> bool {
        let Some(info) = self.consumers.get_mut(group) else {
            return false;
        };
        let before = info.client_ids();
        if let Some(old) = info.channels.remove(conn) {
            self.table_bytes -= channel_bytes(&old.client_id);
        }
        let changed = info.client_ids() != before;
        if info.channels.is_empty() {
            self.table_bytes -= info.own_bytes(group);
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

    /// The members of a consumer group, `None` for a group nobody is in.
    pub fn consumer_members(&self, group: &str) -> Option<(&ConsumerGroup, Vec<Member>)> {
        let consumers = self.consumers.get(group)?;
        let members = consumers
            .channels
            .iter()
            .map(|(conn, channel)| channel.member(*conn))
            .collect();
        Some((consumers, members))
    }

    /// The members of a consumer group (none for a group nobody is in).
    pub fn consumers_of(&self, group: &str) -> Vec<Member> {
        self.consumer_members(group)
            .map(|(_, members)| members)
            .unwrap_or_default()
    }

    /// The members of a producer group.
    pub fn producer_members(&self, group: &str) -> Vec<Member> {
        self.producers.get(group).map_or_else(Vec::new, |channels| {
            channels
                .iter()
                .map(|(conn, channel)| channel.member(*conn))
                .collect()
        })
    }

    /// Every producer group with its members (GET_ALL_PRODUCER_INFO).
    pub fn producer_groups(&self) -> impl Iterator<Item = (&str, Vec<Member>)> {
        self.producers
            .keys()
            .map(|group| (group.as_str(), self.producer_members(group)))
    }

    /// Consumer groups subscribed to `topic` (QUERY_TOPIC_CONSUME_BY_WHO).
    pub fn groups_subscribing(&self, topic: &str) -> BTreeSet<String> {
        self.consumers
            .iter()
            .filter(|(_, g)| g.subscriptions.contains_key(topic))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every consumer group name.
    pub fn consumer_group_names(&self) -> impl Iterator<Item = &str> {
        self.consumers.keys().map(String::as_str)
    }

    /// Connections registered for producer group `group` (transaction checks go to one).
    pub fn producer_connections(&self, group: &str) -> Vec<ConnKey> {
        self.producers
            .get(group)
            .map_or_else(Vec::new, |channels| channels.keys().copied().collect())
    }

    /// Connections of the client `client_id`, in any group (replies go to one).
    pub fn client_connections(&self, client_id: &str) -> Vec<ConnKey> {
        let mut found: BTreeSet<ConnKey> = BTreeSet::new();
        let producers = self.producers.values();
        let consumers = self.consumers.values().map(|g| &g.channels);
        for channels in producers.chain(consumers) {
            found.extend(
                channels
                    .iter()
                    .filter(|(_, c)| c.client_id == client_id)
                    .map(|(k, _)| *k),
            );
        }
        found.into_iter().collect()
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
            client: ClientInfo::default(),
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

    /// Recomputes the accounted memory from scratch.
    fn recount(table: &ClientTable) -> usize {
        let members = |c: &BTreeMap<ConnKey, Channel>| -> usize {
            c.values().map(|c| channel_bytes(&c.client_id)).sum()
        };
        let consumers: usize = table
            .consumers
            .iter()
            .map(|(n, g)| g.own_bytes(n) + members(&g.channels))
            .sum();
        let producers: usize = table
            .producers
            .iter()
            .map(|(n, p)| GROUP_OVERHEAD_BYTES + n.len() + members(p))
            .sum();
        consumers + producers
    }

    #[test]
    fn accounted_memory_follows_every_change() {
        let mut table = ClientTable::default();
        table.apply(&heartbeat(0, 1, "c1", "g", 0));
        table.apply(&heartbeat(1, 7, "c2", "g", 100_000));
        table.apply(&heartbeat(1, 8, "c3", "h", 100_000));
        table.apply(&heartbeat(1, 8, "c3-renamed", "h", 100_000));
        assert_eq!(table.table_bytes(), recount(&table));
        table.expire(130_000, 120_000);
        assert_eq!(table.table_bytes(), recount(&table));
        table.apply(&ClientEvent::Unregister {
            conn: ConnKey { shard: 1, id: 7 },
            producer_group: Some("p".into()),
            consumer_group: Some("g".into()),
        });
        assert_eq!(table.table_bytes(), recount(&table));
        table.apply(&ClientEvent::Closed {
            conn: ConnKey { shard: 1, id: 8 },
        });
        assert_eq!((table.table_bytes(), recount(&table)), (0, 0));
    }

    #[test]
    fn heartbeats_that_would_grow_a_full_table_are_refused_but_members_still_refresh() {
        let mut table = ClientTable::default();
        let mut groups = 0;
        let refused = loop {
            let event = heartbeat(0, groups % 64, "c", &format!("group-{groups}"), 0);
            match table.admits(&event) {
                Ok(()) => table.apply(&event),
                Err(refused) => break refused,
            };
            groups += 1;
        };
        assert!(refused.contains("client table full"), "{refused}");
        assert!(table.table_bytes() <= CLIENT_TABLE_BYTES_MAX);
        assert_eq!(table.table_bytes(), recount(&table));
        let refresh = heartbeat(0, 0, "c", "group-0", 10);
        assert!(
            table.admits(&refresh).is_ok(),
            "a member refreshing its heartbeat"
        );
        assert!(groups > 1000);
    }
}
