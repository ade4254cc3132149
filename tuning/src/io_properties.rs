//! `io-properties.json`: what `thruster-tune probe` measured on a store's file system, and the
//! store settings derived from it (the broker reads the file at start).
//!
//! Layout (one JSON object, written by [`IoProperties::write`]):
//! ```json
//! { "version": 1, "dir": "/data/store", "measured_at_ms": 1764900000000, "budget_s": 60.0,
//!   "figures": [ { "kind": "seq_write", "block_bytes": 262144, "queue_depth": 4,
//!                  "ops_per_s": 1200.0, "mb_per_s": 314.5,
//!                  "p50_us": 3100, "p99_us": 5200, "p999_us": 9000, "max_us": 12000 }, … ] }
//! ```
//! `kind` is one of [`Kind`]'s snake_case names. Unknown fields are ignored, so later versions
//! can add figures; a different `version` is refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "io-properties.json";
pub const FORMAT_VERSION: u32 = 1;

/// Block sizes of the sequential-write sweep, candidates for the store's `chunk_bytes`.
pub const CHUNK_CANDIDATES_BYTES: [usize; 6] =
    [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20];
/// A block size or queue depth "reaches" the device's bandwidth at this fraction of the best.
const SATURATION_FRACTION: f64 = 0.9;
/// Writes in flight never go below today's default: the store bench found that the reactor
/// reaps completions late while it is busy, so the pipeline needs about four times the depth
/// at which raw writes saturate the device (8 there), and fewer never helped.
pub const WRITES_IN_FLIGHT_MIN: usize = 32;
pub const WRITES_IN_FLIGHT_MAX: usize = 128;
/// Reaping-delay factor between the device's saturating depth and the store's pipeline.
const WRITES_IN_FLIGHT_PER_DEVICE_DEPTH: usize = 4;
/// A group of writes "costs about one sync" while its O_DSYNC write takes at most this many
/// times the cheapest block's median.
const GROUP_COMMIT_COST_FACTOR: u64 = 2;

/// What a figure measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// O_DIRECT sequential writes into an allocated file (the CommitLog's write-out).
    SeqWrite,
    /// O_DIRECT | O_DSYNC writes into pre-written blocks (SYNC_FLUSH group commits).
    DsyncPrewritten,
    /// O_DIRECT write + fdatasync into pre-written blocks.
    FdatasyncPrewritten,
    /// O_DIRECT write + fdatasync appending to a growing file (no pre-written segments).
    FdatasyncGrowing,
    /// O_DIRECT random reads (cold consumers).
    RandomRead,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SeqWrite => "seq_write",
            Kind::DsyncPrewritten => "dsync_prewritten",
            Kind::FdatasyncPrewritten => "fdatasync_prewritten",
            Kind::FdatasyncGrowing => "fdatasync_growing",
            Kind::RandomRead => "random_read",
        }
    }
}

/// One measurement: `queue_depth` operations of `block_bytes` in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub kind: Kind,
    pub block_bytes: usize,
    pub queue_depth: usize,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Figure {
    /// A figure whose every percentile is `p50_us` (hand-written files, tests).
    pub fn flat(
        kind: Kind,
        block_bytes: usize,
        queue_depth: usize,
        mb_per_s: f64,
        p50_us: u64,
    ) -> Figure {
        Figure {
            kind,
            block_bytes,
            queue_depth,
            ops_per_s: mb_per_s * 1e6 / block_bytes as f64,
            mb_per_s,
            p50_us,
            p99_us: p50_us,
            p999_us: p50_us,
            max_us: p50_us,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoProperties {
    pub version: u32,
    /// The directory probed.
    pub dir: String,
    pub measured_at_ms: u64,
    pub budget_s: f64,
    pub figures: Vec<Figure>,
}

/// The store settings taken from the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIoSettings {
    /// Smallest sequential block that reaches the device's bandwidth.
    pub chunk_bytes: usize,
    /// Four times the queue depth at which that block reaches it, within
    /// [`WRITES_IN_FLIGHT_MIN`, `WRITES_IN_FLIGHT_MAX`].
    pub writes_in_flight_max: usize,
    /// Largest O_DSYNC write that costs about what the smallest one does: under SYNC_FLUSH a
    /// smaller group lets the puts already queued join it before the flush (0: flush at once).
    pub group_commit_bytes: u64,
}

impl IoProperties {
    pub fn path_in(store_dir: &Path) -> std::path::PathBuf {
        store_dir.join(FILE_NAME)
    }

    /// Reads `<store_dir>/io-properties.json`: `Ok(None)` when there is none.
    pub fn read(store_dir: &Path) -> Result<Option<IoProperties>, String> {
        let path = IoProperties::path_in(store_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let properties: IoProperties = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not an io-properties file: {e}", path.display()))?;
        if properties.version != FORMAT_VERSION {
            return Err(format!(
                "{}: version {} (this build reads {FORMAT_VERSION}); rerun `thruster-tune probe`",
                path.display(),
                properties.version
            ));
        }
        Ok(Some(properties))
    }

    /// Writes `<store_dir>/io-properties.json` (through a temporary file and a rename).
    pub fn write(&self, store_dir: &Path) -> Result<(), String> {
        let path = IoProperties::path_in(store_dir);
        let tmp = store_dir.join(format!("{FILE_NAME}.tmp"));
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn of(&self, kind: Kind) -> impl Iterator<Item = &Figure> {
        self.figures.iter().filter(move |f| f.kind == kind)
    }

    /// The store settings these figures call for; an error when the figures the derivation
    /// needs are missing.
    pub fn store_settings(&self) -> Result<StoreIoSettings, String> {
        let chunk_bytes = chunk_bytes(&self.figures)
            .ok_or("no sequential-write figures of a chunk-sized block")?;
        let depth = saturating_depth(&self.figures, chunk_bytes)
            .ok_or("no sequential-write figures of the chosen block")?;
        let writes_in_flight_max = (depth * WRITES_IN_FLIGHT_PER_DEVICE_DEPTH)
            .clamp(WRITES_IN_FLIGHT_MIN, WRITES_IN_FLIGHT_MAX);
        let group_commit_bytes = group_commit_bytes(self.of(Kind::DsyncPrewritten));
        Ok(StoreIoSettings {
            chunk_bytes,
            writes_in_flight_max,
            group_commit_bytes,
        })
    }
}

/// The smallest chunk candidate whose sequential bandwidth (at the sweep's queue depth, the
/// deepest depth every candidate was measured at) reaches [`SATURATION_FRACTION`] of the best.
pub fn chunk_bytes(figures: &[Figure]) -> Option<usize> {
    let seq: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.kind == Kind::SeqWrite && CHUNK_CANDIDATES_BYTES.contains(&f.block_bytes))
        .collect();
    // The sweep's depth: the one the most block sizes were measured at.
    let depth = seq
        .iter()
        .map(|f| f.queue_depth)
        .max_by_key(|&d| (seq.iter().filter(|f| f.queue_depth == d).count(), d))?;
    let sweep: Vec<&&Figure> = seq.iter().filter(|f| f.queue_depth == depth).collect();
    let best = sweep.iter().map(|f| f.mb_per_s).fold(0.0, f64::max);
    sweep
        .iter()
        .filter(|f| f.mb_per_s >= best * SATURATION_FRACTION)
        .map(|f| f.block_bytes)
        .min()
}

/// The smallest queue depth at which `block_bytes` writes reach [`SATURATION_FRACTION`] of
/// their best bandwidth.
fn saturating_depth(figures: &[Figure], block_bytes: usize) -> Option<usize> {
    let runs: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.kind == Kind::SeqWrite && f.block_bytes == block_bytes)
        .collect();
    let best = runs.iter().map(|f| f.mb_per_s).fold(0.0, f64::max);
    runs.iter()
        .filter(|f| f.mb_per_s >= best * SATURATION_FRACTION)
        .map(|f| f.queue_depth)
        .min()
}

fn group_commit_bytes<'a>(dsync: impl Iterator<Item = &'a Figure>) -> u64 {
    let runs: Vec<&Figure> = dsync.filter(|f| f.queue_depth == 1).collect();
    // The cheapest median, not the smallest block's: short runs are noisy.
    let Some(cheapest_us) = runs.iter().map(|f| f.p50_us.max(1)).min() else {
        return 0;
    };
    runs.iter()
        .filter(|f| f.p50_us <= cheapest_us * GROUP_COMMIT_COST_FACTOR)
        .map(|f| f.block_bytes as u64)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(kind: Kind, block: usize, depth: usize, mb_per_s: f64, p50_us: u64) -> Figure {
        Figure::flat(kind, block, depth, mb_per_s, p50_us)
    }

    fn properties(figures: Vec<Figure>) -> IoProperties {
        IoProperties {
            version: FORMAT_VERSION,
            dir: "/store".into(),
            measured_at_ms: 1,
            budget_s: 1.0,
            figures,
        }
    }

    #[test]
    fn settings_follow_the_knees_of_the_curves() {
        let mut figures = vec![];
        for (block, mb) in [
            (64 << 10, 100.0),
            (128 << 10, 200.0),
            (256 << 10, 380.0),
            (512 << 10, 400.0),
        ] {
            figures.push(figure(Kind::SeqWrite, block, 4, mb, 100));
        }
        for (depth, mb) in [(1, 100.0), (2, 200.0), (8, 395.0), (16, 400.0), (32, 401.0)] {
            figures.push(figure(Kind::SeqWrite, 256 << 10, depth, mb, 100));
        }
        for (block, p50) in [
            (4 << 10, 500),
            (16 << 10, 600),
            (64 << 10, 1000),
            (256 << 10, 1500),
        ] {
            figures.push(figure(Kind::DsyncPrewritten, block, 1, 0.0, p50));
        }
        let settings = properties(figures).store_settings().unwrap();
        assert_eq!(
            settings,
            StoreIoSettings {
                chunk_bytes: 256 << 10,
                writes_in_flight_max: 32,
                group_commit_bytes: 64 << 10,
            }
        );
    }

    #[test]
    fn a_deep_device_gets_more_writes_in_flight_and_no_dsync_figures_flush_at_once() {
        let mut figures = vec![figure(Kind::SeqWrite, 1 << 20, 4, 100.0, 10)];
        for (depth, mb) in [(1, 100.0), (16, 900.0), (32, 1100.0), (64, 1100.0)] {
            figures.push(figure(Kind::SeqWrite, 1 << 20, depth, mb, 10));
        }
        let settings = properties(figures).store_settings().unwrap();
        assert_eq!(settings.chunk_bytes, 1 << 20);
        assert_eq!(settings.writes_in_flight_max, 128);
        assert_eq!(settings.group_commit_bytes, 0);
    }

    #[test]
    fn missing_figures_are_an_error_and_files_round_trip() {
        assert!(properties(vec![]).store_settings().is_err());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IoProperties::read(dir.path()).unwrap(), None);
        let written = properties(vec![figure(Kind::RandomRead, 4096, 1, 10.0, 80)]);
        written.write(dir.path()).unwrap();
        assert_eq!(IoProperties::read(dir.path()).unwrap(), Some(written));
        std::fs::write(IoProperties::path_in(dir.path()), "{\"version\": 1}").unwrap();
        let error = IoProperties::read(dir.path()).unwrap_err();
        assert!(error.contains("not an io-properties file"), "{error}");
    }
}
