//! A fixed-bucket histogram of latencies (µs) or sizes (bytes): plain data (`Copy`), so a
//! shard counts into it with no atomics and hands copies to whoever aggregates (runtime info,
//! the metrics endpoint).

/// Upper bounds of the buckets, in the histogram's unit (µs for latencies, bytes for sizes);
/// one more bucket holds everything above.
pub const BUCKET_BOUNDS: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000,
];
pub const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub counts: [u64; BUCKETS],
    pub sum: u64,
    pub max: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: u64) {
        let bucket = BUCKET_BOUNDS.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// The upper bound of the bucket holding the `quantile` (0..1) observation: an upper
    /// estimate; the largest observation for the top bucket; 0 when empty.
    pub fn quantile_upper(&self, quantile: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return BUCKET_BOUNDS
                    .get(bucket)
                    .map_or(self.max, |&bound| bound.min(self.max));
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_quantiles_bound_them() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_upper(0.99), 0);
        for v in [10, 50, 51, 900, 40_000_000] {
            h.observe(v);
        }
        assert_eq!(h.counts[0], 2, "<= 50");
        assert_eq!(h.counts[1], 1, "(50, 100]");
        assert_eq!(h.counts[4], 1, "(500, 1000]");
        assert_eq!(h.counts[BUCKETS - 1], 1, "above every bound");
        assert_eq!(h.count(), 5);
        assert_eq!(h.max, 40_000_000);
        assert_eq!(h.quantile_upper(0.5), 100);
        assert_eq!(h.quantile_upper(0.8), 1_000);
        assert_eq!(h.quantile_upper(1.0), 40_000_000);
        let mut sum = Histogram::default();
        sum.add(&h);
        sum.add(&h);
        assert_eq!(sum.count(), 10);
        assert_eq!(sum.sum, 2 * h.sum);
    }
}
