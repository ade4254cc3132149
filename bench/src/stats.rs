//! Latency recording and reporting: HdrHistogram in microseconds, percentiles, throughput, the
//! `.hgrm` percentile file and the JSON summary.
//!
//! Coordinated omission: in an open-loop run every operation has an *intended* start time on a
//! fixed schedule, and its latency is measured from that time, not from when the generator got
//! round to sending it. A server that stalls therefore delays every operation scheduled during
//! the stall, and all of them show up in the percentiles (as wrk2 and OMB measure).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, microseconds (60 s); larger values are clamped to it.
pub const LATENCY_MAX_US: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Records one operation: `intended_us` is when it should have started (open loop) or when it
/// did start (closed loop), `completed_us` when it finished, on the same clock.
pub fn record(histogram: &mut Histogram<u64>, intended_us: u64, completed_us: u64) {
    let latency = completed_us
        .saturating_sub(intended_us)
        .clamp(1, LATENCY_MAX_US);
    histogram
        .record(latency)
        .expect("value within the histogram's bounds");
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub operations: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// Generator CPU use, in cores (user + system time / elapsed).
    pub generator_cores: f64,
    /// Set when a generator thread used most of a core: the figures may be the generator's
    /// limit, not the target's.
    pub generator_saturated: bool,
    /// Broker CPU (user + system, whole process, from `/proc`) over the run, per operation,
    /// microseconds; set with `--broker-pid`.
    pub broker_cpu_us_per_op: Option<f64>,
    /// Broker CPU over the run, in cores.
    pub broker_cores: Option<f64>,
}

impl Summary {
    pub fn new(
        name: &str,
        histogram: &Histogram<u64>,
        errors: u64,
        bytes: u64,
        elapsed: Duration,
    ) -> Summary {
        let elapsed_s = elapsed.as_secs_f64().max(1e-9);
        let operations = histogram.len();
        Summary {
            name: name.to_owned(),
            operations,
            errors,
            elapsed_s,
            ops_per_s: operations as f64 / elapsed_s,
            mb_per_s: bytes as f64 / elapsed_s / 1e6,
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            p9999_us: histogram.value_at_quantile(0.9999),
            max_us: histogram.max(),
            generator_cores: 0.0,
            generator_saturated: false,
            broker_cpu_us_per_op: None,
            broker_cores: None,
        }
    }

    pub fn table_header() -> String {
        format!(
            "{:<28} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}",
            "run",
            "ops/s",
            "MB/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max",
            "errors",
            "broker µs/op"
        )
    }

    pub fn table_row(&self) -> String {
        format!(
            "{:<28} {:>10.0} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}{}",
            self.name,
            self.ops_per_s,
            self.mb_per_s,
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.p9999_us),
            fmt_us(self.max_us),
            self.errors,
            match (self.broker_cpu_us_per_op, self.broker_cores) {
                (Some(us), Some(cores)) => format!("{us:.2} ({cores:.2}c)"),
                _ => "-".to_owned(),
            },
            if self.generator_saturated {
                "  (generator saturated a core: this may be its limit)"
            } else {
                ""
            }
        )
    }
}

pub fn fmt_us(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

/// The percentile distribution in HdrHistogram's `.hgrm` text format (values in ms).
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut count = 0u64;
    for step in histogram.iter_quantiles(5) {
        count += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let inverse = if quantile < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - quantile))
        } else {
            "inf".to_owned()
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {:>14}\n",
            step.value_iterated_to() as f64 / 1e3,
            quantile,
            count,
            inverse
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        histogram.mean() / 1e3,
        histogram.stdev() / 1e3,
        histogram.max() as f64 / 1e3,
        histogram.len()
    ));
    out
}

/// (percentile, latency µs) points for plots: 0 … 99.999.
pub fn percentile_points(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut points = Vec::new();
    for step in histogram.iter_quantiles(5) {
        let quantile = step.quantile_iterated_to();
        if quantile >= 0.99999 {
            break;
        }
        points.push((quantile * 100.0, step.value_iterated_to()));
    }
    points.push((99.999, histogram.value_at_quantile(0.99999)));
    points
}

/// The operations an open-loop schedule starts: operation `i` is intended at
/// `i × interval` from the start.
pub fn intended_start_us(i: u64, rate_per_s: f64) -> u64 {
    (i as f64 * 1e6 / rate_per_s) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each request after 1 ms of work, one at a time, except that it
    /// stalls for 200 ms at t = 500 ms. Returns the completion time of each request given when
    /// it was sent.
    fn simulate(send_times_us: &[u64]) -> Vec<u64> {
        let mut free_at = 0u64;
        send_times_us
            .iter()
            .map(|&sent| {
                let mut start = sent.max(free_at);
                if (500_000..700_000).contains(&start) {
                    start = 700_000; // the stall
                }
                free_at = start + 1_000;
                free_at
            })
            .collect()
    }

    #[test]
    fn an_open_loop_run_shows_a_stall_in_its_percentiles() {
        // Open loop at 500/s for 2 s, measured from the intended start (CO-safe).
        let intended: Vec<u64> = (0..1000).map(|i| intended_start_us(i, 500.0)).collect();
        let completed = simulate(&intended);
        let mut open = new_histogram();
        for (i, c) in intended.iter().zip(&completed) {
            record(&mut open, *i, *c);
        }
        // Every request scheduled during the 200 ms stall waited for it: ~10% of the run.
        assert!(
            open.value_at_quantile(0.95) >= 50_000,
            "p95 {}",
            open.value_at_quantile(0.95)
        );
        assert!(open.max() >= 190_000);

        // The same server measured from when each request was actually sent, in a closed loop
        // (send the next when the previous returns): the stall is one slow sample.
        let mut closed = new_histogram();
        let mut now = 0u64;
        for _ in 0..1000 {
            let completed = simulate_one(now);
            record(&mut closed, now, completed);
            now = completed;
        }
        assert!(
            closed.value_at_quantile(0.99) <= 1_100,
            "p99 {}",
            closed.value_at_quantile(0.99)
        );
        assert!(closed.max() >= 190_000, "the stall is still the max");
    }

    fn simulate_one(sent: u64) -> u64 {
        let start = if (500_000..700_000).contains(&sent) {
            700_000
        } else {
            sent
        };
        start + 1_000
    }

    #[test]
    fn summaries_and_hgrm_carry_the_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = Summary::new("x", &h, 0, 10_000_000, Duration::from_secs(2));
        assert_eq!(s.operations, 10_000);
        assert!((s.ops_per_s - 5_000.0).abs() < 1e-6);
        assert!((s.mb_per_s - 5.0).abs() < 1e-9);
        assert!((4_990..=5_010).contains(&s.p50_us));
        assert!(s.p999_us >= 9_980);
        let text = hgrm(&h);
        assert!(text.contains("Total count    =        10000"));
        let points = percentile_points(&h);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(fmt_us(1_500), "1.50ms");
    }
}
