//! A consumer's per-topic figures for `ConsumerRunningInfo.statusTable` (Java's
//! `ConsumerStatsManager`): pulls, their latency and messages; listener calls, their latency,
//! messages accepted and failed. TPS and average latency cover the last minute, failed
//! messages the last hour, as Java reports them.
//!
//! Memory is fixed per topic: `SECOND_BUCKETS` one-second buckets and `MINUTE_BUCKETS`
//! one-minute buckets, each reused when its time comes round again (no allocation per event).
//! Callers pass the time (`now_ms`), so this holds no clock.

use crate::protocol::body::running_info::ConsumeStatus;

/// One-second buckets: the minute over which TPS and latency are averaged.
pub const SECOND_BUCKETS: usize = 60;
/// One-minute buckets: the hour over which failed messages are summed.
pub const MINUTE_BUCKETS: usize = 60;

#[derive(Debug, Clone, Copy, Default)]
struct SecondBucket {
    second: i64,
    pulls: u64,
    pull_rt_ms_sum: u64,
    pulled_messages: u64,
    consumes: u64,
    consume_rt_ms_sum: u64,
    ok_messages: u64,
    failed_messages: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct MinuteBucket {
    minute: i64,
    failed_messages: u64,
}

/// One topic's recent consumption.
#[derive(Debug, Clone)]
pub struct TopicConsumeStats {
    seconds: [SecondBucket; SECOND_BUCKETS],
    minutes: [MinuteBucket; MINUTE_BUCKETS],
}

impl Default for TopicConsumeStats {
    fn default() -> Self {
        // Time -1 marks an unused bucket (no event happens at second or minute -1).
        TopicConsumeStats {
            seconds: [SecondBucket {
                second: -1,
                ..SecondBucket::default()
            }; SECOND_BUCKETS],
            minutes: [MinuteBucket {
                minute: -1,
                failed_messages: 0,
            }; MINUTE_BUCKETS],
        }
    }
}

impl TopicConsumeStats {
    fn second(&mut self, now_ms: i64) -> &mut SecondBucket {
        let second = now_ms.div_euclid(1000);
        let bucket = &mut self.seconds[second.rem_euclid(SECOND_BUCKETS as i64) as usize];
        if bucket.second != second {
            *bucket = SecondBucket {
                second,
                ..SecondBucket::default()
            };
        }
        bucket
    }

    /// A pull that took `rt_ms` and brought `messages`.
    pub fn record_pull(&mut self, now_ms: i64, rt_ms: u64, messages: u64) {
        let bucket = self.second(now_ms);
        bucket.pulls += 1;
        bucket.pull_rt_ms_sum += rt_ms;
        bucket.pulled_messages += messages;
    }

    /// A listener call that took `rt_ms` and accepted `ok` messages, failed `failed`.
    pub fn record_consume(&mut self, now_ms: i64, rt_ms: u64, ok: u64, failed: u64) {
        let bucket = self.second(now_ms);
        bucket.consumes += 1;
        bucket.consume_rt_ms_sum += rt_ms;
        bucket.ok_messages += ok;
        bucket.failed_messages += failed;
        if failed > 0 {
            let minute = now_ms.div_euclid(60_000);
            let bucket = &mut self.minutes[minute.rem_euclid(MINUTE_BUCKETS as i64) as usize];
            if bucket.minute != minute {
                *bucket = MinuteBucket {
                    minute,
                    failed_messages: 0,
                };
            }
            bucket.failed_messages += failed;
        }
    }

    /// The figures as of `now_ms`.
    pub fn status(&self, now_ms: i64) -> ConsumeStatus {
        let now_second = now_ms.div_euclid(1000);
        let recent = self
            .seconds
            .iter()
            .filter(|b| b.second > now_second - SECOND_BUCKETS as i64 && b.second <= now_second);
        let mut sum = SecondBucket::default();
        for b in recent {
            sum.pulls += b.pulls;
            sum.pull_rt_ms_sum += b.pull_rt_ms_sum;
            sum.pulled_messages += b.pulled_messages;
            sum.consumes += b.consumes;
            sum.consume_rt_ms_sum += b.consume_rt_ms_sum;
            sum.ok_messages += b.ok_messages;
            sum.failed_messages += b.failed_messages;
        }
        let now_minute = now_ms.div_euclid(60_000);
        let failed_hour: u64 = self
            .minutes
            .iter()
            .filter(|b| b.minute > now_minute - MINUTE_BUCKETS as i64 && b.minute <= now_minute)
            .map(|b| b.failed_messages)
            .sum();
        let window_seconds = SECOND_BUCKETS as f64;
        let average = |total: u64, count: u64| {
            if count == 0 {
                0.0
            } else {
                total as f64 / count as f64
            }
        };
        ConsumeStatus {
            consume_failed_msgs: failed_hour as i64,
            consume_failed_tps: sum.failed_messages as f64 / window_seconds,
            consume_ok_tps: sum.ok_messages as f64 / window_seconds,
            consume_rt: average(sum.consume_rt_ms_sum, sum.consumes),
            pull_rt: average(sum.pull_rt_ms_sum, sum.pulls),
            pull_tps: sum.pulled_messages as f64 / window_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_over_the_last_minute_and_sums_failures_over_the_hour() {
        let mut stats = TopicConsumeStats::default();
        let t0 = 1_700_000_000_000;
        stats.record_pull(t0, 10, 30);
        stats.record_pull(t0 + 1_500, 20, 30);
        stats.record_consume(t0 + 2_000, 4, 50, 10);
        let status = stats.status(t0 + 3_000);
        assert_eq!(status.pull_tps, 1.0);
        assert_eq!(status.pull_rt, 15.0);
        assert_eq!(status.consume_rt, 4.0);
        assert_eq!(status.consume_ok_tps, 50.0 / 60.0);
        assert_eq!(status.consume_failed_msgs, 10);
        // A minute later the pulls have left the window; the failures stay for the hour.
        let later = stats.status(t0 + 61_000);
        assert_eq!(later.pull_tps, 0.0);
        assert_eq!(later.pull_rt, 0.0);
        assert_eq!(later.consume_failed_msgs, 10);
        assert_eq!(stats.status(t0 + 3_601_000).consume_failed_msgs, 0);
    }

    #[test]
    fn a_bucket_is_reused_when_its_second_comes_round() {
        let mut stats = TopicConsumeStats::default();
        stats.record_pull(0, 1, 5);
        stats.record_pull(60_000, 1, 7); // same slot, a minute later: the old count is gone
        assert_eq!(stats.status(60_000).pull_tps, 7.0 / 60.0);
    }
}
