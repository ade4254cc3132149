//! What a shard counts about its traffic, for GET_BROKER_RUNTIME_INFO and the metrics endpoint.
//!
//! Each shard owns a [`ShardMeter`] (plain fields, no atomics: the send and pull paths add to
//! their own shard's); readers ask each shard for a [`MeterSnapshot`] (`Call::Stats`) and add
//! them up. A one-second sampler per shard ([`ShardMeter::sample`]) keeps the last ten minutes
//! of totals, for RocketMQ's TPS over 10 s / 1 min / 10 min, and the totals at the last two local
//! midnights (its "today/yesterday morning").

use std::collections::{BTreeMap, VecDeque};

pub mod series;
pub mod windows;

pub use series::{OTHER, SERIES_MAX};
use windows::{ItemFigures, Lookup, StatsWindows};

pub use crate::store::latency::Histogram;

/// Seconds of one-second samples kept: RocketMQ's longest TPS window (10 min) and one more.
pub const SAMPLES_MAX: usize = 601;
/// RocketMQ's TPS windows, in seconds.
pub const TPS_WINDOWS_SECS: [usize; 3] = [10, 60, 600];

/// Messages and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub messages: u64,
    pub bytes: u64,
}

impl Flow {
    fn add(&mut self, other: Flow) {
        self.messages += other.messages;
        self.bytes += other.bytes;
    }
}

/// One request code's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub count: u64,
    /// Answers that report a failure (not a pull's "nothing yet" or "moved").
    pub errors: u64,
    pub latency: Histogram,
}

/// Running totals the sampler records each second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    at_ms: i64,
    puts: u64,
    get_found: u64,
    get_miss: u64,
    transferred: u64,
}

/// Everything a shard counted, as handed to whoever adds shards up (`Send`, plain data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterSnapshot {
    /// Messages and bytes clients sent, by topic.
    pub put_by_topic: BTreeMap<String, Flow>,
    /// Client sends the store refused (messages).
    pub put_failures: u64,
    /// Messages and bytes pulled, by (topic, group).
    pub get_by_topic_group: BTreeMap<(String, String), Flow>,
    /// Pulls that found messages / found none.
    pub get_found: u64,
    pub get_miss: u64,
    /// Every request, by request code.
    pub requests: BTreeMap<i32, RequestStats>,
    /// Time from a send's arrival at the store to its result (append, and under SYNC_FLUSH
    /// the flush).
    pub put_latency: Histogram,
    /// RocketMQ's `putMessageDistributeTime` buckets (ms): <=0, 0-10, 10-50, 50-100, 100-200,
    /// 200-500, 500-1000, 1-2 s, 2-3 s, 3-4 s, 4-5 s, 5-10 s, >10 s.
    pub put_distribution: [u64; 13],
    /// Longest pull read (µs).
    pub get_time_max_us: u64,
    /// TPS over [`TPS_WINDOWS_SECS`]: store puts, pulls found, pulls missed, messages
    /// transferred. `None` for a window not yet covered by samples (RocketMQ prints nothing).
    pub put_tps: [Option<f64>; 3],
    pub get_found_tps: [Option<f64>; 3],
    pub get_miss_tps: [Option<f64>; 3],
    pub transferred_tps: [Option<f64>; 3],
    /// Rates over the last rate interval (10 s): sends per topic, pulls per (topic, group).
    pub put_rates: BTreeMap<String, Rate>,
    pub get_rates: BTreeMap<(String, String), Rate>,
    /// Store puts and messages transferred at the last local midnight and the one before.
    pub puts_today_morning: u64,
    pub puts_yesterday_morning: u64,
    pub transferred_today_morning: u64,
    pub transferred_yesterday_morning: u64,
}

fn add_tps(mine: &mut [Option<f64>; 3], theirs: &[Option<f64>; 3]) {
    for (m, t) in mine.iter_mut().zip(theirs) {
        *m = match (*m, *t) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

impl MeterSnapshot {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &MeterSnapshot) {
        for (topic, flow) in &other.put_by_topic {
            self.put_by_topic
                .entry(topic.clone())
                .or_default()
                .add(*flow);
        }
        for (key, flow) in &other.get_by_topic_group {
            self.get_by_topic_group
                .entry(key.clone())
                .or_default()
                .add(*flow);
        }
        for (code, theirs) in &other.requests {
            let mine = self.requests.entry(*code).or_default();
            mine.count += theirs.count;
            mine.errors += theirs.errors;
            mine.latency.add(&theirs.latency);
        }
        self.put_failures += other.put_failures;
        self.get_found += other.get_found;
        self.get_miss += other.get_miss;
        self.put_latency.add(&other.put_latency);
        for (mine, theirs) in self.put_distribution.iter_mut().zip(other.put_distribution) {
            *mine += theirs;
        }
        self.get_time_max_us = self.get_time_max_us.max(other.get_time_max_us);
        add_tps(&mut self.put_tps, &other.put_tps);
        add_tps(&mut self.get_found_tps, &other.get_found_tps);
        add_tps(&mut self.get_miss_tps, &other.get_miss_tps);
        add_tps(&mut self.transferred_tps, &other.transferred_tps);
        for (topic, rate) in &other.put_rates {
            let mine = self.put_rates.entry(topic.clone()).or_default();
            mine.messages += rate.messages;
            mine.bytes += rate.bytes;
        }
        for (key, rate) in &other.get_rates {
            let mine = self.get_rates.entry(key.clone()).or_default();
            mine.messages += rate.messages;
            mine.bytes += rate.bytes;
        }
        self.puts_today_morning += other.puts_today_morning;
        self.puts_yesterday_morning += other.puts_yesterday_morning;
        self.transferred_today_morning += other.transferred_today_morning;
        self.transferred_yesterday_morning += other.transferred_yesterday_morning;
    }

    pub fn transferred(&self) -> Flow {
        let mut total = Flow::default();
        for flow in self.get_by_topic_group.values() {
            total.add(*flow);
        }
        total
    }
}

/// How often the per-topic and per-(topic, group) rates are recomputed.
const RATE_INTERVAL_MS: i64 = 10_000;

/// Messages and bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub messages: f64,
    pub bytes: f64,
}

/// Rates of each key of a flow map between two snapshots `elapsed_ms` apart.
fn rates<K: Ord + Clone>(
    now: &BTreeMap<K, Flow>,
    before: &BTreeMap<K, Flow>,
    elapsed_ms: i64,
) -> BTreeMap<K, Rate> {
    let per_second = |delta: u64| delta as f64 * 1_000.0 / elapsed_ms as f64;
    now.iter()
        .map(|(key, flow)| {
            let old = before.get(key).copied().unwrap_or_default();
            let rate = Rate {
                messages: per_second(flow.messages.saturating_sub(old.messages)),
                bytes: per_second(flow.bytes.saturating_sub(old.bytes)),
            };
            (key.clone(), rate)
        })
        .collect()
}

/// The flows at the last rate computation, and when.
#[derive(Debug, Default)]
struct RateBase {
    at_ms: i64,
    put_by_topic: BTreeMap<String, Flow>,
    get_by_topic_group: BTreeMap<(String, String), Flow>,
}

/// A shard's counters (owned by its reactor; see the module doc).
#[derive(Debug, Default)]
pub struct ShardMeter {
    counts: MeterSnapshot,
    samples: VecDeque<Sample>,
    /// Local day (days since the epoch, local time) of the last sample.
    day: Option<i64>,
    rate_base: RateBase,
    /// RocketMQ's stats items (VIEW_BROKER_STATS_DATA).
    windows: StatsWindows,
}

/// A key of a bounded series map: `key` itself while there is room, else `other`.
fn bounded<K: Ord + Clone, V: Default>(
    map: &mut BTreeMap<K, V>,
    key: K,
    other: impl FnOnce() -> K,
) -> &mut V {
    if map.len() >= SERIES_MAX && !map.contains_key(&key) {
        return map.entry(other()).or_default();
    }
    map.entry(key).or_default()
}

/// RocketMQ's `putMessageDistributeTime` bucket of a put that took `ms`.
fn distribution_bucket(ms: u64) -> usize {
    const BOUNDS_MS: [u64; 12] = [
        0, 10, 50, 100, 200, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 10_000,
    ];
    BOUNDS_MS.partition_point(|&bound| bound < ms)
}

impl ShardMeter {
    /// A client send: `messages` records of `bytes` in all, answered after `elapsed_us`.
    pub fn put(&mut self, topic: &str, messages: u64, bytes: u64, elapsed_us: u64, stored: bool) {
        let counts = &mut self.counts;
        if !stored {
            counts.put_failures += messages;
            return;
        }
        // Looked up by `&str` first: the key is allocated only for a new topic, not per send.
        match counts.put_by_topic.get_mut(topic) {
            Some(flow) => flow,
            None => bounded(&mut counts.put_by_topic, topic.to_owned(), || {
                OTHER.to_owned()
            }),
        }
        .add(Flow { messages, bytes });
        self.windows.put(topic, messages, bytes);
        counts.put_latency.observe(elapsed_us);
        counts.put_distribution[distribution_bucket(elapsed_us / 1_000)] += 1;
    }

    /// A pull of `group` on `topic` that found `messages` messages (`bytes` in all) or none.
    pub fn get(&mut self, topic: &str, group: &str, messages: u64, bytes: u64, elapsed_us: u64) {
        let counts = &mut self.counts;
        if messages == 0 {
            counts.get_miss += 1;
        } else {
            counts.get_found += 1;
            let key = (topic.to_owned(), group.to_owned());
            bounded(&mut counts.get_by_topic_group, key, || {
                (OTHER.to_owned(), OTHER.to_owned())
            })
            .add(Flow { messages, bytes });
            self.windows.get(topic, group, messages, bytes);
        }
        counts.get_time_max_us = counts.get_time_max_us.max(elapsed_us);
    }

    /// A request answered with `failed` after `elapsed_us`.
    pub fn request(&mut self, code: i32, failed: bool, elapsed_us: u64) {
        let stats = bounded(&mut self.counts.requests, code, || i32::MIN);
        stats.count += 1;
        stats.errors += u64::from(failed);
        stats.latency.observe(elapsed_us);
    }

    /// A message of `group` sent back into `topic` (its retry or dead-letter topic).
    pub fn send_back(&mut self, topic: &str, group: &str) {
        self.windows.send_back(topic, group);
    }

    /// Forgets a deleted topic's stats items.
    pub fn forget_topic(&mut self, topic: &str) {
        self.windows.forget_topic(topic);
    }

    /// One stats item's minute, hour and day as of `now_ms` (`None`: this shard has none).
    pub fn stats_item(&self, lookup: Lookup, now_ms: i64) -> Option<ItemFigures> {
        self.windows.figures(lookup, now_ms)
    }

    pub fn get_found(&self) -> u64 {
        self.counts.get_found
    }

    pub fn get_miss(&self) -> u64 {
        self.counts.get_miss
    }

    /// Records this second's totals (`puts`: every record the store took) and rolls the day
    /// totals over at local midnight. Called once a second by the shard's sampler task.
    pub fn sample(&mut self, now_ms: i64, puts: u64) {
        let transferred = self.counts.transferred().messages;
        let day = local_day(now_ms);
        match self.day {
            Some(seen) if seen != day => {
                let counts = &mut self.counts;
                counts.puts_yesterday_morning = counts.puts_today_morning;
                counts.puts_today_morning = puts;
                counts.transferred_yesterday_morning = counts.transferred_today_morning;
                counts.transferred_today_morning = transferred;
            }
            _ => {}
        }
        self.day = Some(day);
        self.update_rates(now_ms);
        self.windows.sample(now_ms);
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at_ms: now_ms,
            puts,
            get_found: self.counts.get_found,
            get_miss: self.counts.get_miss,
            transferred,
        });
    }

    fn update_rates(&mut self, now_ms: i64) {
        let elapsed_ms = now_ms - self.rate_base.at_ms;
        if elapsed_ms < RATE_INTERVAL_MS {
            return;
        }
        let counts = &mut self.counts;
        if self.rate_base.at_ms > 0 {
            counts.put_rates = rates(
                &counts.put_by_topic,
                &self.rate_base.put_by_topic,
                elapsed_ms,
            );
            counts.get_rates = rates(
                &counts.get_by_topic_group,
                &self.rate_base.get_by_topic_group,
                elapsed_ms,
            );
        }
        self.rate_base = RateBase {
            at_ms: now_ms,
            put_by_topic: counts.put_by_topic.clone(),
            get_by_topic_group: counts.get_by_topic_group.clone(),
        };
    }

    /// Messages per second `group` pulled from `topic` over the last rate interval (10 s).
    pub fn group_tps(&self, topic: &str, group: &str) -> f64 {
        self.counts
            .get_rates
            .get(&(topic.to_owned(), group.to_owned()))
            .map_or(0.0, |rate| rate.messages)
    }

    /// Rate of one sampled total over the last `window` samples (RocketMQ `CallSnapshot.getTPS`).
    fn tps(&self, window: usize, total: impl Fn(&Sample) -> u64) -> Option<f64> {
        let last = self.samples.back()?;
        let first = self
            .samples
            .get(self.samples.len().checked_sub(window + 1)?)?;
        let elapsed_ms = (last.at_ms - first.at_ms).max(1);
        Some((total(last).saturating_sub(total(first))) as f64 * 1_000.0 / elapsed_ms as f64)
    }

    pub fn snapshot(&self) -> MeterSnapshot {
        let mut snapshot = self.counts.clone();
        for (i, window) in TPS_WINDOWS_SECS.into_iter().enumerate() {
            snapshot.put_tps[i] = self.tps(window, |s| s.puts);
            snapshot.get_found_tps[i] = self.tps(window, |s| s.get_found);
            snapshot.get_miss_tps[i] = self.tps(window, |s| s.get_miss);
            snapshot.transferred_tps[i] = self.tps(window, |s| s.transferred);
        }
        snapshot
    }
}

/// Days since the epoch in local time (where "today" starts, as for the Java broker).
fn local_day(now_ms: i64) -> i64 {
    let secs = now_ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes into the `tm` we own; a zeroed tm is a valid initial value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let offset_secs = if unsafe { libc::localtime_r(&secs, &mut tm).is_null() } {
        0
    } else {
        tm.tm_gmtoff
    };
    (now_ms.div_euclid(1000) + offset_secs).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_covers_its_window_only_once_sampled() {
        let mut meter = ShardMeter::default();
        for second in 0..=10 {
            meter.sample(second * 1_000, second as u64 * 50);
        }
        let snapshot = meter.snapshot();
        assert_eq!(snapshot.put_tps[0], Some(50.0));
        assert_eq!(snapshot.put_tps[1], None, "a minute not sampled yet");
        assert_eq!(snapshot.get_found_tps[0], Some(0.0));
    }

    #[test]
    fn series_are_bounded_and_shards_add_up() {
        let mut meter = ShardMeter::default();
        for topic in 0..SERIES_MAX + 10 {
            meter.put(&format!("T{topic}"), 2, 20, 5_000, true);
        }
        meter.put("T0", 1, 1, 20_000, false);
        let snapshot = meter.snapshot();
        assert_eq!(snapshot.put_by_topic.len(), SERIES_MAX + 1);
        assert_eq!(snapshot.put_by_topic[OTHER].messages, 20);
        assert_eq!(snapshot.put_failures, 1);
        assert_eq!(snapshot.put_latency.count(), (SERIES_MAX + 10) as u64);
        assert_eq!(
            snapshot.put_distribution[1],
            (SERIES_MAX + 10) as u64,
            "0-10 ms"
        );
        meter.get("T0", "g", 3, 30, 7);
        meter.get("T0", "g", 0, 0, 9);
        meter.request(11, false, 10);
        meter.request(11, true, 10);
        let mut total = meter.snapshot();
        total.add(&meter.snapshot());
        assert_eq!(
            total.get_by_topic_group[&("T0".into(), "g".into())].messages,
            6
        );
        assert_eq!((total.get_found, total.get_miss), (2, 2));
        assert_eq!(
            (total.requests[&11].count, total.requests[&11].errors),
            (4, 2)
        );
        assert_eq!(total.get_time_max_us, 9);
    }

    #[test]
    fn day_totals_roll_over_at_local_midnight() {
        let mut meter = ShardMeter::default();
        let day_ms = 86_400_000;
        // Find a local midnight: the first ms of the local day of `base`.
        let base = 10 * day_ms;
        let midnight = (base - day_ms..=base)
            .step_by(60_000)
            .find(|&ms| local_day(ms) == local_day(base))
            .unwrap();
        meter.sample(midnight - 60_000, 100);
        meter.sample(midnight, 150);
        let first = meter.snapshot();
        assert_eq!(first.puts_today_morning, 150);
        meter.sample(midnight + day_ms, 400);
        let second = meter.snapshot();
        assert_eq!(
            (second.puts_yesterday_morning, second.puts_today_morning),
            (150, 400)
        );
    }
}
