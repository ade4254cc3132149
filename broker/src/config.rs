//! Broker settings: RocketMQ's `broker.conf` keys (Java properties, `key=value`), applied by
//! name, plus Thruster's own (`shards`, `ioMemoryBytes`). Unknown keys are warned about, never
//! fatal, as Java ignores them; keys Java knows that Thruster does not act on yet are named in
//! the warning too, so an operator sees what is not honoured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use thruster_protocol::body::perm;
use thruster_protocol::FRAME_MAX_BYTES_DEFAULT;

use crate::store::config::{PAGE_BYTES, SHARDS_MAX};
use crate::store::consume_queue::ENTRY_BYTES as CQ_ENTRY_BYTES;
use crate::store::{FlushMode, StoreConfig, TransferLimits};
use thruster_tuning::io_properties::{IoProperties, StoreIoSettings};

/// `shardRequestMemoryBytes` unless configured.
pub const SHARD_REQUEST_MEMORY_BYTES_DEFAULT: usize = 256 << 20;
const _: () = assert!(SHARD_REQUEST_MEMORY_BYTES_DEFAULT >= FRAME_MAX_BYTES_DEFAULT);
/// `shardReceiveBufferBytes` unless configured: eight largest frames being received at once
/// per shard (frames up to 64 KiB need none of it).
pub const SHARD_RECEIVE_BUFFER_BYTES_DEFAULT: usize = 128 << 20;
const _: () = assert!(SHARD_RECEIVE_BUFFER_BYTES_DEFAULT >= FRAME_MAX_BYTES_DEFAULT);

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_cluster_name: String,
    pub broker_name: String,
    /// 0 = master; a slave's is > 0 (`brokerRole=SLAVE`).
    pub broker_id: i64,
    /// `brokerRole`: ASYNC_MASTER (default), SYNC_MASTER or SLAVE.
    pub broker_role: BrokerRole,
    /// `haListenPort`: where a master's shard 0 takes its slaves (shard `i`: plus
    /// `i × shardPortStep`). `None`: its main port + 1; with `listenPort=0`, a free port.
    pub ha_listen_port: Option<u16>,
    /// `haMasterAddress`: a slave's master, its shard 0's HA address (shard `i` adds
    /// `i × shardPortStep` to the port). `None`: learned from the name servers' answer to
    /// REGISTER_BROKER, as RocketMQ slaves do.
    pub ha_master_address: Option<SocketAddr>,
    /// `haSendHeartbeatInterval`: a slave's transfer request is held at most this long by a
    /// master with nothing new, so the slave reports its offset at least this often.
    pub ha_send_heartbeat_interval_ms: u64,
    /// `haMaxGapNotInSync`: a SYNC_MASTER answers SLAVE_NOT_AVAILABLE at once when its best
    /// slave is further behind than this.
    pub ha_max_gap_not_in_sync_bytes: u64,
    /// `haTransferBatchBytes` (Thruster's): most log bytes in one answer to a slave.
    pub ha_transfer_batch_bytes: usize,
    /// `slaveReadEnable`: a master whose pulled data is no longer in memory tells the client
    /// to read from the slave (`suggestWhichBrokerId`).
    pub slave_read_enable: bool,
    /// `haAsyncCoalesceUs` (Thruster's): an ASYNC_MASTER lets new log gather this long (or to
    /// 256 KiB) before answering its slave, so one answer carries many messages. 0: at once.
    pub ha_async_coalesce_us: u64,
    /// `haSyncMetadataInterval` (Thruster's; RocketMQ: 10 s fixed): how often a slave copies
    /// topics, consumer offsets and delay offsets from its master.
    pub ha_sync_metadata_interval_ms: u64,
    /// `namesrvAddr`: `host:port;host:port`.
    pub namesrv_addrs: Vec<SocketAddr>,
    /// `brokerIP1`: published to name servers and used as the store host of records.
    pub broker_ip1: IpAddr,
    /// `bindAddress`: where the broker accepts. Loopback unless configured otherwise.
    pub bind_address: IpAddr,
    /// Main port; 0 picks a free one (tests). The VIP port is `listen_port - 2`.
    pub listen_port: u16,
    /// Also listen on `listen_port - 2` (old Java clients with `vipChannelEnabled`).
    pub vip_channel_enable: bool,
    pub store_path_root_dir: PathBuf,
    pub flush_disk_type: FlushMode,
    pub sync_flush_timeout_ms: u64,
    pub flush_interval_commit_log_ms: u64,
    pub flush_commit_log_least_pages: u64,
    pub flush_commit_log_thorough_interval_ms: u64,
    /// `flushIntervalConsumeQueue`, `flushConsumeQueueLeastPages`,
    /// `flushConsumeQueueThoroughInterval`: the checkpoint pass and which ConsumeQueues it
    /// syncs (`store::consume_queue::SyncPolicy`).
    pub flush_interval_consume_queue_ms: u64,
    pub flush_consume_queue_least_pages: u64,
    pub flush_consume_queue_thorough_interval_ms: u64,
    pub mapped_file_size_commit_log: u64,
    pub mapped_file_size_consume_queue: u64,
    pub max_message_size: usize,
    /// `maxTransfer{Count,Bytes}OnMessageIn{Memory,Disk}`: what one pull may carry.
    pub transfer_limits: TransferLimits,
    /// `accessMessageInMemoryMaxRatio`, percent of physical memory: reads further behind the
    /// end are cold and get the disk transfer limits.
    pub access_message_in_memory_max_ratio: u32,
    pub delete_when: String,
    pub file_reserved_time_hours: u64,
    pub disk_max_used_space_ratio: u32,
    pub check_crc_on_recover: bool,
    pub message_index_enable: bool,
    pub auto_create_topic_enable: bool,
    pub auto_create_subscription_group: bool,
    /// Queues of `TBW102`.
    pub default_topic_queue_nums: i32,
    /// `brokerPermission`: 6 = read+write, 4 = read only (drain).
    pub broker_permission: i32,
    pub long_polling_enable: bool,
    pub short_polling_time_ms: u64,
    pub register_name_server_period_ms: u64,
    pub register_broker_timeout_ms: u64,
    pub cluster_topic_enable: bool,
    pub broker_topic_enable: bool,
    pub region_id: String,
    pub trace_on: bool,
    pub flush_consumer_offset_interval_ms: u64,
    /// Client channels not refreshed by a heartbeat for this long are dropped.
    pub channel_expired_timeout_ms: u64,
    /// `serverChannelMaxIdleTimeSeconds` (in ms here): a connection that completes no request
    /// for this long is closed.
    pub server_channel_max_idle_ms: u64,
    /// Reactors (shards); each owns some queues and one CommitLog shard.
    pub shards: usize,
    /// Pin shard `i` to the `i`-th CPU this process may run on (its affinity mask), when there
    /// are enough of them.
    pub pin_shards: bool,
    /// I/O memory each reactor registers with io_uring.
    pub io_memory_bytes: usize,
    /// `shardSpinBeforeParkUs`: a shard with nothing to do polls this long before it sleeps
    /// (`runtime::ReactorConfig::spin_before_park_us`). 0 (default): sleep at once.
    pub shard_spin_before_park_us: u64,
    /// `messageDelayLevel`, in milliseconds per level (level 1 first).
    pub delay_levels_ms: Vec<u64>,
    /// `brokerPerShard` (default): every shard is a broker of its own to clients and name
    /// servers (`shard_broker_name`, `shard_listen_port`), with its own queues, so any
    /// RocketMQ client sends each request to the shard that owns it. `false`: one broker name
    /// for the process, whose queues are spread over the shards (`owner_of`); requests for
    /// another shard's queue hop there.
    pub broker_per_shard: bool,
    /// `shardPortStep`: with `broker_per_shard`, shard `i` listens on `listenPort + i × step`
    /// (its VIP port 2 below, its HA port 1 above, as for any RocketMQ broker).
    pub shard_port_step: u16,
    /// One-name mode only: shard `i` also accepts on its own port, `shardListenPortBase + i`
    /// (0: free ports), which shard-aware clients use so their requests never cross cores.
    pub shard_listen_port_base: u16,
    /// `shardRequestMemoryBytes`: request frames each shard holds while processing them, over
    /// all its connections (each connection also has its own bound); readers wait past it.
    pub shard_request_memory_bytes: usize,
    /// `shardReceiveBufferBytes`: bytes of partly received frames larger than 64 KiB each
    /// shard buffers at once, over all its connections; a connection whose frame does not fit
    /// is not read until it does (or its idle timeout closes it).
    pub shard_receive_buffer_bytes: usize,
    /// `metricsPort`: where the Prometheus endpoint (`GET /metrics`) listens; 0 (default): no
    /// endpoint.
    pub metrics_port: u16,
    /// `metricsBindAddress`: the endpoint's address, loopback unless configured otherwise.
    pub metrics_bind_address: IpAddr,
    /// CommitLog bytes each shard keeps in memory for tail reads (and before write-out);
    /// older data is read from the files (sendfile). `None`: the store's default.
    pub memory_window_bytes: Option<usize>,
    /// The store's chunk size, writes in flight and group-commit target from
    /// `<storePathRootDir>/io-properties.json` (`thruster-tune probe`); `None`: the store's
    /// defaults. Set by [`BrokerConfig::load_io_properties`].
    pub store_io: Option<StoreIoSettings>,
    /// `transactionTimeOut`: a half message is first checked this long after its birth (or
    /// after its own `CHECK_IMMUNITY_TIME_IN_SECONDS` when longer).
    pub transaction_timeout_ms: i64,
    /// `transactionCheckMax`: checks of one half message before it goes to
    /// `TRANS_CHECK_MAX_TIME_TOPIC`.
    pub transaction_check_max: u32,
    /// `transactionCheckInterval`: how often each shard checks its waiting half messages.
    pub transaction_check_interval_ms: u64,
    /// `rejectTransactionMessage`: refuse prepared messages (NO_PERMISSION).
    pub reject_transaction_message: bool,
    /// `storeReplyMessageEnable`: a reply is also stored in its reply topic (besides being
    /// pushed to the requester).
    pub store_reply_message_enable: bool,
    /// `timerWheelEnable`: serve timer messages (`TIMER_DELIVER_MS` / `TIMER_DELAY_SEC` /
    /// `TIMER_DELAY_MS`); `false` refuses them as RocketMQ 5 does.
    pub timer_wheel_enable: bool,
    /// `timerMaxDelaySec`: a timer message due further ahead is refused (MESSAGE_ILLEGAL).
    pub timer_max_delay_sec: u64,
    /// `aclEnable`: check every request against `aclFilePath` (RocketMQ 4.x plain ACL).
    pub acl_enable: bool,
    /// `aclFilePath` (Thruster's; RocketMQ: `$ROCKETMQ_HOME/conf/plain_acl.yml`): the
    /// `plain_acl.yml`, relative to the broker's working directory unless absolute.
    pub acl_file_path: PathBuf,
    /// `aclReloadIntervalMs` (Thruster's; RocketMQ: 5 s fixed): how often the file's
    /// modification time is looked at.
    pub acl_reload_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            broker_cluster_name: "DefaultCluster".into(),
            broker_name: default_broker_name(),
            broker_id: 0,
            broker_role: BrokerRole::AsyncMaster,
            ha_listen_port: None,
            ha_master_address: None,
            ha_send_heartbeat_interval_ms: 5_000,
            ha_max_gap_not_in_sync_bytes: 256 << 20,
            ha_transfer_batch_bytes: 4 << 20,
            slave_read_enable: false,
            ha_sync_metadata_interval_ms: 10_000,
            ha_async_coalesce_us: 1_000,
            namesrv_addrs: Vec::new(),
            broker_ip1: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            listen_port: 10911,
            vip_channel_enable: true,
            store_path_root_dir: PathBuf::from("data/store"),
            flush_disk_type: FlushMode::Async,
            sync_flush_timeout_ms: 5_000,
            flush_interval_commit_log_ms: 500,
            flush_commit_log_least_pages: 4,
            flush_commit_log_thorough_interval_ms: 10_000,
            flush_interval_consume_queue_ms: 1_000,
            flush_consume_queue_least_pages: 2,
            flush_consume_queue_thorough_interval_ms: 60_000,
            mapped_file_size_commit_log: 1 << 30,
            mapped_file_size_consume_queue: 300_000 * 20,
            max_message_size: 4 << 20,
            transfer_limits: TransferLimits::default(),
            access_message_in_memory_max_ratio: 40,
            delete_when: "04".into(),
            file_reserved_time_hours: 72,
            disk_max_used_space_ratio: 75,
            check_crc_on_recover: true,
            message_index_enable: true,
            auto_create_topic_enable: true,
            auto_create_subscription_group: true,
            default_topic_queue_nums: 8,
            broker_permission: perm::READ_WRITE,
            long_polling_enable: true,
            short_polling_time_ms: 1_000,
            register_name_server_period_ms: 30_000,
            register_broker_timeout_ms: 6_000,
            cluster_topic_enable: true,
            broker_topic_enable: true,
            region_id: "DefaultRegion".into(),
            trace_on: true,
            flush_consumer_offset_interval_ms: 5_000,
            channel_expired_timeout_ms: 120_000,
            server_channel_max_idle_ms: crate::remoting::IDLE_TIMEOUT_MS_DEFAULT,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_shards: true,
            io_memory_bytes: 2 << 20,
            shard_spin_before_park_us: 0,
            memory_window_bytes: None,
            store_io: None,
            metrics_port: 0,
            metrics_bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            transaction_timeout_ms: 6_000,
            transaction_check_max: 15,
            transaction_check_interval_ms: 60_000,
            reject_transaction_message: false,
            store_reply_message_enable: true,
            timer_wheel_enable: true,
            timer_max_delay_sec: 3 * 24 * 3600,
            acl_enable: false,
            acl_file_path: PathBuf::from("conf/plain_acl.yml"),
            acl_reload_interval_ms: 5_000,
            shard_request_memory_bytes: SHARD_REQUEST_MEMORY_BYTES_DEFAULT,
            shard_receive_buffer_bytes: SHARD_RECEIVE_BUFFER_BYTES_DEFAULT,
            broker_per_shard: true,
            shard_port_step: 10,
            shard_listen_port_base: 0,
            delay_levels_ms: parse_delay_levels(
                "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h",
            )
            .expect("the default levels parse"),
        }
    }
}

/// `brokerRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRole {
    /// Answers a send once stored; slaves copy behind.
    AsyncMaster,
    /// Answers a send once a slave has it too (or SLAVE_NOT_AVAILABLE / FLUSH_SLAVE_TIMEOUT).
    SyncMaster,
    /// Copies its master's log; refuses sends, serves pulls, offsets and queries.
    Slave,
}

impl BrokerRole {
    /// RocketMQ's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerRole::AsyncMaster => "ASYNC_MASTER",
            BrokerRole::SyncMaster => "SYNC_MASTER",
            BrokerRole::Slave => "SLAVE",
        }
    }
}

/// What became of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Used,
    /// A RocketMQ key Thruster does not act on (yet).
    NotSupported,
    /// Not a key anyone knows.
    Unknown,
}

/// RocketMQ keys accepted without effect; named so the warning can say so.
const NOT_SUPPORTED_KEYS: &[&str] = &[
    "brokerIP2",
    "haSlaveFallbehindMax",
    "slaveTimeout",
    "forceRegister",
    "transientStorePoolEnable",
    "enablePropertyFilter",
    "traceTopicEnable",
    "msgTraceTopicName",
    "sendMessageThreadPoolNums",
    "pullMessageThreadPoolNums",
    "useReentrantLockWhenPutMessage",
    "waitTimeMillsInSendQueue",
    "enableDLegerCommitLog",
    "storePathCommitLog",
];

impl BrokerConfig {
    /// Reads a `broker.conf` file and applies its keys over the defaults. Returns the keys
    /// that were not used, with what became of them, for the caller to warn about.
    pub fn apply_file(&mut self, path: &Path) -> Result<Vec<(String, Applied)>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut unused = Vec::new();
        for (line_no, (key, value)) in parse_properties(&text).into_iter().enumerate() {
            match self.set(&key, &value) {
                Ok(Applied::Used) => {}
                Ok(other) => unused.push((key, other)),
                Err(error) => {
                    return Err(format!("{} entry {}: {error}", path.display(), line_no + 1))
                }
            }
        }
        Ok(unused)
    }

    /// Applies one `key=value` (a `broker.conf` key or a command-line override).
    pub fn set(&mut self, key: &str, value: &str) -> Result<Applied, String> {
        let value = value.trim();
        match key {
            "brokerClusterName" => self.broker_cluster_name = value.to_owned(),
            "brokerName" => self.broker_name = value.to_owned(),
            "brokerId" => self.broker_id = parse(key, value)?,
            "brokerRole" => {
                self.broker_role = match value {
                    "ASYNC_MASTER" => BrokerRole::AsyncMaster,
                    "SYNC_MASTER" => BrokerRole::SyncMaster,
                    "SLAVE" => BrokerRole::Slave,
                    other => return Err(format!("brokerRole: unknown value {other:?}")),
                }
            }
            "haListenPort" => self.ha_listen_port = Some(parse(key, value)?),
            "haMasterAddress" => self.ha_master_address = Some(parse_host_port(key, value)?),
            "haSendHeartbeatInterval" => self.ha_send_heartbeat_interval_ms = parse(key, value)?,
            "haMaxGapNotInSync" => self.ha_max_gap_not_in_sync_bytes = parse(key, value)?,
            "haTransferBatchBytes" => {
                self.ha_transfer_batch_bytes = parse(key, value)?;
                if !(1024..=FRAME_MAX_BYTES_DEFAULT / 2).contains(&self.ha_transfer_batch_bytes) {
                    return Err(format!(
                        "haTransferBatchBytes must be between 1024 and {}",
                        FRAME_MAX_BYTES_DEFAULT / 2
                    ));
                }
            }
            "slaveReadEnable" => self.slave_read_enable = parse(key, value)?,
            "haSyncMetadataInterval" => self.ha_sync_metadata_interval_ms = parse(key, value)?,
            "haAsyncCoalesceUs" => self.ha_async_coalesce_us = parse(key, value)?,
            "namesrvAddr" => self.namesrv_addrs = parse_namesrv_addrs(value)?,
            "brokerIP1" => self.broker_ip1 = parse(key, value)?,
            "bindAddress" => self.bind_address = parse(key, value)?,
            "listenPort" => self.listen_port = parse(key, value)?,
            "vipChannelEnable" => self.vip_channel_enable = parse(key, value)?,
            "storePathRootDir" => self.store_path_root_dir = PathBuf::from(value),
            "flushDiskType" => {
                self.flush_disk_type = match value {
                    "SYNC_FLUSH" => FlushMode::Sync,
                    "ASYNC_FLUSH" => FlushMode::Async,
                    other => return Err(format!("flushDiskType: unknown value {other:?}")),
                }
            }
            "syncFlushTimeout" => self.sync_flush_timeout_ms = parse(key, value)?,
            "flushIntervalCommitLog" => self.flush_interval_commit_log_ms = parse(key, value)?,
            "flushCommitLogLeastPages" => self.flush_commit_log_least_pages = parse(key, value)?,
            "flushCommitLogThoroughInterval" => {
                self.flush_commit_log_thorough_interval_ms = parse(key, value)?
            }
            "flushIntervalConsumeQueue" => {
                self.flush_interval_consume_queue_ms = parse::<u64>(key, value)?.max(1)
            }
            "flushConsumeQueueLeastPages" => {
                self.flush_consume_queue_least_pages = parse(key, value)?
            }
            "flushConsumeQueueThoroughInterval" => {
                self.flush_consume_queue_thorough_interval_ms = parse(key, value)?
            }
            "mappedFileSizeCommitLog" | "mapedFileSizeCommitLog" => {
                self.mapped_file_size_commit_log = parse(key, value)?
            }
            "mappedFileSizeConsumeQueue" | "mapedFileSizeConsumeQueue" => {
                self.mapped_file_size_consume_queue = parse(key, value)?
            }
            "maxMessageSize" => self.max_message_size = parse(key, value)?,
            "maxTransferCountOnMessageInMemory" => {
                self.transfer_limits.memory_count_max = parse_positive(key, value)?
            }
            "maxTransferBytesOnMessageInMemory" => {
                self.transfer_limits.memory_bytes_max = parse_positive(key, value)?
            }
            "maxTransferCountOnMessageInDisk" => {
                self.transfer_limits.disk_count_max = parse_positive(key, value)?
            }
            "maxTransferBytesOnMessageInDisk" => {
                self.transfer_limits.disk_bytes_max = parse_positive(key, value)?
            }
            "accessMessageInMemoryMaxRatio" => {
                self.access_message_in_memory_max_ratio = parse(key, value)?;
                if self.access_message_in_memory_max_ratio > 100 {
                    return Err("accessMessageInMemoryMaxRatio is a percentage (0..=100)".into());
                }
            }
            "deleteWhen" => self.delete_when = value.to_owned(),
            "fileReservedTime" => self.file_reserved_time_hours = parse(key, value)?,
            "diskMaxUsedSpaceRatio" => self.disk_max_used_space_ratio = parse(key, value)?,
            "checkCRCOnRecover" => self.check_crc_on_recover = parse(key, value)?,
            "messageIndexEnable" => self.message_index_enable = parse(key, value)?,
            "autoCreateTopicEnable" => self.auto_create_topic_enable = parse(key, value)?,
            "autoCreateSubscriptionGroup" => {
                self.auto_create_subscription_group = parse(key, value)?
            }
            "defaultTopicQueueNums" => self.default_topic_queue_nums = parse(key, value)?,
            "brokerPermission" => self.broker_permission = parse(key, value)?,
            "longPollingEnable" => self.long_polling_enable = parse(key, value)?,
            "shortPollingTimeMills" => self.short_polling_time_ms = parse(key, value)?,
            "registerNameServerPeriod" => {
                // Java clamps the period to 10-60 s.
                let period: u64 = parse(key, value)?;
                self.register_name_server_period_ms = period.clamp(10_000, 60_000);
            }
            "registerBrokerTimeoutMills" => self.register_broker_timeout_ms = parse(key, value)?,
            "clusterTopicEnable" => self.cluster_topic_enable = parse(key, value)?,
            "brokerTopicEnable" => self.broker_topic_enable = parse(key, value)?,
            "regionId" => self.region_id = value.to_owned(),
            "traceOn" => self.trace_on = parse(key, value)?,
            "flushConsumerOffsetInterval" => {
                self.flush_consumer_offset_interval_ms = parse(key, value)?
            }
            "channelExpiredTimeout" => self.channel_expired_timeout_ms = parse(key, value)?,
            "serverChannelMaxIdleTimeSeconds" => {
                let seconds: u64 = parse(key, value)?;
                if seconds == 0 {
                    return Err("serverChannelMaxIdleTimeSeconds must be at least 1".into());
                }
                self.server_channel_max_idle_ms = seconds * 1000;
            }
            "shards" => {
                self.shards = parse(key, value)?;
                if self.shards == 0 || self.shards > SHARDS_MAX {
                    return Err(format!("shards must be between 1 and {SHARDS_MAX}"));
                }
            }
            "pinShards" => self.pin_shards = parse(key, value)?,
            "ioMemoryBytes" => self.io_memory_bytes = parse(key, value)?,
            "shardSpinBeforeParkUs" => self.shard_spin_before_park_us = parse(key, value)?,
            "messageDelayLevel" => self.delay_levels_ms = parse_delay_levels(value)?,
            "shardListenPortBase" => self.shard_listen_port_base = parse(key, value)?,
            "brokerPerShard" => self.broker_per_shard = parse(key, value)?,
            "shardPortStep" => {
                self.shard_port_step = parse(key, value)?;
                // Shard i uses p-2 (VIP), p and p+1 (HA): four ports apart keeps them disjoint.
                if self.shard_port_step < 4 {
                    return Err(
                        "shardPortStep must be at least 4 (each shard's VIP, main and HA ports)"
                            .into(),
                    );
                }
            }
            "shardRequestMemoryBytes" => {
                self.shard_request_memory_bytes = parse(key, value)?;
                if self.shard_request_memory_bytes < FRAME_MAX_BYTES_DEFAULT {
                    return Err(format!(
                        "shardRequestMemoryBytes must hold the largest frame ({FRAME_MAX_BYTES_DEFAULT} bytes)"
                    ));
                }
            }
            "shardReceiveBufferBytes" => {
                self.shard_receive_buffer_bytes = parse(key, value)?;
                if self.shard_receive_buffer_bytes < FRAME_MAX_BYTES_DEFAULT {
                    return Err(format!(
                        "shardReceiveBufferBytes must hold the largest frame ({FRAME_MAX_BYTES_DEFAULT} bytes)"
                    ));
                }
            }
            "memoryWindowBytes" => self.memory_window_bytes = Some(parse(key, value)?),
            "metricsPort" => self.metrics_port = parse(key, value)?,
            "metricsBindAddress" => self.metrics_bind_address = parse(key, value)?,
            "transactionTimeOut" => self.transaction_timeout_ms = parse(key, value)?,
            "transactionCheckMax" => self.transaction_check_max = parse(key, value)?,
            "transactionCheckInterval" => {
                self.transaction_check_interval_ms = parse(key, value)?;
                if self.transaction_check_interval_ms == 0 {
                    return Err("transactionCheckInterval must be at least 1 ms".into());
                }
            }
            "rejectTransactionMessage" => self.reject_transaction_message = parse(key, value)?,
            "storeReplyMessageEnable" => self.store_reply_message_enable = parse(key, value)?,
            "timerWheelEnable" => self.timer_wheel_enable = parse(key, value)?,
            "timerMaxDelaySec" => self.timer_max_delay_sec = parse(key, value)?,
            "aclEnable" => self.acl_enable = parse(key, value)?,
            "aclFilePath" => self.acl_file_path = PathBuf::from(value),
            "aclReloadIntervalMs" => self.acl_reload_interval_ms = parse(key, value)?,
            _ if NOT_SUPPORTED_KEYS.contains(&key) => return Ok(Applied::NotSupported),
            _ => return Ok(Applied::Unknown),
        }
        Ok(Applied::Used)
    }

    /// Checks keys against each other once all are applied: a slave has an id > 0, a master
    /// is id 0 (RocketMQ forces it), and replication pairs shard `i` with shard `i`, so it
    /// needs every shard to be a broker of its own (or one shard).
    pub fn validate(&mut self) -> Result<(), String> {
        match self.broker_role {
            BrokerRole::Slave if self.broker_id <= 0 => {
                return Err("brokerRole=SLAVE needs brokerId > 0".into())
            }
            BrokerRole::Slave => {}
            BrokerRole::AsyncMaster | BrokerRole::SyncMaster => self.broker_id = 0,
        }
        let replicated = self.broker_role == BrokerRole::Slave
            || self.broker_role == BrokerRole::SyncMaster
            || self.ha_listen_port.is_some();
        if replicated && !self.broker_per_shard && self.shards > 1 {
            return Err(
                "master/slave replication pairs shard i of the master with shard i of \
                        the slave: it needs brokerPerShard=true (or shards=1)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The HA port shard `shard` of a master takes slaves on (0: a free one).
    pub fn shard_ha_port(&self, shard: usize, shard_port: u16) -> Option<u16> {
        match self.ha_listen_port {
            None if shard_port == 0 => Some(0),
            None => shard_port.checked_add(1),
            Some(0) => Some(0),
            Some(base) => {
                let offset = u16::try_from(shard)
                    .ok()?
                    .checked_mul(self.shard_port_step)?;
                base.checked_add(offset)
            }
        }
    }

    /// The configured master HA address for slave shard `shard` (`haMasterAddress` plus
    /// `shard × shardPortStep`).
    pub fn shard_ha_master_address(&self, shard: usize) -> Option<SocketAddr> {
        let addr = self.ha_master_address?;
        let offset = u16::try_from(shard)
            .ok()?
            .checked_mul(self.shard_port_step)?;
        Some(SocketAddr::new(addr.ip(), addr.port().checked_add(offset)?))
    }

    /// `brokerIP1:listenPort`: the address clients and name servers use.
    pub fn broker_addr(&self) -> SocketAddr {
        SocketAddr::new(self.broker_ip1, self.listen_port)
    }

    /// The name shard `shard` registers under: `brokerName` for one shard or in one-name mode,
    /// else `brokerName-s<shard>`.
    pub fn shard_broker_name(&self, shard: usize) -> String {
        if self.broker_per_shard && self.shards > 1 {
            format!("{}-s{shard}", self.broker_name)
        } else {
            self.broker_name.clone()
        }
    }

    /// With `broker_per_shard`, the port shard `shard` listens on: `listenPort + shard × step`
    /// (0 stays 0: a free port). `None` when the port does not fit in 16 bits.
    pub fn shard_listen_port(&self, shard: usize) -> Option<u16> {
        if self.listen_port == 0 {
            return Some(0);
        }
        let offset = u16::try_from(shard)
            .ok()?
            .checked_mul(self.shard_port_step)?;
        self.listen_port.checked_add(offset)
    }

    /// Whether each shard keeps its ConsumeQueues in a tree of its own: with several shards
    /// each a broker, queue ids are per shard, so two shards have a queue 0 of one topic.
    pub fn consume_queue_per_shard(&self) -> bool {
        self.broker_per_shard && self.shards > 1
    }

    /// The store settings of shard `shard_id`.
    pub fn store_config(&self, shard_id: u8) -> StoreConfig {
        let base =
            StoreConfig::new(&self.store_path_root_dir).with_flush_mode(self.flush_disk_type);
        StoreConfig {
            shard_id,
            shard_count: self.shards as u8,
            consume_queue_per_shard: self.consume_queue_per_shard(),
            segment_bytes: self.mapped_file_size_commit_log,
            flush_interval_ms: self.flush_interval_commit_log_ms,
            flush_least_bytes: self.flush_commit_log_least_pages * PAGE_BYTES,
            flush_thorough_interval_ms: self.flush_commit_log_thorough_interval_ms,
            flush_consume_queue_interval_ms: self.flush_interval_consume_queue_ms,
            flush_consume_queue_least_pages: self.flush_consume_queue_least_pages,
            flush_consume_queue_thorough_interval_ms: self.flush_consume_queue_thorough_interval_ms,
            sync_flush_timeout_ms: self.sync_flush_timeout_ms,
            consume_queue_entries_per_file: (self.mapped_file_size_consume_queue / CQ_ENTRY_BYTES)
                .max(1),
            max_message_bytes: self.max_message_size,
            transfer_limits: self.transfer_limits,
            access_message_in_memory_max_ratio: self.access_message_in_memory_max_ratio,
            check_crc_on_recover: self.check_crc_on_recover,
            message_index_enable: self.message_index_enable,
            file_reserved_time_hours: self.file_reserved_time_hours,
            delete_when: self.delete_when.clone(),
            disk_max_used_space_ratio: self.disk_max_used_space_ratio,
            memory_window_bytes: self.memory_window_bytes.unwrap_or(base.memory_window_bytes),
            chunk_bytes: self.store_io.map_or(base.chunk_bytes, |io| io.chunk_bytes),
            writes_in_flight_max: self
                .store_io
                .map_or(base.writes_in_flight_max, |io| io.writes_in_flight_max),
            group_commit_bytes: self
                .store_io
                .map_or(base.group_commit_bytes, |io| io.group_commit_bytes),
            ..base
        }
    }

    /// Takes the store's I/O settings from `<storePathRootDir>/io-properties.json` when there is
    /// one; a file that cannot be read or lacks the figures is an error (rerun the probe or
    /// delete it). A chunk size the segments or the memory window cannot hold is left at the
    /// default, with a warning.
    pub fn load_io_properties(&mut self) -> Result<(), String> {
        let dir = &self.store_path_root_dir;
        let path = IoProperties::path_in(dir);
        let Some(properties) = IoProperties::read(dir)? else {
            tracing::info!(path = %path.display(), "no io-properties file: store I/O defaults");
            return Ok(());
        };
        let mut io = properties
            .store_settings()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let base = StoreConfig::new(dir);
        let window = self.memory_window_bytes.unwrap_or(base.memory_window_bytes);
        if !self
            .mapped_file_size_commit_log
            .is_multiple_of(io.chunk_bytes as u64)
            || window < 2 * io.chunk_bytes
        {
            tracing::warn!(
                chunk_bytes = io.chunk_bytes,
                segment_bytes = self.mapped_file_size_commit_log,
                memory_window_bytes = window,
                "io-properties chunk size does not fit the segments or the memory window: \
                 keeping the default"
            );
            io.chunk_bytes = base.chunk_bytes;
        }
        tracing::info!(
            path = %path.display(),
            chunk_bytes = io.chunk_bytes,
            writes_in_flight_max = io.writes_in_flight_max,
            group_commit_bytes = io.group_commit_bytes,
            "store I/O settings from io-properties"
        );
        self.store_io = Some(io);
        Ok(())
    }

    /// `<storePathRootDir>/config`: topics, offsets.
    pub fn config_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("config")
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{key}: illegal value {value:?}: {e}"))
}

/// A count or size that must be at least 1.
fn parse_positive(key: &str, value: &str) -> Result<usize, String> {
    match parse::<usize>(key, value)? {
        0 => Err(format!("{key} must be at least 1")),
        n => Ok(n),
    }
}

/// One `host:port` value.
fn parse_host_port(key: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{key}: {value:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{key}: {value:?} resolves to nothing"))
}

/// `host:port;host:port` (RocketMQ's separator is `;`; `,` is accepted too).
pub fn parse_namesrv_addrs(value: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = Vec::new();
    for part in value
        .split([';', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let addr = part
            .to_socket_addrs()
            .map_err(|e| format!("namesrvAddr: {part:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("namesrvAddr: {part:?} resolves to nothing"))?;
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Java properties, the subset broker.conf and name-server config texts use: `key=value` or
/// `key: value`, `#`/`!` comments, blank lines; later keys override earlier ones (callers
/// apply in order).
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('!'))
        .filter_map(|line| {
            let split = line.find(['=', ':'])?;
            let (key, value) = line.split_at(split);
            Some((key.trim().to_owned(), value[1..].trim().to_owned()))
        })
        .collect()
}

/// `messageDelayLevel`: "1s 5s 10s …" → milliseconds per level (level 1 first).
pub fn parse_delay_levels(text: &str) -> Result<Vec<u64>, String> {
    let levels: Vec<u64> = text
        .split_whitespace()
        .map(|item| {
            // The unit is the last character (not byte: "1é" must be an error, not a panic).
            let unit_at = item.char_indices().last().map_or(0, |(at, _)| at);
            let (number, unit) = item.split_at(unit_at);
            let factor = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("messageDelayLevel: bad unit in {item:?}")),
            };
            number
                .parse::<u64>()
                .map(|n| n * factor)
                .map_err(|e| format!("messageDelayLevel: {item:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if levels.is_empty() {
        return Err("messageDelayLevel: no levels".into());
    }
    Ok(levels)
}

fn default_broker_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        "broker-a".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_conf_keys_apply_and_unknown_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.conf");
        std::fs::write(
            &path,
            "# a comment\nbrokerClusterName = C1\nbrokerName=b1\nbrokerId=0\n\
             namesrvAddr=127.0.0.1:9876;127.0.0.1:9877\nlistenPort: 10921\n\
             flushDiskType=SYNC_FLUSH\nbrokerRole=ASYNC_MASTER\nnoSuchKey=1\n\
             mapedFileSizeCommitLog=1048576\nregisterNameServerPeriod=1000\n",
        )
        .unwrap();
        let mut config = BrokerConfig::default();
        let unused = config.apply_file(&path).unwrap();
        assert_eq!(config.broker_cluster_name, "C1");
        assert_eq!(config.broker_name, "b1");
        assert_eq!(config.namesrv_addrs.len(), 2);
        assert_eq!(config.listen_port, 10921);
        assert_eq!(config.flush_disk_type, FlushMode::Sync);
        assert_eq!(config.mapped_file_size_commit_log, 1 << 20);
        assert_eq!(config.register_name_server_period_ms, 10_000, "clamped");
        assert_eq!(unused, vec![("noSuchKey".to_string(), Applied::Unknown)]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut config = BrokerConfig::default();
        let error = config.set("listenPort", "ten").unwrap_err();
        assert!(error.contains("listenPort"), "{error}");
        assert!(config.set("flushDiskType", "SOMETIMES").is_err());
        assert!(config.set("brokerRole", "LEADER").is_err());
        assert!(config.set("shards", "0").is_err());
    }

    #[test]
    fn roles_and_ids_are_checked_together() {
        let mut config = BrokerConfig::default();
        config.set("brokerRole", "SLAVE").unwrap();
        assert!(config.validate().is_err(), "a slave needs an id > 0");
        config.set("brokerId", "2").unwrap();
        config.validate().unwrap();
        config.set("brokerRole", "SYNC_MASTER").unwrap();
        config.validate().unwrap();
        assert_eq!(config.broker_id, 0, "a master is id 0");
        config.set("brokerPerShard", "false").unwrap();
        config.set("shards", "2").unwrap();
        assert!(
            config.validate().is_err(),
            "one name over two shards cannot pair shards"
        );
        config.set("shards", "1").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn the_replication_example_files_apply_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/replication");
        for (file, role, id) in [
            ("broker-a-master.conf", BrokerRole::SyncMaster, 0),
            ("broker-a-slave.conf", BrokerRole::Slave, 1),
            ("broker-b-master.conf", BrokerRole::SyncMaster, 0),
            ("broker-b-slave.conf", BrokerRole::Slave, 1),
        ] {
            let mut config = BrokerConfig::default();
            let unused = config.apply_file(&dir.join(file)).unwrap();
            assert!(unused.is_empty(), "{file}: {unused:?}");
            config.validate().unwrap();
            assert_eq!((config.broker_role, config.broker_id), (role, id), "{file}");
        }
    }

    #[test]
    fn ha_ports_follow_the_shard_ports() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.shard_ha_port(1, 10921), Some(10922), "main port + 1");
        assert_eq!(config.shard_ha_port(0, 0), Some(0), "free ports stay free");
        config.set("haListenPort", "20000").unwrap();
        assert_eq!(config.shard_ha_port(2, 10931), Some(20020));
        config.set("haMasterAddress", "127.0.0.1:30000").unwrap();
        assert_eq!(
            config.shard_ha_master_address(1),
            Some("127.0.0.1:30010".parse().unwrap())
        );
    }

    #[test]
    fn shard_ports_step_past_each_shards_vip_main_and_ha_ports() {
        let mut config = BrokerConfig::default();
        assert!(
            config.set("shardPortStep", "3").is_err(),
            "HA of one = VIP of the next"
        );
        config.set("shardPortStep", "4").unwrap();
        config.set("listenPort", "10911").unwrap();
        assert_eq!(config.shard_listen_port(1), Some(10915));
        config.set("listenPort", "65530").unwrap();
        assert_eq!(config.shard_listen_port(2), None, "past 65535");
        config.set("listenPort", "0").unwrap();
        assert_eq!(config.shard_listen_port(5), Some(0), "free ports stay free");
    }

    #[test]
    fn delay_levels_parse_like_rocketmq() {
        let levels =
            parse_delay_levels("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")
                .unwrap();
        assert_eq!(levels.len(), 18);
        assert_eq!(
            (levels[0], levels[4], levels[17]),
            (1_000, 60_000, 7_200_000)
        );
        assert!(parse_delay_levels("1x").is_err());
        assert!(
            parse_delay_levels("1é 2€").is_err(),
            "multi-byte units are errors, not panics"
        );
        assert!(parse_delay_levels("").is_err());
    }

    #[test]
    fn flush_and_group_keys_are_honoured_or_reported() {
        let mut config = BrokerConfig::default();
        assert_eq!(
            config.set("flushCommitLogLeastPages", "8"),
            Ok(Applied::Used)
        );
        assert_eq!(
            config.set("flushCommitLogThoroughInterval", "3000"),
            Ok(Applied::Used)
        );
        let store = config.store_config(0);
        assert_eq!(store.flush_least_bytes, 8 * PAGE_BYTES);
        assert_eq!(store.flush_thorough_interval_ms, 3000);
        let defaults = (
            store.flush_consume_queue_interval_ms,
            store.flush_consume_queue_least_pages,
            store.flush_consume_queue_thorough_interval_ms,
        );
        assert_eq!(defaults, (1000, 2, 60_000), "RocketMQ's defaults");
        for (key, value) in [
            ("flushIntervalConsumeQueue", "500"),
            ("flushConsumeQueueLeastPages", "4"),
            ("flushConsumeQueueThoroughInterval", "30000"),
        ] {
            assert_eq!(config.set(key, value), Ok(Applied::Used), "{key}");
        }
        let store = config.store_config(1);
        assert_eq!(store.flush_consume_queue_interval_ms, 500);
        assert_eq!(store.flush_consume_queue_least_pages, 4);
        assert_eq!(store.flush_consume_queue_thorough_interval_ms, 30_000);
        assert!(config.set("flushConsumeQueueLeastPages", "-1").is_err());
        assert_eq!(
            config.set("autoCreateSubscriptionGroup", "true"),
            Ok(Applied::Used)
        );
        assert_eq!(
            config.set("autoCreateSubscriptionGroup", "false"),
            Ok(Applied::Used)
        );
        assert!(!config.auto_create_subscription_group);
        assert!(config.set("shards", &(SHARDS_MAX + 1).to_string()).is_err());
    }

    #[test]
    fn store_config_follows_broker_keys() {
        let mut config = BrokerConfig::default();
        config.set("shards", "2").unwrap();
        config.set("flushDiskType", "SYNC_FLUSH").unwrap();
        config.set("maxTransferCountOnMessageInDisk", "8").unwrap();
        config
            .set("maxTransferBytesOnMessageInMemory", "262144")
            .unwrap();
        assert!(config
            .set("maxTransferCountOnMessageInMemory", "0")
            .is_err());
        assert!(config.set("accessMessageInMemoryMaxRatio", "101").is_err());
        let store = config.store_config(1);
        assert_eq!(store.transfer_limits.disk_count_max, 8);
        assert_eq!(store.transfer_limits.memory_bytes_max, 256 << 10);
        assert_eq!((store.shard_id, store.shard_count), (1, 2));
        assert_eq!(store.flush_mode, FlushMode::Sync);
        assert!(store.prewrite_segments);
        assert!(store.validate().is_ok());
    }
}
