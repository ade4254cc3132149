//! Client registration bodies: `HeartbeatData` (HEART_BEAT), `ConsumerListBody`
//! (GET_CONSUMER_LIST_BY_GROUP), `LockBatchRequestBody`/`LockBatchResponseBody`
//! (LOCK/UNLOCK_BATCH_MQ), `CheckClientRequestBody` (CHECK_CLIENT_CONFIG).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// `MessageQueue`: (topic, brokerName, queueId). Ordered as Java sorts it for rebalance: topic,
/// then brokerName, then queueId.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

// Wire order is alphabetical (brokerName, queueId, topic); the derive order above is the sort
// order. serde writes fields in declaration order, so serialize through a mirror.
mod message_queue_wire {
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Wire<'a> {
        pub broker_name: &'a str,
        pub queue_id: i32,
        pub topic: &'a str,
    }
}

impl Serialize for MessageQueue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        message_queue_wire::Wire {
            broker_name: &self.broker_name,
            queue_id: self.queue_id,
            topic: &self.topic,
        }
        .serialize(serializer)
    }
}

impl MessageQueue {
    /// The fastjson form, also used as a bare object key.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a message queue always serializes")
    }
}

/// `SubscriptionData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    /// Java `String.hashCode()` of each tag.
    pub code_set: BTreeSet<i32>,
    /// `TAG` or `SQL92`.
    pub expression_type: String,
    pub sub_string: String,
    #[serde(deserialize_with = "super::lenient::i64_or_string")]
    pub sub_version: i64,
    pub tags_set: BTreeSet<String>,
    pub topic: String,
}

/// `ConsumerData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    /// `CONSUME_FROM_LAST_OFFSET`, `CONSUME_FROM_FIRST_OFFSET`, `CONSUME_FROM_TIMESTAMP`, ...
    /// (C++ clients send the ordinal; it is read as the name.)
    #[serde(deserialize_with = "super::lenient::consume_from_where")]
    pub consume_from_where: String,
    /// `CONSUME_ACTIVELY` (pull) or `CONSUME_PASSIVELY` (push).
    #[serde(deserialize_with = "super::lenient::consume_type")]
    pub consume_type: String,
    pub group_name: String,
    /// `CLUSTERING` or `BROADCASTING`.
    #[serde(deserialize_with = "super::lenient::message_model")]
    pub message_model: String,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// `ProducerData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// `HeartbeatData`: HEART_BEAT body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatData {
    /// Capital `ID`, as in Java.
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "consumerDataSet")]
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x heartbeat V2.
    #[serde(
        rename = "heartbeatFingerprint",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_fingerprint: Option<i32>,
    #[serde(rename = "producerDataSet")]
    pub producer_data_set: Vec<ProducerData>,
    #[serde(rename = "withoutSub", skip_serializing_if = "Option::is_none")]
    pub without_sub: Option<bool>,
}

/// GET_CONSUMER_LIST_BY_GROUP response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerListBody {
    pub consumer_id_list: Vec<String>,
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub client_id: String,
    pub consumer_group: String,
    pub mq_set: BTreeSet<MessageQueue>,
    /// 5.x.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_this_broker: Option<bool>,
}

/// LOCK_BATCH_MQ response body: the queues the caller now holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

/// CHECK_CLIENT_CONFIG request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    pub subscription_data: SubscriptionData,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::codec::{decode_lenient, encode};

    /// A heartbeat as a Java 4.9.8 push consumer sends it.
    const JAVA_HEARTBEAT: &str = r#"{"clientID":"192.168.1.5@12345#123456789","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"cg","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"TopicTest"},{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1700000000001,"tagsSet":[],"topic":"%RETRY%cg"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;

    /// A heartbeat as the C++ client 2.x (PyPI `rocketmq` 0.4.4) sends it: enum ordinals,
    /// `subVersion` as a string, a trailing newline, no `expressionType`.
    const CPP_HEARTBEAT: &str = "{\"clientID\":\"127.0.0.1@1234#0\",\"consumerDataSet\":[{\"consumeFromWhere\":0,\"consumeType\":1,\"groupName\":\"CG\",\"messageModel\":1,\"subscriptionDataSet\":[{\"codeSet\":[2598919],\"subString\":\"TagA\",\"subVersion\":\"1700000000000\",\"tagsSet\":[\"TagA\"],\"topic\":\"TopicA\"}]}],\"producerDataSet\":[{\"groupName\":\"PG\"}]}\n";

    #[test]
    fn cpp_heartbeat_decodes_with_enum_names() {
        let hb: HeartbeatData = decode_lenient("heartbeat", CPP_HEARTBEAT.as_bytes()).unwrap();
        let consumer = &hb.consumer_data_set[0];
        assert_eq!(consumer.consume_type, "CONSUME_PASSIVELY");
        assert_eq!(consumer.message_model, "CLUSTERING");
        assert_eq!(consumer.consume_from_where, "CONSUME_FROM_LAST_OFFSET");
        assert_eq!(
            consumer.subscription_data_set[0].sub_version,
            1_700_000_000_000
        );
        assert_eq!(hb.producer_data_set[0].group_name, "PG");
        let bad = CPP_HEARTBEAT.replace("\"messageModel\":1", "\"messageModel\":7");
        assert!(decode_lenient::<HeartbeatData>("heartbeat", bad.as_bytes()).is_err());
    }

    #[test]
    fn java_heartbeat_decodes_and_re_encodes_identically() {
        let hb: HeartbeatData = decode_lenient("heartbeat", JAVA_HEARTBEAT.as_bytes()).unwrap();
        assert_eq!(hb.client_id, "192.168.1.5@12345#123456789");
        let consumer = &hb.consumer_data_set[0];
        assert_eq!(consumer.message_model, "CLUSTERING");
        assert_eq!(
            consumer.subscription_data_set[0].code_set.iter().next(),
            Some(&2598919)
        );
        assert_eq!(String::from_utf8(encode(&hb)).unwrap(), JAVA_HEARTBEAT);
    }

    #[test]
    fn lock_bodies_round_trip_with_java_property_names() {
        let mq = MessageQueue {
            topic: "t".into(),
            broker_name: "b".into(),
            queue_id: 1,
        };
        assert_eq!(
            mq.to_json(),
            r#"{"brokerName":"b","queueId":1,"topic":"t"}"#
        );
        let request = LockBatchRequestBody {
            client_id: "c".into(),
            consumer_group: "g".into(),
            mq_set: [mq.clone()].into_iter().collect(),
            only_this_broker: None,
        };
        let back: LockBatchRequestBody = decode_lenient("lock", &encode(&request)).unwrap();
        assert_eq!(back, request);
        let response = LockBatchResponseBody {
            lock_ok_mq_set: [mq].into_iter().collect(),
        };
        let text = encode(&response);
        assert_eq!(
            String::from_utf8_lossy(&text),
            r#"{"lockOKMQSet":[{"brokerName":"b","queueId":1,"topic":"t"}]}"#
        );
        assert_eq!(
            decode_lenient::<LockBatchResponseBody>("lock", &text).unwrap(),
            response
        );
    }

    #[test]
    fn message_queues_sort_like_java_rebalance() {
        let mq = |t: &str, b: &str, q| MessageQueue {
            topic: t.into(),
            broker_name: b.into(),
            queue_id: q,
        };
        let mut v = vec![
            mq("t", "b", 1),
            mq("t", "a", 2),
            mq("s", "z", 0),
            mq("t", "a", 0),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                mq("s", "z", 0),
                mq("t", "a", 0),
                mq("t", "a", 2),
                mq("t", "b", 1)
            ]
        );
    }
}
