//! Subscription groups: `SubscriptionGroupConfig` (the body of UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
//! and GET_SUBSCRIPTIONGROUP_CONFIG's answer) and `SubscriptionGroupWrapper` (the body of
//! GET_ALL_SUBSCRIPTIONGROUP_CONFIG, also the content of `config/subscriptionGroup.json`).
//!
//! Shape (RocketMQ 4.9 fastjson, properties alphabetical):
//! `{"dataVersion":{"counter":1,"timestamp":…},"subscriptionGroupTable":{"g":{"brokerId":0,
//! "consumeBroadcastEnable":true,"consumeEnable":true,"consumeFromMinEnable":true,"groupName":"g",
//! "notifyConsumerIdsChangedEnable":true,"retryMaxTimes":16,"retryQueueNums":1,
//! "whichBrokerWhenConsumeSlowly":1}}}`. 5.x adds fields (`groupRetryPolicy`,
//! `consumeMessageOrderly`, `attributes`, …); reading ignores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DataVersion;

/// `SubscriptionGroupConfig`; the defaults are Java's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    /// Broker id a consumer is told to pull from when it keeps up (slave reads only).
    pub broker_id: i64,
    /// Whether broadcasting consumers of the group may pull.
    pub consume_broadcast_enable: bool,
    /// Whether the group may pull at all (NO_PERMISSION otherwise).
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub group_name: String,
    /// Whether the group's consumers are told when its membership changes.
    pub notify_consumer_ids_changed_enable: bool,
    /// Retries before a message goes to the dead-letter topic (a client's own
    /// `maxReconsumeTimes` wins).
    pub retry_max_times: i32,
    /// Queues of the group's retry topic; 0 drops failed messages.
    pub retry_queue_nums: i32,
    /// Broker id a consumer is told to pull from when it falls behind (slave reads only).
    pub which_broker_when_consume_slowly: i64,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        SubscriptionGroupConfig {
            broker_id: 0,
            consume_broadcast_enable: true,
            consume_enable: true,
            consume_from_min_enable: true,
            group_name: String::new(),
            notify_consumer_ids_changed_enable: true,
            retry_max_times: 16,
            retry_queue_nums: 1,
            which_broker_when_consume_slowly: 1,
        }
    }
}

impl SubscriptionGroupConfig {
    /// A group with Java's defaults.
    pub fn named(group_name: impl Into<String>) -> SubscriptionGroupConfig {
        SubscriptionGroupConfig {
            group_name: group_name.into(),
            ..SubscriptionGroupConfig::default()
        }
    }
}

/// `SubscriptionGroupWrapper`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupWrapper {
    pub data_version: DataVersion,
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::codec::{decode_lenient, encode};

    #[test]
    fn wrapper_has_the_java_shape_and_round_trips() {
        let mut wrapper = SubscriptionGroupWrapper::default();
        wrapper.data_version.counter = 2;
        wrapper.data_version.timestamp = 7;
        wrapper.subscription_group_table.insert(
            "g".into(),
            SubscriptionGroupConfig {
                retry_max_times: 3,
                ..SubscriptionGroupConfig::named("g")
            },
        );
        let text = String::from_utf8(encode(&wrapper)).unwrap();
        assert_eq!(
            text,
            r#"{"dataVersion":{"counter":2,"stateVersion":0,"timestamp":7},"subscriptionGroupTable":{"g":{"brokerId":0,"consumeBroadcastEnable":true,"consumeEnable":true,"consumeFromMinEnable":true,"groupName":"g","notifyConsumerIdsChangedEnable":true,"retryMaxTimes":3,"retryQueueNums":1,"whichBrokerWhenConsumeSlowly":1}}}"#
        );
        let back: SubscriptionGroupWrapper = decode_lenient("groups", text.as_bytes()).unwrap();
        assert_eq!(back, wrapper);
    }

    #[test]
    fn a_java_5_config_with_extra_fields_and_missing_ones_is_read_with_java_defaults() {
        // What mqadmin 5.x updateSubGroup sends (extra fields), partly.
        let java = br#"{"groupName":"g5","consumeEnable":false,"retryQueueNums":2,"groupRetryPolicy":{"type":"CUSTOMIZED"},"consumeMessageOrderly":false,"attributes":{}}"#;
        let config: SubscriptionGroupConfig = decode_lenient("group", java).unwrap();
        assert_eq!(config.group_name, "g5");
        assert!(!config.consume_enable);
        assert_eq!(config.retry_queue_nums, 2);
        assert_eq!(
            config.retry_max_times, 16,
            "missing fields take Java's defaults"
        );
        assert!(config.consume_broadcast_enable);
        assert_eq!(config.which_broker_when_consume_slowly, 1);
    }
}
