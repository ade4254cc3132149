//! Topic configuration bodies: `TopicConfig`, `DataVersion`, `TopicConfigSerializeWrapper`,
//! `RegisterBrokerBody`, plus the small list/table bodies the name server answers with.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Topic permission bits (`PermName`).
pub mod perm {
    pub const PRIORITY: i32 = 8;
    pub const READ: i32 = 4;
    pub const WRITE: i32 = 2;
    pub const INHERIT: i32 = 1;
    /// A normal topic.
    pub const READ_WRITE: i32 = READ | WRITE;

    pub fn is_readable(perm: i32) -> bool {
        perm & READ != 0
    }

    pub fn is_writeable(perm: i32) -> bool {
        perm & WRITE != 0
    }
}

/// `DataVersion`: a broker's topic-config version. 4.9 has `counter` and `timestamp`; 5.x adds
/// `stateVersion`. Equal when all fields are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub counter: i64,
    pub state_version: i64,
    pub timestamp: i64,
}

impl DataVersion {
    /// Bumps the version after a change (Java `nextVersion`).
    pub fn next(&mut self, now_ms: i64) {
        self.counter += 1;
        self.timestamp = now_ms;
    }
}

/// `TopicConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    /// 5.x attributes; omitted when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    pub order: bool,
    pub perm: i32,
    pub read_queue_nums: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    pub topic_filter_type: String,
    pub topic_name: String,
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            attributes: BTreeMap::new(),
            order: false,
            perm: perm::READ_WRITE,
            read_queue_nums: 16,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_name: String::new(),
            topic_sys_flag: 0,
            write_queue_nums: 16,
        }
    }
}

impl TopicConfig {
    pub fn new(topic_name: impl Into<String>, queue_nums: i32, perm: i32) -> TopicConfig {
        TopicConfig {
            topic_name: topic_name.into(),
            read_queue_nums: queue_nums,
            write_queue_nums: queue_nums,
            perm,
            ..TopicConfig::default()
        }
    }
}

/// `TopicConfigSerializeWrapper` (also the content of `config/topics.json`). 5.x adds static
/// topic mapping properties, which are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub data_version: DataVersion,
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// REGISTER_BROKER body (uncompressed form, request version >= 37).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub filter_server_list: Vec<String>,
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER and friends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
    pub topic_list: BTreeSet<String>,
}

/// `KVTable`: GET_KVLIST_BY_NAMESPACE, GET_BROKER_RUNTIME_INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::codec::{decode_lenient, encode};

    #[test]
    fn register_body_matches_the_java_shape_and_round_trips() {
        let mut body = RegisterBrokerBody::default();
        body.topic_config_serialize_wrapper.data_version = DataVersion {
            counter: 3,
            state_version: 0,
            timestamp: 1700000000000,
        };
        body.topic_config_serialize_wrapper
            .topic_config_table
            .insert("T".into(), TopicConfig::new("T", 4, perm::READ_WRITE));
        let text = String::from_utf8(encode(&body)).unwrap();
        assert_eq!(
            text,
            r#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,"stateVersion":0,"timestamp":1700000000000},"topicConfigTable":{"T":{"order":false,"perm":6,"readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"T","topicSysFlag":0,"writeQueueNums":4}}}}"#
        );
        let back: RegisterBrokerBody = decode_lenient("register", text.as_bytes()).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn java_4_9_body_without_state_version_or_with_extras_is_read() {
        let java = br#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":1,"timestamp":5},"topicConfigTable":{"TBW102":{"order":false,"perm":7,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"TBW102","topicSysFlag":0,"writeQueueNums":8}},"mappingDataVersion":{"counter":0}}}"#;
        let body: RegisterBrokerBody = decode_lenient("register", java).unwrap();
        let wrapper = body.topic_config_serialize_wrapper;
        assert_eq!(wrapper.data_version.counter, 1);
        assert_eq!(wrapper.topic_config_table["TBW102"].perm, 7);
    }

    #[test]
    fn small_bodies_round_trip() {
        let list = TopicList {
            broker_addr: None,
            topic_list: ["b".to_string(), "a".to_string()].into_iter().collect(),
        };
        let text = encode(&list);
        assert_eq!(text, br#"{"topicList":["a","b"]}"#);
        assert_eq!(decode_lenient::<TopicList>("list", &text).unwrap(), list);
        let mut kv = KvTable::default();
        kv.table.insert("k".into(), "v".into());
        assert_eq!(decode_lenient::<KvTable>("kv", &encode(&kv)).unwrap(), kv);
        assert!(decode_lenient::<KvTable>("kv", b"{not json").is_err());
    }
}
