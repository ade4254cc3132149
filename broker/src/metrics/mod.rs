//! The Prometheus endpoint's content: per-shard counters (`ShardStats`, gathered on scrape with
//! `Call::Stats`, so nothing on the send or pull path is shared) turned into metric families,
//! encoded in the text format by `prometheus-client`.
//!
//! Names: where rocketmq-exporter has a metric for the same thing, its name and labels
//! (`rocketmq_broker_tps`, `rocketmq_producer_tps`, `rocketmq_group_diff`, …), so existing
//! Grafana dashboards keep working; Thruster's own are `thruster_*` (counters and histograms,
//! which the exporter, computing rates itself, does not have). `broker` is the name a shard is
//! known by (`<brokerName>-s<i>` with a broker per shard).

pub mod http;

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::BrokerConfig;
use crate::meta::clients::ClientTable;
use crate::shard::ShardStats;
use crate::store::latency::{Histogram, BUCKET_BOUNDS};

type Labels = Vec<(String, String)>;

/// One sample's value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    /// Observations in µs or bytes, and the factor to the exposed unit (1e-6 for seconds).
    Histogram(Histogram, f64),
}

#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Every family of one scrape.
#[derive(Debug, Default)]
pub struct Families {
    families: Vec<Family>,
}

impl Families {
    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
    ) -> &mut Vec<(Labels, Value)> {
        self.families.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        });
        &mut self.families.last_mut().expect("just pushed").samples
    }

    fn counter(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) {
        let family = self.family(name, help, MetricType::Counter);
        family.extend(samples.into_iter().map(|(l, v)| (l, Value::Counter(v))));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, f64)>) {
        let family = self.family(name, help, MetricType::Gauge);
        family.extend(samples.into_iter().map(|(l, v)| (l, Value::Gauge(v))));
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        scale: f64,
        samples: Vec<(Labels, Histogram)>,
    ) {
        let family = self.family(name, help, MetricType::Histogram);
        family.extend(
            samples
                .into_iter()
                .map(|(l, h)| (l, Value::Histogram(h, scale))),
        );
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match value {
                    Value::Counter(v) => sample.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    Value::Gauge(v) => sample.encode_gauge(v)?,
                    Value::Histogram(h, scale) => {
                        let mut buckets: Vec<(f64, u64)> = BUCKET_BOUNDS
                            .iter()
                            .zip(h.counts)
                            .map(|(&bound, count)| (bound as f64 * scale, count))
                            .collect();
                        buckets.push((f64::MAX, h.counts[BUCKET_BOUNDS.len()]));
                        sample.encode_histogram::<NoLabelSet>(
                            h.sum as f64 * scale,
                            h.count(),
                            &buckets,
                            None,
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text a scrape answers with (`application/openmetrics-text`).
pub fn encode(families: Families) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(families));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What one scrape shows: the shards' stats, added up per broker name.
pub struct ScrapeInput<'a> {
    pub config: &'a BrokerConfig,
    pub shards: Vec<ShardStats>,
    pub clients: &'a ClientTable,
    /// The CommitLog file system's used share (0..1), −1 when unknown.
    pub disk_used_ratio: f64,
    pub boot_ms: i64,
}

/// Builds every family from a scrape's input.
pub fn families(input: &ScrapeInput) -> Families {
    let mut brokers: BTreeMap<String, ShardStats> = BTreeMap::new();
    for stats in &input.shards {
        brokers
            .entry(stats.broker_name.clone())
            .or_insert_with(|| ShardStats {
                broker_name: stats.broker_name.clone(),
                ..ShardStats::default()
            })
            .add(stats);
    }
    let mut f = Families::default();
    thruster_families(&mut f, &brokers, input);
    exporter_families(&mut f, &brokers, input);
    f
}

fn per_broker<T>(
    brokers: &BTreeMap<String, ShardStats>,
    value: impl Fn(&ShardStats) -> T,
) -> Vec<(Labels, T)> {
    brokers
        .iter()
        .map(|(name, stats)| (labels(&[("broker", name)]), value(stats)))
        .collect()
}

fn thruster_families(
    f: &mut Families,
    brokers: &BTreeMap<String, ShardStats>,
    input: &ScrapeInput,
) {
    let mut messages_in = Vec::new();
    let mut bytes_in = Vec::new();
    let mut messages_out = Vec::new();
    let mut bytes_out = Vec::new();
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    let mut request_latency = Vec::new();
    for (broker, stats) in brokers {
        for (topic, flow) in &stats.meter.put_by_topic {
            let l = labels(&[("broker", broker), ("topic", topic)]);
            messages_in.push((l.clone(), flow.messages));
            bytes_in.push((l, flow.bytes));
        }
        for ((topic, group), flow) in &stats.meter.get_by_topic_group {
            let l = labels(&[("broker", broker), ("topic", topic), ("group", group)]);
            messages_out.push((l.clone(), flow.messages));
            bytes_out.push((l, flow.bytes));
        }
        for (code, request) in &stats.meter.requests {
            let code = if *code == i32::MIN {
                crate::stats::OTHER.to_owned()
            } else {
                code.to_string()
            };
            let l = labels(&[("broker", broker), ("code", &code)]);
            requests.push((l.clone(), request.count));
            errors.push((l.clone(), request.errors));
            request_latency.push((l, request.latency));
        }
    }
    f.counter(
        "thruster_messages_in",
        "Messages clients sent, stored",
        messages_in,
    );
    f.counter(
        "thruster_bytes_in",
        "Bytes of the messages clients sent, as stored",
        bytes_in,
    );
    f.counter(
        "thruster_messages_out",
        "Messages pulled by consumer groups",
        messages_out,
    );
    f.counter(
        "thruster_bytes_out",
        "Bytes of the messages pulled",
        bytes_out,
    );
    f.counter(
        "thruster_put_failures",
        "Messages clients sent that the store refused",
        per_broker(brokers, |s| s.meter.put_failures),
    );
    f.counter(
        "thruster_requests",
        "Requests answered, by request code",
        requests,
    );
    f.counter(
        "thruster_request_errors",
        "Requests answered with a failure, by request code",
        errors,
    );
    f.histogram(
        "thruster_request_duration_seconds",
        "Time to answer a request, by request code (a parked pull's hold included)",
        1e-6,
        request_latency,
    );
    f.histogram(
        "thruster_store_put_duration_seconds",
        "Time from a send reaching the store to its result (append; under SYNC_FLUSH the flush)",
        1e-6,
        per_broker(brokers, |s| s.meter.put_latency),
    );
    f.histogram(
        "thruster_flush_duration_seconds",
        "Time of one CommitLog flush (write and sync)",
        1e-6,
        per_broker(brokers, |s| s.flush_latency),
    );
    f.histogram(
        "thruster_flush_group_bytes",
        "Bytes one CommitLog flush made durable (its group)",
        1.0,
        per_broker(brokers, |s| s.flush_group_bytes),
    );
    f.counter(
        "thruster_pulls_found",
        "Pulls answered with messages",
        per_broker(brokers, |s| s.meter.get_found),
    );
    f.counter(
        "thruster_pulls_missed",
        "Pulls answered without messages",
        per_broker(brokers, |s| s.meter.get_miss),
    );
    f.counter(
        "thruster_cross_shard_hops",
        "Client requests that hopped to another shard",
        per_broker(brokers, |s| s.hops_out),
    );
    f.gauge(
        "thruster_connections",
        "Open connections",
        per_broker(brokers, |s| s.connections as f64),
    );
    f.gauge(
        "thruster_parked_pull_queues",
        "Queues with a parked pull or delivery loop waiting on them",
        per_broker(brokers, |s| s.queues_waited_on as f64),
    );
    f.gauge(
        "thruster_flush_behind_bytes",
        "CommitLog bytes appended, not yet flushed",
        per_broker(brokers, |s| s.flush_behind_bytes as f64),
    );
    f.gauge(
        "thruster_disk_used_ratio",
        "Used share of the CommitLog's file system",
        vec![(Labels::new(), input.disk_used_ratio)],
    );
    let mut lag = Vec::new();
    for (broker, stats) in brokers {
        for ((group, topic), (max, committed)) in &stats.group_offsets {
            let l = labels(&[("broker", broker), ("group", group), ("topic", topic)]);
            lag.push((l, max.saturating_sub(*committed) as f64));
        }
    }
    f.gauge("thruster_consumer_lag", "Messages stored and not yet consumed, per group and topic (queues the group committed an offset in)", lag);
}

fn exporter_families(
    f: &mut Families,
    brokers: &BTreeMap<String, ShardStats>,
    input: &ScrapeInput,
) {
    let cluster = input.config.broker_cluster_name.as_str();
    let ip = input.config.broker_ip1.to_string();
    let broker_labels =
        |name: &str| labels(&[("cluster", cluster), ("brokerIP", &ip), ("broker", name)]);
    let window = |w: &[Option<f64>; 3]| w[1].or(w[0]).unwrap_or(0.0);
    f.gauge(
        "rocketmq_broker_tps",
        "BrokerPutNums",
        brokers
            .iter()
            .map(|(n, s)| (broker_labels(n), window(&s.meter.put_tps)))
            .collect(),
    );
    f.gauge(
        "rocketmq_broker_qps",
        "BrokerGetNums",
        brokers
            .iter()
            .map(|(n, s)| (broker_labels(n), window(&s.meter.transferred_tps)))
            .collect(),
    );

    let mut producer_tps = Vec::new();
    let mut producer_size = Vec::new();
    let mut producer_offset = Vec::new();
    let mut consumer_tps = Vec::new();
    let mut consumer_size = Vec::new();
    let mut consumer_offset = Vec::new();
    let mut consume_total = Vec::new();
    let mut diff: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (broker, stats) in brokers {
        let topic_labels =
            |topic: &str| labels(&[("cluster", cluster), ("broker", broker), ("topic", topic)]);
        for (topic, rate) in &stats.meter.put_rates {
            producer_tps.push((topic_labels(topic), rate.messages));
            producer_size.push((topic_labels(topic), rate.bytes));
        }
        for (topic, offset) in &stats.topic_offsets {
            producer_offset.push((topic_labels(topic), *offset as f64));
        }
        let group_labels = |topic: &str, group: &str| {
            labels(&[
                ("cluster", cluster),
                ("broker", broker),
                ("topic", topic),
                ("group", group),
            ])
        };
        for ((topic, group), rate) in &stats.meter.get_rates {
            consumer_tps.push((group_labels(topic, group), rate.messages));
            consumer_size.push((group_labels(topic, group), rate.bytes));
        }
        for ((group, topic), (max, committed)) in &stats.group_offsets {
            consumer_offset.push((group_labels(topic, group), *max as f64));
            consume_total.push((group_labels(topic, group), *committed as f64));
            *diff.entry((group.clone(), topic.clone())).or_default() +=
                max.saturating_sub(*committed);
        }
    }
    f.gauge("rocketmq_producer_tps", "TopicPutNums", producer_tps);
    f.gauge(
        "rocketmq_producer_message_size",
        "TopicPutMessageSize",
        producer_size,
    );
    f.gauge("rocketmq_producer_offset", "TopicOffset", producer_offset);
    f.gauge("rocketmq_consumer_tps", "GroupGetNums", consumer_tps);
    f.gauge(
        "rocketmq_consumer_message_size",
        "GroupGetMessageSize",
        consumer_size,
    );
    f.gauge(
        "rocketmq_consumer_offset",
        "GroupBrokerTotalOffset",
        consumer_offset,
    );
    f.gauge(
        "rocketmq_group_consume_total_offset",
        "GroupConsumeTotalOffset",
        consume_total,
    );
    let group_diff = diff
        .into_iter()
        .map(|((group, topic), lag)| {
            let (online, model) = match input.clients.consumer_members(&group) {
                Some((g, members)) => (members.len(), if g.is_broadcasting() { 0 } else { 1 }),
                None => (0, 1),
            };
            let l = labels(&[
                ("group", &group),
                ("topic", &topic),
                ("countOfOnlineConsumers", &online.to_string()),
                ("msgModel", &model.to_string()),
            ]);
            (l, lag as f64)
        })
        .collect();
    f.gauge("rocketmq_group_diff", "GroupDiff", group_diff);

    let boot = input.boot_ms.to_string();
    let version = thruster_protocol::codes::version::CURRENT.to_string();
    let runtime_labels = |name: &str| {
        labels(&[
            ("cluster", cluster),
            ("brokerIP", &ip),
            ("brokerHost", name),
            ("des", name),
            ("boottime", &boot),
            ("broker_version", &version),
        ])
    };
    let runtime = |f: &mut Families,
                   name: &'static str,
                   help: &'static str,
                   value: &dyn Fn(&ShardStats) -> f64| {
        let samples = brokers
            .iter()
            .map(|(n, s)| (runtime_labels(n), value(s)))
            .collect();
        f.gauge(name, help, samples);
    };
    runtime(
        f,
        "rocketmq_brokeruntime_msg_put_total_today_now",
        "brokerRuntimeMsgPutTotalTodayNow",
        &|s| s.put_messages as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_msg_gettotal_today_now",
        "brokerRuntimeMsgGetTotalTodayNow",
        &|s| s.meter.transferred().messages as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_msg_puttotal_todaymorning",
        "brokerRuntimeMsgPutTotalTodayMorning",
        &|s| s.meter.puts_today_morning as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_msg_gettotal_todaymorning",
        "brokerRuntimeMsgGetTotalTodayMorning",
        &|s| s.meter.transferred_today_morning as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_message_size_total",
        "brokerRuntimePutMessageSizeTotal",
        &|s| s.put_bytes as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_tps10",
        "brokerRuntimePutTps10",
        &|s| s.meter.put_tps[0].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_tps60",
        "brokerRuntimePutTps60",
        &|s| s.meter.put_tps[1].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_tps600",
        "brokerRuntimePutTps600",
        &|s| s.meter.put_tps[2].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_gettransfered_tps10",
        "brokerRuntimeGetTransferedTps10",
        &|s| s.meter.transferred_tps[0].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_gettransfered_tps60",
        "brokerRuntimeGetTransferedTps60",
        &|s| s.meter.transferred_tps[1].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_gettransfered_tps600",
        "brokerRuntimeGetTransferedTps600",
        &|s| s.meter.transferred_tps[2].unwrap_or(0.0),
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_latency_99",
        "brokerRuntimePutLatency99",
        &|s| s.meter.put_latency.quantile_upper(0.99) as f64 / 1_000.0,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_put_latency_999",
        "brokerRuntimePutLatency999",
        &|s| s.meter.put_latency.quantile_upper(0.999) as f64 / 1_000.0,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_putmessage_entire_time_max",
        "brokerRuntimePutMessageEntireTimeMax",
        &|s| (s.meter.put_latency.max / 1_000) as f64,
    );
    runtime(
        f,
        "rocketmq_brokeruntime_remain_howmanydata_toflush",
        "brokerRuntimeRemainHowManyDataToFlush",
        &|s| s.flush_behind_bytes as f64,
    );
    let ratio = input.disk_used_ratio;
    runtime(
        f,
        "rocketmq_brokeruntime_commitlog_disk_ratio",
        "brokerRuntimeCommitLogDiskRatio",
        &|_| ratio,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_openmetrics_text() {
        let mut stats = ShardStats {
            broker_name: "b-s0".into(),
            put_messages: 3,
            ..ShardStats::default()
        };
        let mut meter = crate::stats::ShardMeter::default();
        meter.put("T", 3, 300, 1_500, true);
        meter.get("T", "g", 3, 300, 10);
        meter.request(10, false, 2_000);
        stats.meter = meter.snapshot();
        stats.group_offsets.insert(("g".into(), "T".into()), (3, 1));
        let config = BrokerConfig::default();
        let clients = ClientTable::default();
        let input = ScrapeInput {
            config: &config,
            shards: vec![
                stats.clone(),
                ShardStats {
                    broker_name: "b-s1".into(),
                    ..stats
                },
            ],
            clients: &clients,
            disk_used_ratio: 0.5,
            boot_ms: 1,
        };
        let text = encode(families(&input)).unwrap();
        assert!(
            text.contains("thruster_messages_in_total{broker=\"b-s0\",topic=\"T\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("thruster_store_put_duration_seconds_count{broker=\"b-s1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "thruster_store_put_duration_seconds_bucket{le=\"0.0025\",broker=\"b-s0\"} 1\n"
            ) || text.contains(
                "thruster_store_put_duration_seconds_bucket{broker=\"b-s0\",le=\"0.0025\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("rocketmq_group_diff{group=\"g\",topic=\"T\",countOfOnlineConsumers=\"0\",msgModel=\"1\"} 4"), "two brokers, 2 each: {text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
