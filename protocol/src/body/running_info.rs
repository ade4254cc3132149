//! `ConsumerRunningInfo`: a consumer's answer to GET_CONSUMER_RUNNING_INFO (307), which the
//! broker forwards from an operator (mqadmin `consumerStatus`, rocketmq-dashboard) to the
//! client and passes back unchanged.
//!
//! Layout (fastjson, properties in alphabetical order, `jstack` omitted when null):
//! `{"jstack":"…","mqPopTable":{},"mqTable":{{"brokerName":"b","queueId":0,"topic":"T"}:
//! {ProcessQueueInfo},…},"properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY",…},
//! "statusTable":{"T":{ConsumeStatus}},"subscriptionSet":[{SubscriptionData},…],
//! "userConsumerInfo":{}}`. `mqTable` is keyed by `MessageQueue` objects, written as bare
//! object keys like every such map ([`fastjson::write_object_key_map`]). `mqPopTable` and
//! `userConsumerInfo` are RocketMQ 5's additions, empty here (a 4.9 reader ignores them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::codec::{decode_lenient, BodyError};
use super::heartbeat::{MessageQueue, SubscriptionData};
use crate::fastjson;

/// `ConsumerRunningInfo.PROP_NAMESERVER_ADDR`: the name servers, each followed by `;`.
pub const PROP_NAMESERVER_ADDR: &str = "PROP_NAMESERVER_ADDR";
/// `PROP_THREADPOOL_CORE_SIZE`: the consume pool's core size.
pub const PROP_THREADPOOL_CORE_SIZE: &str = "PROP_THREADPOOL_CORE_SIZE";
/// `PROP_CONSUME_ORDERLY` (its wire name is `PROP_CONSUMEORDERLY`): `true` / `false`.
pub const PROP_CONSUME_ORDERLY: &str = "PROP_CONSUMEORDERLY";
/// `PROP_CONSUME_TYPE`: `CONSUME_PASSIVELY` (push) or `CONSUME_ACTIVELY` (pull).
pub const PROP_CONSUME_TYPE: &str = "PROP_CONSUME_TYPE";
/// `PROP_CLIENT_VERSION`: `MQVersion`'s name of the client's version (`V4_9_8`).
pub const PROP_CLIENT_VERSION: &str = "PROP_CLIENT_VERSION";
/// `PROP_CONSUMER_START_TIMESTAMP`: when the consumer started, ms since the epoch.
pub const PROP_CONSUMER_START_TIMESTAMP: &str = "PROP_CONSUMER_START_TIMESTAMP";

/// `ProcessQueueInfo`: one queue the consumer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessQueueInfo {
    pub cached_msg_count: i32,
    pub cached_msg_max_offset: i64,
    pub cached_msg_min_offset: i64,
    #[serde(rename = "cachedMsgSizeInMiB")]
    pub cached_msg_size_in_mib: i32,
    /// The next offset to consume (what the consumer commits).
    pub commit_offset: i64,
    /// Java's spelling.
    pub droped: bool,
    pub last_consume_timestamp: i64,
    pub last_lock_timestamp: i64,
    pub last_pull_timestamp: i64,
    pub locked: bool,
    pub transaction_msg_count: i32,
    pub transaction_msg_max_offset: i64,
    pub transaction_msg_min_offset: i64,
    pub try_unlock_times: i64,
}

/// `ConsumeStatus`: one topic's figures over the last minute (failed messages: last hour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumeStatus {
    #[serde(rename = "consumeFailedMsgs")]
    pub consume_failed_msgs: i64,
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    /// Average ms per listener call.
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    /// Average ms per pull.
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    /// Messages pulled per second.
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
}

/// `ConsumerRunningInfo`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerRunningInfo {
    pub jstack: Option<String>,
    #[serde(deserialize_with = "fastjson::object_keys::deserialize")]
    pub mq_table: BTreeMap<MessageQueue, ProcessQueueInfo>,
    /// Java `Properties`: string keys and values.
    pub properties: BTreeMap<String, String>,
    pub status_table: BTreeMap<String, ConsumeStatus>,
    /// Java's `TreeSet<SubscriptionData>`: a JSON array.
    pub subscription_set: Vec<SubscriptionData>,
}

impl ConsumerRunningInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from("{");
        if let Some(jstack) = &self.jstack {
            out.push_str(&format!("\"jstack\":{},", json(jstack)));
        }
        out.push_str("\"mqPopTable\":{},\"mqTable\":");
        fastjson::write_object_key_map(&mut out, &self.mq_table);
        out.push_str(&format!(
            ",\"properties\":{},\"statusTable\":{},\"subscriptionSet\":{},\"userConsumerInfo\":{{}}}}",
            json(&self.properties),
            json(&self.status_table),
            json(&self.subscription_set),
        ));
        out.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ConsumerRunningInfo, BodyError> {
        decode_lenient("consumer running info", body)
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConsumerRunningInfo {
        let queue = MessageQueue {
            topic: "T".into(),
            broker_name: "b-s0".into(),
            queue_id: 1,
        };
        ConsumerRunningInfo {
            jstack: Some("thread \"main\"\n".into()),
            mq_table: [(
                queue,
                ProcessQueueInfo {
                    commit_offset: 7,
                    locked: true,
                    ..ProcessQueueInfo::default()
                },
            )]
            .into(),
            properties: [(PROP_CONSUME_TYPE.to_owned(), "CONSUME_PASSIVELY".to_owned())].into(),
            status_table: [(
                "T".to_owned(),
                ConsumeStatus {
                    pull_tps: 1.5,
                    ..ConsumeStatus::default()
                },
            )]
            .into(),
            subscription_set: vec![SubscriptionData {
                topic: "T".into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
        }
    }

    #[test]
    fn round_trips_through_fastjson_text() {
        let info = sample();
        assert_eq!(ConsumerRunningInfo::decode(&info.encode()).unwrap(), info);
        let without_stack = ConsumerRunningInfo {
            jstack: None,
            ..sample()
        };
        let text = String::from_utf8(without_stack.encode()).unwrap();
        assert!(!text.contains("jstack"), "null jstack omitted: {text}");
    }

    #[test]
    fn writes_java_names_in_fastjson_order() {
        let text = String::from_utf8(sample().encode()).unwrap();
        let order = [
            "\"jstack\"",
            "\"mqPopTable\":{}",
            "\"mqTable\":{{\"brokerName\":\"b-s0\",\"queueId\":1,\"topic\":\"T\"}:{\"cachedMsgCount\":0",
            "\"cachedMsgSizeInMiB\":0,\"commitOffset\":7,\"droped\":false",
            "\"locked\":true",
            "\"properties\":{\"PROP_CONSUME_TYPE\":\"CONSUME_PASSIVELY\"}",
            "\"statusTable\":{\"T\":{\"consumeFailedMsgs\":0,\"consumeFailedTPS\":0.0,\"consumeOKTPS\":0.0,\"consumeRT\":0.0,\"pullRT\":0.0,\"pullTPS\":1.5}}",
            "\"subscriptionSet\":[{\"classFilterMode\":false",
            "\"userConsumerInfo\":{}}",
        ];
        let mut from = 0;
        for part in order {
            let at = text[from..]
                .find(part)
                .unwrap_or_else(|| panic!("{part} after byte {from} in {text}"));
            from += at + part.len();
        }
    }
}
