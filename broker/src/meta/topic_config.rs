//! The topic table. Shard 0 is its only writer (creation, auto-creation, persistence to
//! `config/topics.json`); every other shard keeps a read-only copy, updated by message.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thruster_client::protocol::body::{
    perm, DataVersion, TopicConfig, TopicConfigSerializeWrapper,
};
use thruster_client::protocol::message::TOPIC_MAX_BYTES;
use thruster_client::protocol::response_code;

use crate::config::BrokerConfig;
use crate::remoting::Failure;

pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
pub const BENCHMARK_TOPIC: &str = "BenchmarkTest";
pub const OFFSET_MOVED_EVENT: &str = "OFFSET_MOVED_EVENT";
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";
/// Queue count limit of one topic (each queue is a ConsumeQueue directory).
pub const QUEUE_NUMS_MAX: i32 = 1024;

#[derive(Debug, Clone, Default)]
pub struct TopicTable {
    topics: BTreeMap<String, TopicConfig>,
    data_version: DataVersion,
}

impl TopicTable {
    /// The topics a broker creates at start (features.md §9).
    pub fn with_system_topics(config: &BrokerConfig, now_ms: i64) -> TopicTable {
        let mut table = TopicTable::default();
        let mut add = |topic: TopicConfig| {
            table.topics.insert(topic.topic_name.clone(), topic);
        };
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
        add(TopicConfig::new(
            format!("{}_REPLY_TOPIC", config.broker_cluster_name),
            1,
            perm::READ_WRITE,
        ));
        table.data_version.next(now_ms);
        table
    }

    /// Adds the topics of a persisted table (they win over the built-in defaults).
    pub fn merge_persisted(&mut self, persisted: TopicConfigSerializeWrapper) {
        self.topics.extend(persisted.topic_config_table);
        self.data_version.counter = self
            .data_version
            .counter
            .max(persisted.data_version.counter);
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
        if self.topics.get(&topic.topic_name) == Some(&topic) {
            return false;
        }
        self.topics.insert(topic.topic_name.clone(), topic);
        self.data_version.next(now_ms);
        true
    }

    pub fn remove(&mut self, topic: &str, now_ms: i64) -> bool {
        let removed = self.topics.remove(topic).is_some();
        if removed {
            self.data_version.next(now_ms);
        }
        removed
    }

    /// What a send to a missing topic creates (Java `createTopicInSendMessageMethod`): the
    /// template must exist and be inheritable; queues = min(requested, template's write
    /// queues); perm = template's without INHERIT. Retry topics get one queue.
    pub fn derive_from_template(
        &self,
        topic: &str,
        template: &str,
        queue_nums: i32,
    ) -> Result<TopicConfig, Failure> {
        validate_topic_name(topic)?;
        if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX)
        {
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

    /// The whole table as registration and GET_ALL_TOPIC_CONFIG send it.
    pub fn wrapper(&self, broker_permission: i32) -> TopicConfigSerializeWrapper {
        let topic_config_table = self
            .topics
            .iter()
            .map(|(name, topic)| {
                let mut topic = topic.clone();
                // A read-only broker advertises its topics read-only.
                if broker_permission & perm::WRITE == 0 {
                    topic.perm &= broker_permission | perm::INHERIT;
                }
                (name.clone(), topic)
            })
            .collect();
        TopicConfigSerializeWrapper {
            data_version: self.data_version.clone(),
            topic_config_table,
        }
    }

    pub fn data_version(&self) -> &DataVersion {
        &self.data_version
    }
}

/// `config/topics.json`.
pub fn topics_path(config: &BrokerConfig) -> PathBuf {
    config.config_dir().join("topics.json")
}

/// Topic names: 1-127 bytes of `[A-Za-z0-9%|_-]`, not the template's name pattern abuse.
pub fn validate_topic_name(topic: &str) -> Result<(), Failure> {
    let illegal = |why: &str| {
        Failure::new(
            response_code::MESSAGE_ILLEGAL,
            format!("The specified topic [{topic}] {why}"),
        )
    };
    if topic.is_empty() {
        return Err(illegal("is blank"));
    }
    if topic.len() > TOPIC_MAX_BYTES {
        return Err(illegal("is longer than topic max length 127"));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return Err(illegal(
            "contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(retry.write_queue_nums, 1);
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
}
