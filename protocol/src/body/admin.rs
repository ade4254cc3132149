//! Admin bodies mqadmin and rocketmq-dashboard read (RocketMQ 4.9 field names):
//! `TopicStatsTable` (GET_TOPIC_STATS_INFO), `ConsumeStats` (GET_CONSUME_STATS),
//! `ResetOffsetBody` (INVOKE_BROKER_TO_RESET_OFFSET, RESET_CONSUMER_CLIENT_OFFSET),
//! `ConsumerConnection` / `ProducerConnection` (GET_CONSUMER/PRODUCER_CONNECTION_LIST),
//! `GroupList` (QUERY_TOPIC_CONSUME_BY_WHO), `QueryConsumeTimeSpanBody`
//! (QUERY_CONSUME_TIME_SPAN), `ConsumeStatsList` (GET_BROKER_CONSUME_STATS),
//! `BrokerStatsData` (VIEW_BROKER_STATS_DATA), `ProducerTableInfo` (GET_ALL_PRODUCER_INFO),
//! `QueryConsumeQueueResponseBody` (QUERY_CONSUME_QUEUE).
//!
//! Java keys some maps by `MessageQueue`; fastjson writes those keys as bare objects
//! (`{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{…}}}`), which is not JSON.
//! Bodies holding such a map encode by hand ([`fastjson::write_object_key_map`]) and decode
//! through [`decode_lenient`] (which quotes the keys) and [`fastjson::object_keys`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::codec::{decode_lenient, BodyError};
use super::heartbeat::{MessageQueue, SubscriptionData};
use crate::fastjson;

/// `TopicOffset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    pub last_update_timestamp: i64,
    pub max_offset: i64,
    pub min_offset: i64,
}

/// `TopicStatsTable`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicStatsTable {
    #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
    pub offset_table: BTreeMap<MessageQueue, TopicOffset>,
}

impl TopicStatsTable {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from("{\"offsetTable\":");
        fastjson::write_object_key_map(&mut out, &self.offset_table);
        out.push('}');
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<TopicStatsTable, BodyError> {
        decode_lenient("topic stats table", body)
    }
}

/// `OffsetWrapper` (4.9: no `pullOffset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsetWrapper {
    pub broker_offset: i64,
    pub consumer_offset: i64,
    pub last_timestamp: i64,
}

/// `ConsumeStats`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeStats {
    pub consume_tps: f64,
    #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
    pub offset_table: BTreeMap<MessageQueue, OffsetWrapper>,
}

impl ConsumeStats {
    pub fn encode(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }

    fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"consumeTps\":{},\"offsetTable\":",
            serde_json::to_string(&self.consume_tps).expect("a number")
        );
        fastjson::write_object_key_map(&mut out, &self.offset_table);
        out.push('}');
        out
    }

    pub fn decode(body: &[u8]) -> Result<ConsumeStats, BodyError> {
        decode_lenient("consume stats", body)
    }

    /// Messages not yet consumed: Σ (brokerOffset − consumerOffset) (Java `computeTotalDiff`).
    pub fn total_diff(&self) -> i64 {
        self.offset_table
            .values()
            .map(|o| o.broker_offset - o.consumer_offset)
            .sum()
    }
}

/// `ResetOffsetBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResetOffsetBody {
    #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
    pub offset_table: BTreeMap<MessageQueue, i64>,
}

impl ResetOffsetBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from("{\"offsetTable\":");
        fastjson::write_object_key_map(&mut out, &self.offset_table);
        out.push('}');
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ResetOffsetBody, BodyError> {
        decode_lenient("reset offset body", body)
    }
}

/// `GetConsumerStatusBody`: a client's answer to GET_CONSUMER_STATUS_FROM_CLIENT fills
/// `message_queue_table` (its offsets); the broker's answer to INVOKE_BROKER_TO_GET_CONSUMER_STATUS
/// fills `consumer_table` (client id -> its table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetConsumerStatusBody {
    #[serde(deserialize_with = "consumer_tables")]
    pub consumer_table: BTreeMap<String, BTreeMap<MessageQueue, i64>>,
    #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
    pub message_queue_table: BTreeMap<MessageQueue, i64>,
}

fn consumer_tables<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, BTreeMap<MessageQueue, i64>>, D::Error> {
    #[derive(Deserialize)]
    struct Table(
        #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
        BTreeMap<MessageQueue, i64>,
    );
    let tables = BTreeMap::<String, Table>::deserialize(deserializer)?;
    Ok(tables.into_iter().map(|(k, t)| (k, t.0)).collect())
}

impl GetConsumerStatusBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from("{\"consumerTable\":{");
        for (i, (client, table)) in self.consumer_table.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(client).expect("a string"));
            out.push(':');
            fastjson::write_object_key_map(&mut out, table);
        }
        out.push_str("},\"messageQueueTable\":");
        fastjson::write_object_key_map(&mut out, &self.message_queue_table);
        out.push('}');
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<GetConsumerStatusBody, BodyError> {
        decode_lenient("consumer status", body)
    }
}

/// `Connection`: one client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Connection {
    pub client_addr: String,
    pub client_id: String,
    /// `LanguageCode` name: `JAVA`, `CPP`, `GO`, `RUST`, …
    pub language: String,
    pub version: i32,
}

/// `ConsumerConnection`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    pub connection_set: BTreeSet<Connection>,
    pub consume_from_where: String,
    pub consume_type: String,
    pub message_model: String,
    pub subscription_table: BTreeMap<String, SubscriptionData>,
}

/// `ProducerConnection`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    pub connection_set: BTreeSet<Connection>,
}

/// `GroupList`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupList {
    pub group_list: BTreeSet<String>,
}

/// `QueueTimeSpan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueTimeSpan {
    pub consume_time_stamp: i64,
    pub delay_time: i64,
    pub max_time_stamp: i64,
    pub message_queue: MessageQueue,
    pub min_time_stamp: i64,
}

/// `QueryConsumeTimeSpanBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryConsumeTimeSpanBody {
    pub consume_time_span_set: Vec<QueueTimeSpan>,
}

/// `ConsumeStatsList` (GET_BROKER_CONSUME_STATS): per group, its `ConsumeStats` per topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumeStatsList {
    pub broker_addr: String,
    pub consume_stats_list: Vec<BTreeMap<String, Vec<ConsumeStats>>>,
    pub total_diff: i64,
}

impl ConsumeStatsList {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\"brokerAddr\":{},\"consumeStatsList\":[",
            serde_json::to_string(&self.broker_addr).expect("a string")
        );
        for (i, groups) in self.consume_stats_list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            for (j, (group, stats)) in groups.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(group).expect("a string"));
                out.push_str(":[");
                let each: Vec<String> = stats.iter().map(ConsumeStats::to_json).collect();
                out.push_str(&each.join(","));
                out.push(']');
            }
            out.push('}');
        }
        out.push_str(&format!("],\"totalDiff\":{}}}", self.total_diff));
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ConsumeStatsList, BodyError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Wire {
            broker_addr: String,
            consume_stats_list: Vec<BTreeMap<String, Vec<ConsumeStats>>>,
            total_diff: i64,
        }
        let wire: Wire = decode_lenient("consume stats list", body)?;
        Ok(ConsumeStatsList {
            broker_addr: wire.broker_addr,
            consume_stats_list: wire.consume_stats_list,
            total_diff: wire.total_diff,
        })
    }
}

/// `BrokerStatsItem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerStatsItem {
    pub avgpt: f64,
    pub sum: i64,
    pub tps: f64,
}

/// `BrokerStatsData` (VIEW_BROKER_STATS_DATA).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerStatsData {
    pub stats_day: BrokerStatsItem,
    pub stats_hour: BrokerStatsItem,
    pub stats_minute: BrokerStatsItem,
}

/// `ProducerInfo` (GET_ALL_PRODUCER_INFO).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerInfo {
    pub client_id: String,
    pub language: String,
    pub last_update_timestamp: i64,
    #[serde(rename = "remoteIP")]
    pub remote_ip: String,
    pub version: i32,
}

/// `ProducerTableInfo`: producer group → its producers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerTableInfo {
    pub data: BTreeMap<String, Vec<ProducerInfo>>,
}

/// `ConsumeQueueData`: one ConsumeQueue entry (QUERY_CONSUME_QUEUE).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeQueueData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bit_map: Option<String>,
    pub eval: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_data_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    pub physic_offset: i64,
    pub physic_size: i32,
    pub tags_code: i64,
}

/// `QueryConsumeQueueResponseBody`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryConsumeQueueResponseBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_data: Option<String>,
    pub max_queue_index: i64,
    pub min_queue_index: i64,
    pub queue_data: Vec<ConsumeQueueData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_data: Option<SubscriptionData>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::codec::encode;

    fn mq(queue_id: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id,
        }
    }

    #[test]
    fn message_queue_keyed_maps_are_written_with_bare_object_keys_and_read_back() {
        let mut stats = TopicStatsTable::default();
        stats.offset_table.insert(
            mq(0),
            TopicOffset {
                last_update_timestamp: 5,
                max_offset: 10,
                min_offset: 1,
            },
        );
        let text = String::from_utf8(stats.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"lastUpdateTimestamp":5,"maxOffset":10,"minOffset":1}}}"#
        );
        assert_eq!(TopicStatsTable::decode(text.as_bytes()).unwrap(), stats);

        let mut consume = ConsumeStats {
            consume_tps: 1.5,
            ..ConsumeStats::default()
        };
        for q in 0..2 {
            consume.offset_table.insert(
                mq(q),
                OffsetWrapper {
                    broker_offset: 10,
                    consumer_offset: 4 + i64::from(q),
                    last_timestamp: 0,
                },
            );
        }
        let text = consume.encode();
        assert!(String::from_utf8_lossy(&text)
            .starts_with(r#"{"consumeTps":1.5,"offsetTable":{{"brokerName""#));
        let back = ConsumeStats::decode(&text).unwrap();
        assert_eq!(back, consume);
        assert_eq!(back.total_diff(), 6 + 5);

        let mut reset = ResetOffsetBody::default();
        reset.offset_table.insert(mq(3), 42);
        assert_eq!(
            String::from_utf8(reset.encode()).unwrap(),
            r#"{"offsetTable":{{"brokerName":"b","queueId":3,"topic":"T"}:42}}"#
        );
        assert_eq!(ResetOffsetBody::decode(&reset.encode()).unwrap(), reset);

        let list = ConsumeStatsList {
            broker_addr: "127.0.0.1:10911".into(),
            consume_stats_list: vec![[("g".to_string(), vec![consume.clone()])]
                .into_iter()
                .collect()],
            total_diff: 11,
        };
        assert_eq!(ConsumeStatsList::decode(&list.encode()).unwrap(), list);

        let mut status = GetConsumerStatusBody::default();
        status.message_queue_table.insert(mq(1), 7);
        status
            .consumer_table
            .insert("client-a".into(), [(mq(2), 9)].into_iter().collect());
        let text = String::from_utf8(status.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"consumerTable":{"client-a":{{"brokerName":"b","queueId":2,"topic":"T"}:9}},"messageQueueTable":{{"brokerName":"b","queueId":1,"topic":"T"}:7}}"#
        );
        assert_eq!(
            GetConsumerStatusBody::decode(text.as_bytes()).unwrap(),
            status
        );
    }

    #[test]
    fn java_written_bodies_are_read() {
        // As a Java 4.9 broker answers GET_CONSUME_STATS (fastjson, bare object keys).
        let java = br#"{"consumeTps":0.0,"offsetTable":{{"brokerName":"broker-a","queueId":1,"topic":"TopicTest"}:{"brokerOffset":250,"consumerOffset":248,"lastTimestamp":1700000000000}}}"#;
        let stats = ConsumeStats::decode(java).unwrap();
        let (queue, offsets) = stats.offset_table.iter().next().unwrap();
        assert_eq!(
            (queue.broker_name.as_str(), queue.queue_id),
            ("broker-a", 1)
        );
        assert_eq!(offsets.broker_offset - offsets.consumer_offset, 2);
        // ConsumerConnection as Java writes it.
        let java = br#"{"connectionSet":[{"clientAddr":"127.0.0.1:5555","clientId":"10.0.0.1@1","language":"JAVA","version":409}],"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","subscriptionTable":{"T":{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1,"tagsSet":[],"topic":"T"}}}"#;
        let connection: ConsumerConnection = decode_lenient("consumer connection", java).unwrap();
        assert_eq!(connection.connection_set.len(), 1);
        assert_eq!(connection.subscription_table["T"].sub_string, "*");
        assert_eq!(
            String::from_utf8(encode(&connection)).unwrap().as_bytes(),
            java
        );
    }

    #[test]
    fn plain_bodies_round_trip() {
        let groups = GroupList {
            group_list: ["a".to_string()].into_iter().collect(),
        };
        assert_eq!(
            String::from_utf8(encode(&groups)).unwrap(),
            r#"{"groupList":["a"]}"#
        );
        let span = QueryConsumeTimeSpanBody {
            consume_time_span_set: vec![QueueTimeSpan {
                message_queue: mq(0),
                ..QueueTimeSpan::default()
            }],
        };
        assert_eq!(
            decode_lenient::<QueryConsumeTimeSpanBody>("span", &encode(&span)).unwrap(),
            span
        );
        let producers = ProducerTableInfo {
            data: [(
                "pg".to_string(),
                vec![ProducerInfo {
                    remote_ip: "127.0.0.1:1".into(),
                    ..ProducerInfo::default()
                }],
            )]
            .into_iter()
            .collect(),
        };
        let text = String::from_utf8(encode(&producers)).unwrap();
        assert!(text.contains(r#""remoteIP":"127.0.0.1:1""#), "{text}");
        assert_eq!(
            decode_lenient::<ProducerTableInfo>("producers", text.as_bytes()).unwrap(),
            producers
        );
        let data = BrokerStatsData::default();
        assert_eq!(
            decode_lenient::<BrokerStatsData>("stats", &encode(&data)).unwrap(),
            data
        );
        let queue = QueryConsumeQueueResponseBody::default();
        assert_eq!(
            decode_lenient::<QueryConsumeQueueResponseBody>("cq", &encode(&queue)).unwrap(),
            queue
        );
    }
}
