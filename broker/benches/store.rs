//! Store benchmark: the store's append throughput and SYNC_FLUSH acknowledgement latency,
//! against raw O_DIRECT writes of the same sizes on the same directory, measured in the same
//! run, printed as ratios (this machine is shared and noisy: absolute figures mean little).
//!
//! `cargo bench -p thruster-broker --bench store`
//! Environment: `THRUSTER_BENCH_DIR` (default `target/bench-store`), `THRUSTER_BENCH_MIB`
//! (data per measurement, default 1024), `THRUSTER_BENCH_BODY_BYTES` (default 1024),
//! `THRUSTER_BENCH_PRODUCERS` (concurrent puts, default 64), `THRUSTER_BENCH_FLUSH_INTERVAL_MS`
//! (async flush interval, default RocketMQ's 500), `THRUSTER_BENCH_PROPERTIES` (`none` for bare
//! records; by default each message carries a Java producer's TAGS, UNIQ_KEY and WAIT),
//! `THRUSTER_BENCH_ONLY` (`store-async` or `store-sync`: one store run alone, for profiling).
//!
//! The async ratio is taken against raw writes into allocated blocks (the store allocates its
//! segments ahead of the writer), which are faster than writes that grow the file; both are
//! printed.
//!
//! Targets (issue 3): async-flush appends >= 90 % of raw bandwidth; sync-flush acknowledged
//! throughput >= 80 % of raw write+fdatasync at the store's own group-commit size.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use thruster_broker::runtime::{self, DirectFile, ReactorConfig};
use thruster_broker::store::commit_log::WRITES_IN_FLIGHT_MAX;
use thruster_broker::store::{FlushMode, MessageStore, PutMessage, PutStatus, StoreConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    dir: PathBuf,
    total_bytes: u64,
    body_bytes: usize,
    producers: usize,
    /// Give each message the properties a Java producer sends (a unique UNIQ_KEY, which the
    /// store indexes, TAGS and WAIT), as real traffic has; `THRUSTER_BENCH_PROPERTIES=none`
    /// stores bare records.
    client_properties: bool,
}

/// Properties as a Java producer sets them; the UNIQ_KEY is unique per message.
/// Built by hand, not with `format!`, which was 7 % of the reactor's time in this bench: the
/// bench's own work is charged to the store.
fn client_properties(message_number: u64) -> String {
    const PREFIX: &str = "TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}7F00000100002A9F0000000000";
    const SUFFIX: &str = "\u{2}WAIT\u{1}true\u{2}";
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut text = String::with_capacity(PREFIX.len() + 14 + SUFFIX.len());
    text.push_str(PREFIX);
    for shift in (0..14).rev() {
        text.push(char::from(
            HEX[(message_number >> (shift * 4)) as usize & 0xF],
        ));
    }
    text.push_str(SUFFIX);
    text
}

const CHUNK_BYTES: usize = 256 << 10;

/// Raw sequential O_DIRECT writes of `write_bytes`, `depth` in flight, into a new file, then
/// one fdatasync. Returns bytes/s. With `allocate` the file's blocks are allocated first,
/// untimed (as the async store's segments are, ahead of the writer); without, every write
/// grows the file.
async fn raw_stream(
    dir: &Path,
    total: u64,
    write_bytes: usize,
    depth: usize,
    allocate: bool,
) -> f64 {
    let path = dir.join("raw-stream");
    let _ = std::fs::remove_file(&path);
    let file = Rc::new(DirectFile::open(&path).await.unwrap());
    if allocate {
        file.allocate(total).await.unwrap();
        file.fdatasync().await.unwrap();
    }
    let buffer = Rc::new({
        let mut b = runtime::alloc_io_buffer_long_lived(write_bytes);
        b.as_bytes_mut().fill(0xA5);
        b
    });
    let next = Rc::new(std::cell::Cell::new(0u64));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..depth {
        let (file, buffer, next) = (file.clone(), buffer.clone(), next.clone());
        let (tx, rx) = runtime::bounded_channel::<()>(1);
        runtime::spawn_detached(async move {
            loop {
                let pos = next.get();
                if pos >= total {
                    break;
                }
                next.set(pos + write_bytes as u64);
                file.write_shared_at(buffer.clone(), pos).await.unwrap();
            }
            let _ = tx.send(()).await;
        });
        workers.push(rx);
    }
    for rx in workers {
        rx.recv().await;
    }
    file.fdatasync().await.unwrap();
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    rate
}

/// Raw durable writes of `write_bytes`, one at a time, into a prewritten file (as the sync
/// store does): write + fdatasync, or with `dsync` O_DSYNC writes (the store's own way).
/// Returns bytes/s and per-operation latency.
async fn raw_write_sync(
    dir: &Path,
    total: u64,
    write_bytes: usize,
    dsync: bool,
) -> (f64, Histogram<u64>) {
    let path = dir.join("raw-sync");
    let _ = std::fs::remove_file(&path);
    {
        let file = DirectFile::open(&path).await.unwrap();
        let zeros = Rc::new(runtime::alloc_io_buffer_long_lived(1 << 20));
        let mut pos = 0;
        while pos < total {
            file.write_shared_at(zeros.clone(), pos).await.unwrap();
            pos += 1 << 20;
        }
        file.fdatasync().await.unwrap();
    }
    let file = if dsync {
        DirectFile::open_dsync(&path).await.unwrap()
    } else {
        DirectFile::open(&path).await.unwrap()
    };
    let buffer = Rc::new({
        let mut b = runtime::alloc_io_buffer_long_lived(write_bytes);
        b.as_bytes_mut().fill(0x5A);
        b
    });
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let started = Instant::now();
    let mut pos = 0;
    while pos + write_bytes as u64 <= total {
        let t = Instant::now();
        file.write_shared_at(buffer.clone(), pos).await.unwrap();
        file.fdatasync().await.unwrap();
        histogram.record(t.elapsed().as_micros() as u64).unwrap();
        pos += write_bytes as u64;
    }
    let rate = pos as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    (rate, histogram)
}

struct StoreRun {
    bytes_per_sec: f64,
    latency_us: Histogram<u64>,
    mean_flush_bytes: f64,
    window_waits: u64,
    segment_waits: u64,
}

async fn store_run(s: &Settings, mode: FlushMode) -> StoreRun {
    let root = s.dir.join(format!("store-{mode:?}"));
    let _ = std::fs::remove_dir_all(&root);
    let config = StoreConfig {
        chunk_bytes: CHUNK_BYTES,
        memory_window_bytes: 64 << 20,
        message_index_enable: true,
        flush_interval_ms: env_u64("THRUSTER_BENCH_FLUSH_INTERVAL_MS", 500),
        ..StoreConfig::new(&root).with_flush_mode(mode)
    };
    let store = MessageStore::open(config).await.unwrap();
    let body = Bytes::from(vec![b'x'; s.body_bytes]);
    let record_bytes = store_record_bytes(s);
    let with_properties = s.client_properties;
    let store_host = "127.0.0.1:10911".parse().unwrap();
    let count = s.total_bytes / record_bytes as u64;
    let next = Rc::new(std::cell::Cell::new(0u64));
    let latency = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let before = store.stats();
    let started = Instant::now();
    let mut workers = Vec::new();
    for producer in 0..s.producers {
        let (store, body, next, latency) =
            (store.clone(), body.clone(), next.clone(), latency.clone());
        let (tx, rx) = runtime::bounded_channel::<()>(1);
        runtime::spawn_detached(async move {
            loop {
                let i = next.get();
                if i >= count {
                    break;
                }
                next.set(i + 1);
                let mut message = PutMessage::new(
                    "BenchTopic",
                    (producer % 8) as i32,
                    body.clone(),
                    store_host,
                );
                if with_properties {
                    message.properties = client_properties(i);
                }
                let t = Instant::now();
                let result = store.put(message).await;
                assert_eq!(result.status, PutStatus::Ok);
                latency
                    .borrow_mut()
                    .record(t.elapsed().as_micros().max(1) as u64)
                    .unwrap();
            }
            let _ = tx.send(()).await;
        });
        workers.push(rx);
    }
    for rx in workers {
        rx.recv().await;
    }
    store.flush_now().await.unwrap();
    let elapsed = started.elapsed();
    let after = store.stats();
    store.shutdown().await.unwrap();
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
    let flushes = (after.flushes - before.flushes).max(1);
    let latency_us = latency.borrow().clone();
    StoreRun {
        bytes_per_sec: (count * record_bytes as u64) as f64 / elapsed.as_secs_f64(),
        latency_us,
        mean_flush_bytes: (after.flushed_bytes - before.flushed_bytes) as f64 / flushes as f64,
        window_waits: after.window_waits - before.window_waits,
        segment_waits: after.segment_waits - before.segment_waits,
    }
}

/// Stored size of one bench record (topic "BenchTopic", IPv4 hosts).
fn store_record_bytes(s: &Settings) -> usize {
    let properties = if s.client_properties {
        client_properties(0).len()
    } else {
        0
    };
    91 + s.body_bytes + "BenchTopic".len() + properties
}

fn mb(bytes_per_sec: f64) -> f64 {
    bytes_per_sec / 1e6
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

fn main() {
    let settings = Settings {
        dir: PathBuf::from(
            std::env::var("THRUSTER_BENCH_DIR").unwrap_or_else(|_| "target/bench-store".into()),
        ),
        total_bytes: env_u64("THRUSTER_BENCH_MIB", 1024) << 20,
        body_bytes: env_u64("THRUSTER_BENCH_BODY_BYTES", 1024) as usize,
        producers: env_u64("THRUSTER_BENCH_PRODUCERS", 64) as usize,
        client_properties: std::env::var("THRUSTER_BENCH_PROPERTIES").as_deref() != Ok("none"),
    };
    std::fs::create_dir_all(&settings.dir).unwrap();
    let reactor = ReactorConfig {
        io_memory_bytes: 4 << 20,
        cpu: Some(0),
        ..ReactorConfig::new("bench-store")
    };
    runtime::run_reactor(reactor, move || bench(settings)).unwrap();
}

async fn bench(s: Settings) {
    {
        println!(
            "store benchmark: {} MiB per run, {} B bodies ({} B records, {}), {} producers, dir {}",
            s.total_bytes >> 20,
            s.body_bytes,
            store_record_bytes(&s),
            if s.client_properties {
                "Java producer properties, indexed"
            } else {
                "no properties"
            },
            s.producers,
            s.dir.display()
        );
        // Async: raw streaming writes of the store's chunk size vs store appends. The ratio is
        // taken against the faster raw pattern (writes into allocated blocks), which is the
        // store's own pattern; the file-growing figure is printed for comparison.
        let only = std::env::var("THRUSTER_BENCH_ONLY").unwrap_or_default();
        // Profiling aid: one store run alone.
        if let Some(mode) = match only.as_str() {
            "store-async" => Some(FlushMode::Async),
            "store-sync" => Some(FlushMode::Sync),
            _ => None,
        } {
            let run = store_run(&s, mode).await;
            println!(
                "store {mode:?}: {:8.1} MB/s   mean flush {:.0} B   window waits {}   segment waits {}   latency {}",
                mb(run.bytes_per_sec),
                run.mean_flush_bytes,
                run.window_waits,
                run.segment_waits,
                percentiles(&run.latency_us)
            );
            return;
        }
        let raw_growing = raw_stream(
            &s.dir,
            s.total_bytes,
            CHUNK_BYTES,
            WRITES_IN_FLIGHT_MAX,
            false,
        )
        .await;
        let raw = raw_stream(
            &s.dir,
            s.total_bytes,
            CHUNK_BYTES,
            WRITES_IN_FLIGHT_MAX,
            true,
        )
        .await;
        let store_async = store_run(&s, FlushMode::Async).await;
        println!(
            "raw O_DIRECT {} KiB writes, {} in flight: {:8.1} MB/s into allocated blocks ({:.1} MB/s growing the file)",
            CHUNK_BYTES >> 10,
            WRITES_IN_FLIGHT_MAX,
            mb(raw),
            mb(raw_growing)
        );
        println!(
            "store ASYNC_FLUSH appends:           {:8.1} MB/s   ratio {:.2} (target >= 0.90)   put latency {}",
            mb(store_async.bytes_per_sec),
            store_async.bytes_per_sec / raw,
            percentiles(&store_async.latency_us)
        );
        // Sync: store acked throughput vs raw write+fdatasync at the store's group-commit size.
        let sync_total = s.total_bytes / 4;
        let sync_settings = Settings {
            total_bytes: sync_total,
            dir: s.dir.clone(),
            ..s
        };
        let store_sync = store_run(&sync_settings, FlushMode::Sync).await;
        let write_bytes = ((store_sync.mean_flush_bytes as usize).div_ceil(4096) * 4096).max(4096);
        // The ratio is taken against the faster raw way (O_DSYNC writes, the store's own).
        let (raw_fdatasync, fdatasync_latency) =
            raw_write_sync(&sync_settings.dir, sync_total, write_bytes, false).await;
        let (raw_sync, raw_latency) =
            raw_write_sync(&sync_settings.dir, sync_total, write_bytes, true).await;
        println!(
            "raw O_DSYNC writes of {} KiB (the store's mean group commit): {:8.1} MB/s   {}",
            write_bytes >> 10,
            mb(raw_sync),
            percentiles(&raw_latency)
        );
        println!(
            "raw write+fdatasync of {} KiB:                                {:8.1} MB/s   {}",
            write_bytes >> 10,
            mb(raw_fdatasync),
            percentiles(&fdatasync_latency)
        );
        println!(
            "store SYNC_FLUSH acked:              {:8.1} MB/s   ratio {:.2} (target >= 0.80)   ack latency {}",
            mb(store_sync.bytes_per_sec),
            store_sync.bytes_per_sec / raw_sync,
            percentiles(&store_sync.latency_us)
        );
        runtime::sleep(Duration::from_millis(1)).await;
    }
}
