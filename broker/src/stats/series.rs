//! The bound on a shard's series (the meter's and the stats items'), shared by both.

/// Distinct topics, (topic, group) pairs and request codes one shard keeps series for; past
/// it, new ones are counted under [`OTHER`] (clients choose names and codes, so the maps are
/// bounded).
pub const SERIES_MAX: usize = 4096;
/// The label counted past [`SERIES_MAX`].
pub const OTHER: &str = "__other__";
