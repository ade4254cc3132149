//! Broker settings that change at runtime (UPDATE_BROKER_CONFIG), and the text GET_BROKER_CONFIG
//! answers with. Every shard holds a copy of [`LiveSettings`] (`Shard::live`), replaced by
//! `MeshMessage::SettingsChanged`; every other key is read from the `BrokerConfig` the broker
//! started with and changes only with a restart (`broker.conf`).

use crate::config::BrokerConfig;
use crate::meta::topic_config::TRACE_TOPIC;
use crate::store::FlushMode;

/// Keys UPDATE_BROKER_CONFIG may change while the broker runs.
pub const LIVE_KEYS: &[&str] = &[
    "brokerPermission",
    "autoCreateTopicEnable",
    "autoCreateSubscriptionGroup",
    "longPollingEnable",
    "shortPollingTimeMills",
];

/// The values of [`LIVE_KEYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Updates applied since the start (GET_BROKER_CONFIG's `DataVersion` counter).
    pub version: i64,
    pub broker_permission: i32,
    pub auto_create_topic_enable: bool,
    pub auto_create_subscription_group: bool,
    pub long_polling_enable: bool,
    pub short_polling_time_ms: u64,
}

impl LiveSettings {
    pub fn of(config: &BrokerConfig) -> LiveSettings {
        LiveSettings {
            version: 0,
            broker_permission: config.broker_permission,
            auto_create_topic_enable: config.auto_create_topic_enable,
            auto_create_subscription_group: config.auto_create_subscription_group,
            long_polling_enable: config.long_polling_enable,
            short_polling_time_ms: config.short_polling_time_ms,
        }
    }

    /// These settings with `key=value` pairs applied; every key must be one of [`LIVE_KEYS`]
    /// with a valid value, or nothing changes.
    pub fn updated(
        &self,
        base: &BrokerConfig,
        pairs: &[(String, String)],
    ) -> Result<LiveSettings, String> {
        let refused: Vec<&str> = pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !LIVE_KEYS.contains(k))
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "{} can not change while the broker runs (only {}): set them in broker.conf and restart",
                refused.join(", "),
                LIVE_KEYS.join(", ")
            ));
        }
        let mut config = base.clone();
        self.apply_to(&mut config);
        for (key, value) in pairs {
            config.set(key, value)?;
        }
        if !(0..=7).contains(&config.broker_permission) {
            return Err(format!(
                "brokerPermission must be a PermName combination (0-7), got {}",
                config.broker_permission
            ));
        }
        Ok(LiveSettings {
            version: self.version + 1,
            ..LiveSettings::of(&config)
        })
    }

    fn apply_to(&self, config: &mut BrokerConfig) {
        config.broker_permission = self.broker_permission;
        config.auto_create_topic_enable = self.auto_create_topic_enable;
        config.auto_create_subscription_group = self.auto_create_subscription_group;
        config.long_polling_enable = self.long_polling_enable;
        config.short_polling_time_ms = self.short_polling_time_ms;
    }
}

/// GET_BROKER_CONFIG's body: `key=value` lines (Java `MixAll.properties2String`), sorted, with
/// the live values.
pub fn properties_text(config: &BrokerConfig, live: &LiveSettings) -> String {
    let mut config = config.clone();
    live.apply_to(&mut config);
    let c = &config;
    let namesrv: Vec<String> = c.namesrv_addrs.iter().map(ToString::to_string).collect();
    let delay_levels: Vec<String> = c
        .delay_levels_ms
        .iter()
        .map(|ms| format!("{}s", ms / 1_000))
        .collect();
    let flush = match c.flush_disk_type {
        FlushMode::Sync => "SYNC_FLUSH",
        FlushMode::Async => "ASYNC_FLUSH",
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("brokerClusterName", c.broker_cluster_name.clone()),
        ("brokerName", c.broker_name.clone()),
        ("brokerId", c.broker_id.to_string()),
        ("brokerRole", c.broker_role.as_str().to_owned()),
        ("slaveReadEnable", c.slave_read_enable.to_string()),
        ("namesrvAddr", namesrv.join(";")),
        ("brokerIP1", c.broker_ip1.to_string()),
        ("bindAddress", c.bind_address.to_string()),
        ("listenPort", c.listen_port.to_string()),
        ("vipChannelEnable", c.vip_channel_enable.to_string()),
        (
            "storePathRootDir",
            c.store_path_root_dir.display().to_string(),
        ),
        ("flushDiskType", flush.to_owned()),
        ("syncFlushTimeout", c.sync_flush_timeout_ms.to_string()),
        (
            "flushIntervalCommitLog",
            c.flush_interval_commit_log_ms.to_string(),
        ),
        (
            "flushCommitLogLeastPages",
            c.flush_commit_log_least_pages.to_string(),
        ),
        (
            "flushCommitLogThoroughInterval",
            c.flush_commit_log_thorough_interval_ms.to_string(),
        ),
        (
            "flushIntervalConsumeQueue",
            c.flush_interval_consume_queue_ms.to_string(),
        ),
        (
            "flushConsumeQueueLeastPages",
            c.flush_consume_queue_least_pages.to_string(),
        ),
        (
            "flushConsumeQueueThoroughInterval",
            c.flush_consume_queue_thorough_interval_ms.to_string(),
        ),
        (
            "mappedFileSizeCommitLog",
            c.mapped_file_size_commit_log.to_string(),
        ),
        (
            "mappedFileSizeConsumeQueue",
            c.mapped_file_size_consume_queue.to_string(),
        ),
        ("maxMessageSize", c.max_message_size.to_string()),
        (
            "maxTransferCountOnMessageInMemory",
            c.transfer_limits.memory_count_max.to_string(),
        ),
        (
            "maxTransferBytesOnMessageInMemory",
            c.transfer_limits.memory_bytes_max.to_string(),
        ),
        (
            "maxTransferCountOnMessageInDisk",
            c.transfer_limits.disk_count_max.to_string(),
        ),
        (
            "maxTransferBytesOnMessageInDisk",
            c.transfer_limits.disk_bytes_max.to_string(),
        ),
        (
            "accessMessageInMemoryMaxRatio",
            c.access_message_in_memory_max_ratio.to_string(),
        ),
        ("deleteWhen", c.delete_when.clone()),
        ("fileReservedTime", c.file_reserved_time_hours.to_string()),
        (
            "diskMaxUsedSpaceRatio",
            c.disk_max_used_space_ratio.to_string(),
        ),
        ("checkCRCOnRecover", c.check_crc_on_recover.to_string()),
        ("messageIndexEnable", c.message_index_enable.to_string()),
        (
            "autoCreateTopicEnable",
            c.auto_create_topic_enable.to_string(),
        ),
        (
            "autoCreateSubscriptionGroup",
            c.auto_create_subscription_group.to_string(),
        ),
        (
            "defaultTopicQueueNums",
            c.default_topic_queue_nums.to_string(),
        ),
        ("brokerPermission", c.broker_permission.to_string()),
        ("longPollingEnable", c.long_polling_enable.to_string()),
        ("shortPollingTimeMills", c.short_polling_time_ms.to_string()),
        (
            "registerNameServerPeriod",
            c.register_name_server_period_ms.to_string(),
        ),
        (
            "registerBrokerTimeoutMills",
            c.register_broker_timeout_ms.to_string(),
        ),
        ("clusterTopicEnable", c.cluster_topic_enable.to_string()),
        ("brokerTopicEnable", c.broker_topic_enable.to_string()),
        ("regionId", c.region_id.clone()),
        ("traceOn", c.trace_on.to_string()),
        ("aclEnable", c.acl_enable.to_string()),
        (
            "flushConsumerOffsetInterval",
            c.flush_consumer_offset_interval_ms.to_string(),
        ),
        (
            "channelExpiredTimeout",
            c.channel_expired_timeout_ms.to_string(),
        ),
        ("messageDelayLevel", delay_levels.join(" ")),
        ("shards", c.shards.to_string()),
        ("pinShards", c.pin_shards.to_string()),
        ("ioMemoryBytes", c.io_memory_bytes.to_string()),
        (
            "shardSpinBeforeParkUs",
            c.shard_spin_before_park_us.to_string(),
        ),
        ("brokerPerShard", c.broker_per_shard.to_string()),
        ("shardPortStep", c.shard_port_step.to_string()),
        ("shardListenPortBase", c.shard_listen_port_base.to_string()),
        (
            "shardRequestMemoryBytes",
            c.shard_request_memory_bytes.to_string(),
        ),
        (
            "shardReceiveBufferBytes",
            c.shard_receive_buffer_bytes.to_string(),
        ),
    ];
    // Keys of Java's broker that Thruster has no setting for, with what Thruster does: mqadmin
    // exportConfigs reads them from every master and fails on a missing one. No filter
    // servers and no TLS listener; no trace topic of the broker's own (`traceTopicEnable` is
    // accepted and ignored), so clients trace to RocketMQ's default topic.
    pairs.extend([
        ("filterServerNums", "0".to_owned()),
        ("useTLS", "false".to_owned()),
        ("traceTopicEnable", "false".to_owned()),
        ("msgTraceTopicName", TRACE_TOPIC.to_owned()),
    ]);
    if let Some(bytes) = c.memory_window_bytes {
        pairs.push(("memoryWindowBytes", bytes.to_string()));
    }
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_properties;

    #[test]
    fn only_live_keys_change_and_bad_values_change_nothing() {
        let config = BrokerConfig::default();
        let live = LiveSettings::of(&config);
        let pairs = |text: &str| parse_properties(text);
        let drained = live.updated(&config, &pairs("brokerPermission=4")).unwrap();
        assert_eq!(drained.broker_permission, 4);
        assert!(drained.auto_create_topic_enable);
        let refused = live
            .updated(&config, &pairs("brokerPermission=4\nlistenPort=1"))
            .unwrap_err();
        assert!(
            refused.contains("listenPort") && refused.contains("restart"),
            "{refused}"
        );
        assert!(live
            .updated(&config, &pairs("longPollingEnable=maybe"))
            .is_err());
        assert!(live.updated(&config, &pairs("brokerPermission=9")).is_err());
    }

    #[test]
    fn the_config_text_reads_back_into_the_same_settings() {
        let mut config = BrokerConfig::default();
        config.set("messageDelayLevel", "1s 5s 1m").unwrap();
        let live = LiveSettings {
            auto_create_topic_enable: false,
            ..LiveSettings::of(&config)
        };
        let text = properties_text(&config, &live);
        assert!(text.contains("autoCreateTopicEnable=false\n"), "{text}");
        // mqadmin exportConfigs reads these (tests/tests/admin_codes.rs has its whole list)
        for line in [
            "\nbrokerRole=ASYNC_MASTER\n",
            "\nuseTLS=false\n",
            "\nfilterServerNums=0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing: {text}");
        }
        let mut back = BrokerConfig::default();
        for (key, value) in parse_properties(&text) {
            back.set(&key, &value).unwrap();
        }
        assert!(!back.auto_create_topic_enable);
        assert_eq!(back.delay_levels_ms, config.delay_levels_ms);
        assert_eq!(back.broker_name, config.broker_name);
    }
}
