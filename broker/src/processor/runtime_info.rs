//! GET_BROKER_RUNTIME_INFO (28): the `KVTable` mqadmin's clusterList/brokerStatus,
//! rocketmq-dashboard and rocketmq-exporter read, with every key the Java 4.9 broker reports
//! (`AdminBrokerProcessor.prepareRuntimeInfo`, `DefaultMessageStore.getRuntimeInfo`,
//! `StoreStatsService.getRuntimeInfo`), with Thruster's values, plus Thruster's own keys.
//!
//! The answer is built by sections ([`RuntimeInfo`] is a list of key/value pairs): add a
//! section function and call it from [`runtime_info`] to report more (HA keys, for one).

use std::collections::BTreeMap;

use thruster_protocol::body::{self, KvTable};
use thruster_protocol::shard::{SHARD_ADDRS_KEY, SHARD_COUNT_KEY};
use thruster_protocol::RemotingCommand;
use tracing::warn;

use super::{BrokerProcessor, Handled};
use crate::runtime;
use crate::shard::{Call, CallReply, Shard, ShardStats};
use crate::stats::TPS_WINDOWS_SECS;
use crate::store::disk_usage::{disk_space, DiskSpace};

/// RocketMQ's default thread-pool queue capacities (Thruster has no such queues: a request is
/// a task on its connection's shard, so the queue sizes are 0).
const SEND_QUEUE_CAPACITY: u32 = 10_000;
const PULL_QUEUE_CAPACITY: u32 = 100_000;
const QUERY_QUEUE_CAPACITY: u32 = 20_000;
const END_TRANSACTION_QUEUE_CAPACITY: u32 = 100_000;

/// The key/value pairs of a runtime-info answer.
#[derive(Debug, Default)]
pub struct RuntimeInfo {
    table: BTreeMap<String, String>,
}

impl RuntimeInfo {
    pub fn put(&mut self, key: impl Into<String>, value: impl ToString) {
        self.table.insert(key.into(), value.to_string());
    }

    pub fn into_table(self) -> KvTable {
        KvTable { table: self.table }
    }
}

/// Every shard of `shards`' counters (`Call::Stats`), in shard order; a shard that does not
/// answer (shutting down) is left out.
pub async fn shard_stats(
    processor: &BrokerProcessor,
    shards: std::ops::Range<usize>,
) -> Vec<ShardStats> {
    let mut all = Vec::new();
    for to in shards {
        match processor.shard.call(processor, to, Call::Stats).await {
            CallReply::Stats(stats) => all.push(*stats),
            other => warn!(to, ?other, "no stats from shard"),
        }
    }
    all
}

/// Counters summed over the shards of the broker the client sees (this shard alone with a
/// broker per shard, so a cluster's sums count each once).
pub async fn runtime_info(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let per_shard = shard_stats(processor, shard.broker_shards()).await;
    let mut total = ShardStats::default();
    per_shard.iter().for_each(|stats| total.add(stats));
    let root = shard.config.store_path_root_dir.clone();
    let space = runtime::spawn_blocking(move || {
        let commit_log = root.join("commitlog");
        let queues = root.join("consumequeue");
        (
            disk_space(&commit_log).or_else(|_| disk_space(&root)),
            disk_space(&queues).or_else(|_| disk_space(&root)),
        )
    })
    .await;
    let earliest_ms = earliest_message_ms(shard).await;

    let mut info = RuntimeInfo::default();
    store_section(&mut info, shard, &total, &per_shard, &space, earliest_ms);
    broker_section(&mut info, &total);
    thruster_section(&mut info, shard, &total, &per_shard);
    store_io_section(&mut info, shard);
    ha_section(&mut info, shard);
    Ok(request
        .success()
        .with_body(body::encode(&info.into_table()))
        .into())
}

/// The store I/O settings this broker took, and whether from `io-properties.json`
/// (`thruster-tune probe`) or the defaults.
fn store_io_section(info: &mut RuntimeInfo, shard: &Shard) {
    let store = shard.config.store_config(0);
    let source = if shard.config.store_io.is_some() {
        "io-properties.json"
    } else {
        "defaults"
    };
    info.put("storeIoSettingsSource", source);
    info.put("storeChunkBytes", store.chunk_bytes);
    info.put("storeWritesInFlightMax", store.writes_in_flight_max);
    info.put("storeGroupCommitBytes", store.group_commit_bytes);
}

/// The store's keys (`StoreStatsService`, `DefaultMessageStore`).
fn store_section(
    info: &mut RuntimeInfo,
    shard: &Shard,
    total: &ShardStats,
    per_shard: &[ShardStats],
    space: &(std::io::Result<DiskSpace>, std::io::Result<DiskSpace>),
    earliest_ms: i64,
) {
    let meter = &total.meter;
    let now_ms = runtime::now_ms();
    info.put("bootTimestamp", shard.boot_ms);
    info.put("runtime", format_runtime(now_ms - shard.boot_ms));
    info.put("putMessageEntireTimeMax", meter.put_latency.max / 1_000);
    // Java reports 1 for an empty store (it divides by it).
    let put_times = total.put_messages.max(1);
    info.put("putMessageTimesTotal", put_times);
    info.put("putMessageFailedTimes", meter.put_failures);
    info.put("putMessageSizeTotal", total.put_bytes);
    info.put(
        "putMessageDistributeTime",
        distribution(&meter.put_distribution),
    );
    info.put(
        "putMessageAverageSize",
        java_double(total.put_bytes as f64 / put_times as f64),
    );
    // Dispatch to the queues and index is inline with the put: nothing is buffered for it.
    info.put("dispatchMaxBuffer", 0);
    info.put("getMessageEntireTimeMax", meter.get_time_max_us / 1_000);
    info.put("putTps", tps(&meter.put_tps));
    info.put("getFoundTps", tps(&meter.get_found_tps));
    info.put("getMissTps", tps(&meter.get_miss_tps));
    let mut get_total = meter.get_found_tps;
    for (sum, miss) in get_total.iter_mut().zip(meter.get_miss_tps) {
        *sum = Some(sum.unwrap_or(0.0) + miss.unwrap_or(0.0));
    }
    info.put("getTotalTps", tps(&get_total));
    info.put("getTransferedTps", tps(&meter.transferred_tps));
    let put_quantile_ms = |q: f64| meter.put_latency.quantile_upper(q) as f64 / 1_000.0;
    info.put("putLatency99", format!("{:.2}", put_quantile_ms(0.99)));
    info.put("putLatency999", format!("{:.2}", put_quantile_ms(0.999)));
    let commit_log_path = shard.config.store_path_root_dir.join("commitlog");
    let commit_log_ratio = space.0.as_ref().map_or(-1.0, DiskSpace::used_ratio);
    info.put(
        format!("commitLogDiskRatio_{}", commit_log_path.display()),
        java_double(commit_log_ratio),
    );
    info.put("commitLogDiskRatio", java_double(commit_log_ratio));
    let queue_ratio = space.1.as_ref().map_or(-1.0, DiskSpace::used_ratio);
    info.put("consumeQueueDiskRatio", java_double(queue_ratio));
    for (level, delivered, max) in &total.schedule_progress {
        info.put(
            format!("scheduleMessageOffset_{level}"),
            format!("{delivered},{max}"),
        );
    }
    // With several shards behind one name, the lowest and highest offsets of any of them
    // (offsets carry their shard in the top byte, so they never collide).
    let min = per_shard.iter().map(|s| s.commit_log_min_offset).min();
    let max = per_shard.iter().map(|s| s.commit_log_max_offset).max();
    info.put("commitLogMinOffset", min.unwrap_or(0));
    info.put("commitLogMaxOffset", max.unwrap_or(0));
    info.put("earliestMessageTimeStamp", earliest_ms);
    info.put(
        "remainHowManyDataToFlush",
        human_bytes(total.flush_behind_bytes),
    );
    if let Ok(space) = &space.0 {
        info.put(
            "commitLogDirCapacity",
            format!(
                "Total : {}, Free : {}.",
                human_bytes(space.total_bytes),
                human_bytes(space.usable_bytes)
            ),
        );
    }
    // No transient store pool: Java reports Integer.MAX_VALUE then.
    info.put("remainTransientStoreBufferNumbs", i32::MAX);
}

/// The broker's keys (`AdminBrokerProcessor.prepareRuntimeInfo`).
fn broker_section(info: &mut RuntimeInfo, total: &ShardStats) {
    let meter = &total.meter;
    info.put("brokerVersionDesc", "V4_9_8");
    info.put("brokerVersion", thruster_protocol::codes::version::CURRENT);
    info.put("msgPutTotalYesterdayMorning", meter.puts_yesterday_morning);
    info.put("msgPutTotalTodayMorning", meter.puts_today_morning);
    info.put("msgPutTotalTodayNow", total.put_messages);
    info.put(
        "msgGetTotalYesterdayMorning",
        meter.transferred_yesterday_morning,
    );
    info.put("msgGetTotalTodayMorning", meter.transferred_today_morning);
    info.put("msgGetTotalTodayNow", meter.transferred().messages);
    for (size, capacity, value) in [
        (
            "sendThreadPoolQueueSize",
            "sendThreadPoolQueueCapacity",
            SEND_QUEUE_CAPACITY,
        ),
        (
            "pullThreadPoolQueueSize",
            "pullThreadPoolQueueCapacity",
            PULL_QUEUE_CAPACITY,
        ),
        (
            "queryThreadPoolQueueSize",
            "queryThreadPoolQueueCapacity",
            QUERY_QUEUE_CAPACITY,
        ),
        (
            "EndTransactionQueueSize",
            "EndTransactionThreadPoolQueueCapacity",
            END_TRANSACTION_QUEUE_CAPACITY,
        ),
    ] {
        info.put(size, 0);
        info.put(capacity, value);
    }
    for key in [
        "sendThreadPoolQueueHeadWaitTimeMills",
        "pullThreadPoolQueueHeadWaitTimeMills",
        "queryThreadPoolQueueHeadWaitTimeMills",
    ] {
        info.put(key, 0);
    }
    // Dispatch is inline with the put; no lock guards the page cache.
    info.put("dispatchBehindBytes", 0);
    info.put("pageCacheLockTimeMills", 0);
    info.put("startAcceptSendRequestTimeStamp", 0);
}

/// Thruster's own keys: shards, hops, sendfile, the shard map for shard-aware clients.
fn thruster_section(
    info: &mut RuntimeInfo,
    shard: &Shard,
    total: &ShardStats,
    per_shard: &[ShardStats],
) {
    for stats in per_shard {
        let id = stats.shard;
        info.put(
            format!("commitLogMaxOffset_shard{id}"),
            stats.commit_log_max_offset,
        );
        info.put(
            format!("commitLogMinOffset_shard{id}"),
            stats.commit_log_min_offset,
        );
    }
    info.put("crossShardHops", total.hops_out);
    info.put("pullSendfileBytes", total.pull_file_bytes);
    info.put("thrusterQueuesWaitedOn", total.queues_waited_on);
    info.put("shards", shard.count);
    // Shard-aware clients send each queue's requests to its owner's own port (see
    // thruster_protocol::shard); other clients ignore these keys. With a broker per shard
    // there is nothing to map: every broker name is one shard already.
    if let Some(addrs) = shard
        .shard_addrs
        .get()
        .filter(|_| !shard.config.broker_per_shard)
    {
        info.put(SHARD_COUNT_KEY, addrs.len());
        let joined: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        info.put(SHARD_ADDRS_KEY, joined.join(";"));
    }
}

/// Store time of the oldest message of this shard's CommitLog (Java
/// `getEarliestMessageTime`), −1 when there is none.
/// Replication health (brokerRole, masterSlaveDiff, ...): replication pairs shard i with
/// shard i, and each is a broker of its own, so these are this shard's.
fn ha_section(info: &mut RuntimeInfo, shard: &Shard) {
    let ha_addr = shard.ha_addrs.get(shard.id).copied().flatten();
    let log_end = shard.store.commit_log_max_offset();
    for (key, value) in shard.ha.runtime_info(log_end, ha_addr) {
        info.put(key, value);
    }
}

async fn earliest_message_ms(shard: &Shard) -> i64 {
    let offset = shard.store.commit_log_min_offset();
    match shard.store.read_record(offset).await {
        Ok(Some(bytes)) => thruster_protocol::message::decode_record(&bytes, false)
            .map_or(-1, |record| record.store_timestamp),
        _ => -1,
    }
}

/// Java `StoreStatsService.getFormatRuntime`.
fn format_runtime(elapsed_ms: i64) -> String {
    let secs = elapsed_ms.max(0) / 1_000;
    format!(
        "[ {} days, {} hours, {} minutes, {} seconds ]",
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Java's `putMessageDistributeTime`: `[<=0ms]:n [0~10ms]:n … ` (trailing space included).
fn distribution(counts: &[u64; 13]) -> String {
    const NAMES: [&str; 13] = [
        "[<=0ms]",
        "[0~10ms]",
        "[10~50ms]",
        "[50~100ms]",
        "[100~200ms]",
        "[200~500ms]",
        "[500ms~1s]",
        "[1~2s]",
        "[2~3s]",
        "[3~4s]",
        "[4~5s]",
        "[5~10s]",
        "[10s~]",
    ];
    NAMES
        .iter()
        .zip(counts)
        .map(|(name, count)| format!("{name}:{count} "))
        .collect()
}

/// Three TPS windows as Java joins them (`"a b c"`; a window not covered yet is empty).
fn tps(windows: &[Option<f64>; TPS_WINDOWS_SECS.len()]) -> String {
    windows
        .iter()
        .map(|w| w.map(java_double).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A double as Java's `String.valueOf` prints ordinary values (`1.0`, `0.25`).
fn java_double(value: f64) -> String {
    if value.is_finite() && value == value.trunc() && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Java `MixAll.humanReadableByteCount(bytes, false)`: `512 B`, `1.5 KiB`, `251.6 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let exp = ((bytes as f64).ln() / 1024f64.ln()) as i32;
    let prefix = "KMGTPE".as_bytes()[(exp - 1) as usize] as char;
    format!("{:.1} {prefix}iB", bytes as f64 / 1024f64.powi(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_java_prints_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(270_000_000_000), "251.5 GiB");
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(0.25), "0.25");
        assert_eq!(java_double(-1.0), "-1.0");
        assert_eq!(tps(&[Some(2.0), Some(0.5), None]), "2.0 0.5 ");
        assert_eq!(
            format_runtime(90_061_000),
            "[ 1 days, 1 hours, 1 minutes, 1 seconds ]"
        );
        let mut counts = [0; 13];
        counts[1] = 7;
        assert!(distribution(&counts).starts_with("[<=0ms]:0 [0~10ms]:7 [10~50ms]:0 "));
    }
}
