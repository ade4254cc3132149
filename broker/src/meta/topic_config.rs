//! The topic table. Shard 0 is its only writer (creation, auto-creation, persistence to
//! `config/topics.json`); every other shard keeps a read-only copy, updated by message.

use std::collections::BTreeSet;
use std::path::PathBuf;

use thruster_protocol::body::{perm, DataVersion, TopicConfig, TopicConfigSerializeWrapper};
use thruster_protocol::message::{java_string_hash, TOPIC_MAX_BYTES};
use thruster_protocol::response_code;

use super::bounded_table::{BoundedTable, TableEntry};
use crate::config::BrokerConfig;
use crate::remoting::Failure;

pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
pub const BENCHMARK_TOPIC: &str = "BenchmarkTest";
pub const OFFSET_MOVED_EVENT: &str = "OFFSET_MOVED_EVENT";
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";
/// Half (prepared) transactional messages, one queue per shard.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Decisions about half messages (op records), one queue per shard.
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Timer messages waiting in the wheel, one queue per level (`processor::timer`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// Half messages checked `transactionCheckMax` times without an answer.
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// Queue count limit of one topic (each queue is a ConsumeQueue directory).
pub const QUEUE_NUMS_MAX: i32 = 1024;

/// Memory the topic table may take on each shard, as accounted by [`topic_bytes`]: sends
/// auto-create topics and every clustering group's heartbeat creates a retry topic, so
/// creation is refused past it (the broker's own topics and existing ones still change).
pub const TOPIC_TABLE_BYTES_MAX: usize = 64 << 20;
/// What one topic costs besides its strings (map node, TopicConfig, two Strings).
const TOPIC_OVERHEAD_BYTES: usize = 256;

/// The accounted memory of one topic: its name twice (key and config), its filter type and
/// attributes, and the fixed overhead.
impl TableEntry for TopicConfig {
    const KIND: &'static str = "topic";

    fn name(&self) -> &str {
        &self.topic_name
    }

    fn bytes(&self) -> usize {
        2 * self.topic_name.len()
            + self.topic_filter_type.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + TOPIC_OVERHEAD_BYTES
    }
}

/// GET_SYSTEM_TOPIC_LIST_FROM_BROKER: the topics that are the broker's own, as Java lists
/// them (its fixed set plus what it creates at start: cluster, broker name, reply topic),
/// with Thruster's timer topic; mqadmin exportMetadata leaves these out.
pub fn system_topics(config: &BrokerConfig) -> BTreeSet<String> {
    let mut topics: BTreeSet<String> = JAVA_SYSTEM_TOPICS
        .iter()
        .chain(&[TIMER_TOPIC])
        .map(|t| (*t).to_owned())
        .collect();
    topics.insert(config.broker_cluster_name.clone());
    topics.insert(config.broker_name.clone());
    topics.insert(reply_topic(config));
    topics
}

/// The cluster's request-reply topic, `<brokerClusterName>_REPLY_TOPIC`, created at start.
fn reply_topic(config: &BrokerConfig) -> String {
    format!("{}_REPLY_TOPIC", config.broker_cluster_name)
}

#[derive(Debug, Clone)]
pub struct TopicTable {
    topics: BoundedTable<TopicConfig>,
}

impl Default for TopicTable {
    fn default() -> Self {
        TopicTable {
            topics: BoundedTable::new(TOPIC_TABLE_BYTES_MAX),
        }
    }
}

impl TopicTable {
    /// The topics a broker creates at start (features.md §9).
    pub fn with_system_topics(config: &BrokerConfig, now_ms: i64) -> TopicTable {
        let mut table = TopicTable::default();
        let mut add = |topic: TopicConfig| table.topics.insert(topic);
        add(TopicConfig::new(SELF_TEST_TOPIC, 1, perm::READ_WRITE));
        if config.auto_create_topic_enable {
            add(TopicConfig::new(
                AUTO_CREATE_TOPIC_KEY_TOPIC,
                config.default_topic_queue_nums,
                perm::READ_WRITE | perm::INHERIT,
            ));
        }
        add(TopicConfig::new(
            BENCHMARK_TOPIC,
            QUEUE_NUMS_MAX,
            perm::READ_WRITE,
        ));
        let named = |enabled: bool| {
            if enabled {
                perm::INHERIT | perm::READ_WRITE
            } else {
                perm::INHERIT
            }
        };
        add(TopicConfig::new(
            &config.broker_cluster_name,
            16,
            named(config.cluster_topic_enable),
        ));
        add(TopicConfig::new(
            &config.broker_name,
            1,
            named(config.broker_topic_enable),
        ));
        add(TopicConfig::new(OFFSET_MOVED_EVENT, 1, perm::READ_WRITE));
        add(TopicConfig::new(SCHEDULE_TOPIC, 18, perm::READ_WRITE));
        add(TopicConfig::new(reply_topic(config), 1, perm::READ_WRITE));
        table.topics.bump_version(now_ms);
        table
    }

    /// Adds the topics of a persisted table (they win over the built-in defaults).
    pub fn merge_persisted(&mut self, persisted: TopicConfigSerializeWrapper) {
        self.topics.merge(
            persisted.topic_config_table.into_values(),
            &persisted.data_version,
        );
    }

    pub fn get(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.get(topic)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Replaces or adds `topic`; `true` when anything changed.
    pub fn upsert(&mut self, topic: TopicConfig, now_ms: i64) -> bool {
        self.topics.upsert(topic, now_ms)
    }

    pub fn remove(&mut self, topic: &str, now_ms: i64) -> bool {
        self.topics.remove(topic, now_ms)
    }

    /// Accounted memory of the table ([`TOPIC_TABLE_BYTES_MAX`] bounds new topics).
    pub fn table_bytes(&self) -> usize {
        self.topics.table_bytes()
    }

    /// Whether `topic` may be stored: a change to an existing topic always may; a new one
    /// only while the table stays within [`TOPIC_TABLE_BYTES_MAX`].
    pub fn room_for(&self, topic: &TopicConfig) -> Result<(), Failure> {
        self.topics.room_for(topic)
    }

    /// What a send to a missing topic creates (Java `createTopicInSendMessageMethod`): the
    /// template must exist and be inheritable; queues = min(requested, template's write
    /// queues); perm = template's without INHERIT. Retry topics get the group's
    /// `retryQueueNums` (the caller passes it), dead-letter topics one queue (Java
    /// `DLQ_NUMS_PER_GROUP`).
    pub fn derive_from_template(
        &self,
        topic: &str,
        template: &str,
        queue_nums: i32,
    ) -> Result<TopicConfig, Failure> {
        validate_topic_name(topic)?;
        if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
            let queues = queue_nums.clamp(1, QUEUE_NUMS_MAX);
            return Ok(TopicConfig::new(topic, queues, perm::READ_WRITE));
        }
        if topic.starts_with(DLQ_GROUP_TOPIC_PREFIX) || topic == TRANS_CHECK_MAX_TIME_TOPIC {
            return Ok(TopicConfig::new(topic, 1, perm::READ_WRITE));
        }
        let missing = || {
            Failure::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            )
        };
        let template_config = self.topics.get(template).ok_or_else(missing)?;
        if template_config.perm & perm::INHERIT == 0 {
            return Err(missing());
        }
        let queues = queue_nums.clamp(1, template_config.write_queue_nums.max(1));
        Ok(TopicConfig {
            perm: template_config.perm & !perm::INHERIT,
            topic_filter_type: template_config.topic_filter_type.clone(),
            ..TopicConfig::new(topic, queues, 0)
        })
    }

    /// The whole table as `topics.json` stores it: each topic's own permission, unfiltered by
    /// the broker's (which may change between runs).
    pub fn stored_wrapper(&self) -> TopicConfigSerializeWrapper {
        self.wrapper(perm::READ_WRITE | perm::INHERIT)
    }

    /// The whole table as registration and GET_ALL_TOPIC_CONFIG send it.
    pub fn wrapper(&self, broker_permission: i32) -> TopicConfigSerializeWrapper {
        let topic_config_table = self
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), advertised(topic.clone(), broker_permission)))
            .collect();
        TopicConfigSerializeWrapper {
            data_version: self.topics.data_version().clone(),
            topic_config_table,
        }
    }

    /// What shard `view.shard` registers and reports as a broker of its own: each topic with
    /// that shard's queues (`ShardView::topic`); topics with none there are left out, as a
    /// topic created on some masters of a cluster only.
    pub fn wrapper_for_shard(
        &self,
        broker_permission: i32,
        view: ShardView,
    ) -> TopicConfigSerializeWrapper {
        let mut wrapper = self.wrapper(broker_permission);
        wrapper.topic_config_table = std::mem::take(&mut wrapper.topic_config_table)
            .into_values()
            .map(|topic| view.topic(topic))
            .filter(|topic| topic.read_queue_nums > 0 || topic.write_queue_nums > 0)
            .map(|topic| (topic.topic_name.clone(), topic))
            .collect();
        wrapper
    }

    pub fn data_version(&self) -> &DataVersion {
        self.topics.data_version()
    }
}

/// `topic` as a broker with `broker_permission` announces it: a read-only broker advertises its
/// topics read-only.
pub fn advertised(mut topic: TopicConfig, broker_permission: i32) -> TopicConfig {
    if broker_permission & perm::WRITE == 0 {
        topic.perm &= broker_permission | perm::INHERIT;
    }
    topic
}

/// Topic changes the registrar has not announced yet (shard 0): it announces them one by one
/// (REGISTER_TOPIC_IN_NAMESRV) rather than the whole table, as long as there are at most
/// [`TOPIC_DELTAS_MAX`]; past that it sends the whole table.
#[derive(Debug, Default)]
pub struct TopicDeltas {
    pub topics: Vec<TopicConfig>,
    pub overflowed: bool,
}

/// Topic changes held for one registration round; more mean a whole-table registration.
pub const TOPIC_DELTAS_MAX: usize = 1024;

impl TopicDeltas {
    pub fn push(&mut self, topic: TopicConfig) {
        if self.overflowed {
            return;
        }
        if self.topics.len() == TOPIC_DELTAS_MAX {
            self.topics = Vec::new();
            self.overflowed = true;
            return;
        }
        self.topics.push(topic);
    }
}

/// One shard's share of the topics when every shard is a broker of its own
/// (`brokerPerShard`). A topic created with Q queues has Q queues in all, spread over the
/// shards by the queue-ownership function: shard `s` has the queue ids `q < Q` with
/// `owner_of(topic, q) == s`, renumbered from 0 there. So the core count never changes how
/// many queues a topic has (a one-queue topic keeps one queue, and its order), and topics
/// with few queues spread over the shards by their hash. Queue ids on the wire and in the
/// store are the shard's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardView {
    pub shard: usize,
    pub shards: usize,
}

impl ShardView {
    /// `topic` as this shard has it: its own queue counts.
    pub fn topic(&self, mut topic: TopicConfig) -> TopicConfig {
        if !whole_on_every_shard(&topic.topic_name) {
            topic.read_queue_nums = self.queue_nums(&topic.topic_name, topic.read_queue_nums);
            topic.write_queue_nums = self.queue_nums(&topic.topic_name, topic.write_queue_nums);
        }
        topic
    }

    /// An auto-created topic with `queue_nums` queues on every shard: as many in all as the
    /// shards together, so the split gives each shard exactly that many.
    pub fn auto_created(&self, mut topic: TopicConfig) -> TopicConfig {
        if !whole_on_every_shard(&topic.topic_name) {
            let total = |nums: i32| (nums.max(0) * self.shards as i32).min(QUEUE_NUMS_MAX);
            topic.read_queue_nums = total(topic.read_queue_nums);
            topic.write_queue_nums = total(topic.write_queue_nums);
        }
        topic
    }

    /// How many of a topic's `queue_nums` queues this shard has: the count of `q` in
    /// `0..queue_nums` with `(hash(topic) + q) mod shards == shard`.
    pub fn queue_nums(&self, topic: &str, queue_nums: i32) -> i32 {
        let shards = self.shards as i64;
        let hash = i64::from(java_string_hash(topic) as u32);
        // The smallest such q; the others follow every `shards` ids.
        let first = (self.shard as i64 - hash).rem_euclid(shards);
        let total = i64::from(queue_nums.max(0));
        if total <= first {
            0
        } else {
            ((total - first + shards - 1) / shards) as i32
        }
    }
}

/// Topics every shard has whole, as every RocketMQ broker has its own: the delay levels'
/// schedule queues (a delayed message waits on the shard that took it), the auto-create
/// template (every shard accepts the send that creates a topic), and the retry and dead-letter
/// topics (a message goes back to the broker that stored it), and the transaction topics (a
/// half message is checked, decided and given up by the shard that stored it).
pub fn whole_on_every_shard(topic: &str) -> bool {
    topic == SCHEDULE_TOPIC
        || topic == TRANS_HALF_TOPIC
        || topic == TRANS_OP_HALF_TOPIC
        || topic == TRANS_CHECK_MAX_TIME_TOPIC
        || topic == TIMER_TOPIC
        || topic == AUTO_CREATE_TOPIC_KEY_TOPIC
        || topic.starts_with(RETRY_GROUP_TOPIC_PREFIX)
        || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX)
}

/// RocketMQ's `RMQ_SYS_TRACE_TOPIC` (message traces).
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// Every topic named so is the system's (RocketMQ's `TopicValidator.SYSTEM_TOPIC_PREFIX`).
pub const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";

/// RocketMQ's `TopicValidator.SYSTEM_TOPIC_SET` as it starts (a Java broker adds the topics it
/// creates at start: [`system_topics`]).
const JAVA_SYSTEM_TOPICS: [&str; 9] = [
    AUTO_CREATE_TOPIC_KEY_TOPIC,
    SCHEDULE_TOPIC,
    BENCHMARK_TOPIC,
    TRANS_HALF_TOPIC,
    TRACE_TOPIC,
    TRANS_OP_HALF_TOPIC,
    TRANS_CHECK_MAX_TIME_TOPIC,
    SELF_TEST_TOPIC,
    OFFSET_MOVED_EVENT,
];

/// RocketMQ's `TopicValidator.isSystemTopic`: what CLEAN_UNUSED_TOPIC never removes.
pub fn is_system_topic(topic: &str) -> bool {
    JAVA_SYSTEM_TOPICS.contains(&topic) || topic.starts_with(SYSTEM_TOPIC_PREFIX)
}

/// `config/topics.json`.
pub fn topics_path(config: &BrokerConfig) -> PathBuf {
    config.config_dir().join("topics.json")
}

/// Topic names: 1-127 bytes of `[A-Za-z0-9%|_-]`.
pub fn validate_topic_name(topic: &str) -> Result<(), Failure> {
    match super::name_problem(topic, TOPIC_MAX_BYTES, "topic") {
        None => Ok(()),
        Some(why) => Err(Failure::new(
            response_code::MESSAGE_ILLEGAL,
            format!("The specified topic [{topic}] {why}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thruster_protocol::shard::owner_of;

    fn config() -> BrokerConfig {
        BrokerConfig {
            broker_name: "b1".into(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn system_topics_exist_and_template_inherits() {
        let table = TopicTable::with_system_topics(&config(), 1);
        let tbw = table.get(AUTO_CREATE_TOPIC_KEY_TOPIC).unwrap();
        assert_eq!(tbw.perm, 7);
        assert_eq!(tbw.write_queue_nums, 8);
        assert_eq!(table.get(SCHEDULE_TOPIC).unwrap().read_queue_nums, 18);
        assert!(table.get("b1").is_some());
        assert!(table.get("DefaultCluster_REPLY_TOPIC").is_some());
        // every topic created at start is listed as the broker's own
        let created = table.stored_wrapper().topic_config_table;
        let system = system_topics(&config());
        for topic in created.keys() {
            assert!(system.contains(topic), "{topic} not in {system:?}");
        }
        assert!(system.contains(TRACE_TOPIC) && system.contains(TRANS_HALF_TOPIC));
    }

    #[test]
    fn auto_created_topics_follow_the_template() {
        let table = TopicTable::with_system_topics(&config(), 1);
        let created = table
            .derive_from_template("NewTopic", AUTO_CREATE_TOPIC_KEY_TOPIC, 4)
            .unwrap();
        assert_eq!((created.read_queue_nums, created.write_queue_nums), (4, 4));
        assert_eq!(created.perm, 6);
        let capped = table
            .derive_from_template("Big", AUTO_CREATE_TOPIC_KEY_TOPIC, 100)
            .unwrap();
        assert_eq!(capped.write_queue_nums, 8);
        let retry = table.derive_from_template("%RETRY%g", "x", 8).unwrap();
        assert_eq!(retry.write_queue_nums, 8, "the group's retryQueueNums");
        let dlq = table.derive_from_template("%DLQ%g", "x", 8).unwrap();
        assert_eq!(dlq.write_queue_nums, 1);
        let missing = table
            .derive_from_template("T", "NoTemplate", 4)
            .unwrap_err();
        assert_eq!(missing.code, response_code::TOPIC_NOT_EXIST);
        // A non-inheritable template refuses too.
        let refused = table
            .derive_from_template("T", SELF_TEST_TOPIC, 4)
            .unwrap_err();
        assert_eq!(refused.code, response_code::TOPIC_NOT_EXIST);
        assert!(table
            .derive_from_template("bad topic", AUTO_CREATE_TOPIC_KEY_TOPIC, 4)
            .is_err());
    }

    #[test]
    fn upsert_bumps_the_version_only_on_change() {
        let mut table = TopicTable::with_system_topics(&config(), 1);
        let before = table.data_version().counter;
        assert!(table.upsert(TopicConfig::new("T", 4, 6), 2));
        assert!(!table.upsert(TopicConfig::new("T", 4, 6), 3));
        assert_eq!(table.data_version().counter, before + 1);
        let read_only = table.wrapper(perm::READ);
        assert_eq!(read_only.topic_config_table["T"].perm, perm::READ);
    }

    #[test]
    fn a_shard_has_the_queues_it_owns_and_the_shares_add_up() {
        for topic in [
            "TopicTest",
            "a",
            "Orders",
            "%RETRY%g-not-split-here",
            "x-y-z",
        ] {
            for shards in 1..=5 {
                for queue_nums in 0..=20 {
                    let mut sum = 0;
                    for shard in 0..shards {
                        let view = ShardView { shard, shards };
                        let owned = (0..queue_nums)
                            .filter(|&q| owner_of(topic, q, shards) == shard)
                            .count() as i32;
                        assert_eq!(
                            view.queue_nums(topic, queue_nums),
                            owned,
                            "{topic} {shard}/{shards} of {queue_nums}"
                        );
                        sum += owned;
                    }
                    assert_eq!(sum, queue_nums);
                }
            }
        }
    }

    #[test]
    fn shard_views_split_user_topics_and_keep_the_brokers_own_whole() {
        let config = BrokerConfig::default();
        let mut table = TopicTable::with_system_topics(&config, 1);
        table.upsert(TopicConfig::new("One", 1, perm::READ_WRITE), 2);
        table.upsert(TopicConfig::new("Four", 4, perm::READ_WRITE), 3);
        table.upsert(TopicConfig::new("%RETRY%g", 1, perm::READ_WRITE), 4);
        let views: Vec<_> = (0..2)
            .map(|shard| table.wrapper_for_shard(perm::READ_WRITE, ShardView { shard, shards: 2 }))
            .collect();
        let queues = |topic: &str| -> Vec<i32> {
            views
                .iter()
                .map(|w| {
                    w.topic_config_table
                        .get(topic)
                        .map_or(0, |t| t.write_queue_nums)
                })
                .collect()
        };
        assert_eq!(queues("Four"), vec![2, 2]);
        let one = queues("One");
        assert_eq!(one.iter().sum::<i32>(), 1, "one queue in all: {one:?}");
        assert_eq!(
            views
                .iter()
                .filter(|w| w.topic_config_table.contains_key("One"))
                .count(),
            1,
            "a topic is left out where the shard has none of its queues"
        );
        assert_eq!(queues("%RETRY%g"), vec![1, 1]);
        assert_eq!(queues(SCHEDULE_TOPIC), vec![18, 18]);
        assert_eq!(queues(AUTO_CREATE_TOPIC_KEY_TOPIC), vec![8, 8]);
    }

    #[test]
    fn an_auto_created_topic_has_the_templates_count_on_every_shard() {
        for shards in 1..=4 {
            let view = ShardView { shard: 0, shards };
            let created = view.auto_created(TopicConfig::new("Auto", 4, perm::READ_WRITE));
            for shard in 0..shards {
                let share = ShardView { shard, shards }.topic(created.clone());
                assert_eq!((share.read_queue_nums, share.write_queue_nums), (4, 4));
            }
            let retry = view.auto_created(TopicConfig::new("%RETRY%g", 1, perm::READ_WRITE));
            assert_eq!(retry.write_queue_nums, 1, "whole on every shard already");
        }
    }

    #[test]
    fn new_topics_are_refused_past_the_memory_bound_and_old_ones_still_change() {
        let mut table = TopicTable::with_system_topics(&config(), 0);
        let mut created = 0;
        let refused = loop {
            let topic = TopicConfig::new(format!("T{created}"), 4, perm::READ_WRITE);
            match table.room_for(&topic) {
                Ok(()) => assert!(table.upsert(topic, 0)),
                Err(refused) => break refused,
            }
            created += 1;
        };
        assert!(table.table_bytes() <= TOPIC_TABLE_BYTES_MAX);
        assert!(
            refused.remark.contains("topic table full"),
            "{}",
            refused.remark
        );
        let changed = TopicConfig::new("T0", 8, perm::READ_WRITE);
        assert!(
            table.room_for(&changed).is_ok(),
            "an existing topic may change"
        );
        assert!(table.upsert(changed, 1));
        let bytes = table.table_bytes();
        assert!(table.remove("T1", 2));
        assert!(table.table_bytes() < bytes, "removal gives memory back");
        assert!(created > 1000);
    }
}
