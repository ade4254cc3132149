//! Store benchmark: the store's append throughput and SYNC_FLUSH acknowledgement latency,
//! against raw O_DIRECT writes of the same sizes on the same directory, measured in the same
//! run, printed as ratios (this machine is shared and noisy: absolute figures mean little).
//!
//! `cargo bench -p thruster-store --bench store`
//! Environment: `THRUSTER_BENCH_DIR` (default `target/bench-store`), `THRUSTER_BENCH_MIB`
//! (data per measurement, default 1024), `THRUSTER_BENCH_BODY_BYTES` (default 1024),
//! `THRUSTER_BENCH_PRODUCERS` (concurrent puts, default 64), `THRUSTER_BENCH_FLUSH_INTERVAL_MS`
//! (async flush interval, default RocketMQ's 500), `THRUSTER_BENCH_PROPERTIES` (`none` for bare
//! records; by default each message carries a Java producer's TAGS, UNIQ_KEY and WAIT),
//! `THRUSTER_BENCH_ONLY` (`store-async` or `store-sync`: one store run alone, for profiling),
//! `THRUSTER_BENCH_SHARDS` (default 1: one store per reactor, each pinned to a core, all
//! measured together, raw writers likewise; the data per run is split between them).
//!
//! The async ratio is taken against raw writes into allocated blocks (the store allocates its
//! segments ahead of the writer), which are faster than writes that grow the file, out of a
//! memory window's worth of buffers (as the store's chunks are), which is slower than writing
//! one cache-hot buffer again and again; all three are printed.
//!
//! Targets (issue 3): async-flush appends >= 90 % of raw bandwidth; sync-flush acknowledged
//! throughput >= 80 % of raw durable writes (the faster of O_DSYNC and write+fdatasync) at the
//! store's own group-commit size.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use thruster_runtime::{self as runtime, DirectFile, IoBuffer, ReactorConfig};
use thruster_store::commit_log::WRITES_IN_FLIGHT_MAX;
use thruster_store::{FlushMode, MessageStore, PutMessage, PutStatus, StoreConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Settings {
    /// This shard's own directory.
    dir: PathBuf,
    shard: u8,
    shards: u8,
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
/// The store's memory window (its default), which is also the raw writers' buffer pool.
const MEMORY_WINDOW_BYTES: usize = 64 << 20;

/// Raw sequential O_DIRECT writes of `write_bytes`, `depth` in flight, into a new file, then
/// one fdatasync. With `allocate` the file's blocks are allocated first, untimed (as the async
/// store's segments are, ahead of the writer); without, every write grows the file. The writes
/// go out of `pool_bytes` of buffers in turn: the store writes its chunks from a memory window
/// of distinct buffers, and one buffer written again and again stays in the CPU caches, which
/// made raw writes 15-25 % faster here than from a window's worth of memory.
async fn raw_stream(
    dir: &Path,
    total: u64,
    write_bytes: usize,
    depth: usize,
    allocate: bool,
    pool_bytes: usize,
) -> Measured {
    let path = dir.join("raw-stream");
    let _ = std::fs::remove_file(&path);
    let file = Rc::new(DirectFile::open(&path).await.unwrap());
    if allocate {
        file.allocate(total).await.unwrap();
        file.fdatasync().await.unwrap();
    }
    let buffers: Rc<Vec<Rc<IoBuffer>>> = Rc::new(
        (0..pool_bytes.div_ceil(write_bytes))
            .map(|_| {
                let mut b = runtime::alloc_io_buffer_long_lived(write_bytes);
                b.as_bytes_mut().fill(0xA5);
                Rc::new(b)
            })
            .collect(),
    );
    let next = Rc::new(std::cell::Cell::new(0u64));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..depth {
        let (file, buffers, next) = (file.clone(), buffers.clone(), next.clone());
        let (tx, rx) = runtime::bounded_channel::<()>(1);
        runtime::spawn_detached(async move {
            loop {
                let pos = next.get();
                if pos >= total {
                    break;
                }
                next.set(pos + write_bytes as u64);
                let buffer = buffers[(pos / write_bytes as u64) as usize % buffers.len()].clone();
                file.write_shared_at(buffer, pos).await.unwrap();
            }
            let _ = tx.send(()).await;
        });
        workers.push(rx);
    }
    for rx in workers {
        rx.recv().await;
    }
    file.fdatasync().await.unwrap();
    let measured = Measured {
        bytes: total,
        elapsed: started.elapsed(),
    };
    drop(file);
    let _ = std::fs::remove_file(&path);
    measured
}

/// Raw durable writes of `write_bytes`, one at a time, into a prewritten file (as the sync
/// store does): write + fdatasync, or with `dsync` O_DSYNC writes (the store's own way).
/// Returns what was written and per-operation latency.
async fn raw_write_sync(
    dir: &Path,
    total: u64,
    write_bytes: usize,
    dsync: bool,
) -> (Measured, Histogram<u64>) {
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
    let measured = Measured {
        bytes: pos,
        elapsed: started.elapsed(),
    };
    drop(file);
    let _ = std::fs::remove_file(&path);
    (measured, histogram)
}

struct StoreRun {
    measured: Measured,
    latency_us: Histogram<u64>,
    mean_flush_bytes: f64,
    window_waits: u64,
    segment_waits: u64,
    chunk_writes: u64,
    chunk_write_us: u64,
}

async fn store_run(s: &Settings, mode: FlushMode) -> StoreRun {
    let root = s.dir.join(format!("store-{mode:?}"));
    let _ = std::fs::remove_dir_all(&root);
    let config = StoreConfig {
        chunk_bytes: CHUNK_BYTES,
        memory_window_bytes: MEMORY_WINDOW_BYTES,
        message_index_enable: true,
        flush_interval_ms: env_u64("THRUSTER_BENCH_FLUSH_INTERVAL_MS", 500),
        shard_id: s.shard,
        shard_count: s.shards,
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
        measured: Measured {
            bytes: count * record_bytes as u64,
            elapsed,
        },
        latency_us,
        mean_flush_bytes: (after.flushed_bytes - before.flushed_bytes) as f64 / flushes as f64,
        window_waits: after.window_waits - before.window_waits,
        segment_waits: after.segment_waits - before.segment_waits,
        chunk_writes: after.chunk_writes - before.chunk_writes,
        chunk_write_us: after.chunk_write_us - before.chunk_write_us,
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

/// Bytes written in a measured time.
#[derive(Clone, Copy)]
struct Measured {
    bytes: u64,
    elapsed: Duration,
}

/// All shards together: every phase starts on all shards at once (a barrier), so the slowest
/// shard's time is the phase's time.
fn rate(all: impl IntoIterator<Item = Measured>) -> f64 {
    let (bytes, elapsed) = all.into_iter().fold((0, Duration::ZERO), |(b, e), m| {
        (b + m.bytes, e.max(m.elapsed))
    });
    bytes as f64 / elapsed.as_secs_f64()
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
    let shards = env_u64("THRUSTER_BENCH_SHARDS", 1).clamp(1, 64) as u8;
    let dir = PathBuf::from(
        std::env::var("THRUSTER_BENCH_DIR").unwrap_or_else(|_| "target/bench-store".into()),
    );
    let settings = Settings {
        dir: dir.clone(),
        shard: 0,
        shards,
        total_bytes: (env_u64("THRUSTER_BENCH_MIB", 1024) << 20) / u64::from(shards),
        body_bytes: env_u64("THRUSTER_BENCH_BODY_BYTES", 1024) as usize,
        producers: env_u64("THRUSTER_BENCH_PRODUCERS", 64) as usize,
        client_properties: std::env::var("THRUSTER_BENCH_PROPERTIES").as_deref() != Ok("none"),
    };
    println!(
        "store benchmark: {} MiB per run over {shards} shard(s) (a reactor each, pinned), {} B bodies ({} B records, {}), {} producers per shard, dir {}",
        (settings.total_bytes * u64::from(shards)) >> 20,
        settings.body_bytes,
        store_record_bytes(&settings),
        if settings.client_properties {
            "Java producer properties, indexed"
        } else {
            "no properties"
        },
        settings.producers,
        dir.display()
    );
    let only = std::env::var("THRUSTER_BENCH_ONLY").unwrap_or_default();
    let barrier = Arc::new(Barrier::new(usize::from(shards)));
    let reactors: Vec<_> = (0..shards)
        .map(|shard| {
            let s = Settings {
                dir: dir.join(format!("shard-{shard}")),
                shard,
                ..settings.clone()
            };
            std::fs::create_dir_all(&s.dir).unwrap();
            let (barrier, only) = (barrier.clone(), only.clone());
            let reactor = ReactorConfig {
                // Two reactors fit an 8 MiB RLIMIT_MEMLOCK.
                io_memory_bytes: 2 << 20,
                cpu: Some(usize::from(shard) % cpus()),
                ..ReactorConfig::new(format!("bench-store-{shard}"))
            };
            runtime::spawn_reactor(reactor, move || shard_bench(s, barrier, only)).unwrap()
        })
        .collect();
    let results: Vec<ShardResults> = reactors.into_iter().map(|r| r.join().unwrap()).collect();
    report(&results, &only);
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One shard's measurements, phase by phase.
#[derive(Default)]
struct ShardResults {
    raw_growing: Option<Measured>,
    raw: Option<Measured>,
    raw_one_buffer: Option<Measured>,
    store_async: Option<StoreRun>,
    store_sync: Option<StoreRun>,
    /// The raw durable write size: this shard's mean group commit.
    sync_write_bytes: usize,
    raw_fdatasync: Option<(Measured, Histogram<u64>)>,
    raw_dsync: Option<(Measured, Histogram<u64>)>,
}

/// Every phase starts on all shards together.
async fn shard_bench(s: Settings, barrier: Arc<Barrier>, only: String) -> ShardResults {
    let mut results = ShardResults::default();
    // Profiling aid: one store run alone.
    match only.as_str() {
        "store-async" => {
            results.store_async = Some(store_run(&s, FlushMode::Async).await);
            return results;
        }
        "store-sync" => {
            results.store_sync = Some(store_run(&s, FlushMode::Sync).await);
            return results;
        }
        _ => {}
    }
    // Async: raw streaming writes of the store's chunk size vs store appends.
    let (total, depth) = (s.total_bytes, WRITES_IN_FLIGHT_MAX);
    barrier.wait();
    results.raw_growing = Some(
        raw_stream(
            &s.dir,
            total,
            CHUNK_BYTES,
            depth,
            false,
            MEMORY_WINDOW_BYTES,
        )
        .await,
    );
    barrier.wait();
    results.raw_one_buffer =
        Some(raw_stream(&s.dir, total, CHUNK_BYTES, depth, true, CHUNK_BYTES).await);
    barrier.wait();
    results.raw =
        Some(raw_stream(&s.dir, total, CHUNK_BYTES, depth, true, MEMORY_WINDOW_BYTES).await);
    barrier.wait();
    results.store_async = Some(store_run(&s, FlushMode::Async).await);
    // Sync: store acked throughput vs raw durable writes at the store's group-commit size.
    let sync = Settings {
        total_bytes: s.total_bytes / 4,
        ..s.clone()
    };
    barrier.wait();
    let store_sync = store_run(&sync, FlushMode::Sync).await;
    results.sync_write_bytes =
        ((store_sync.mean_flush_bytes as usize).div_ceil(4096) * 4096).max(4096);
    results.store_sync = Some(store_sync);
    barrier.wait();
    results.raw_fdatasync =
        Some(raw_write_sync(&sync.dir, sync.total_bytes, results.sync_write_bytes, false).await);
    barrier.wait();
    results.raw_dsync =
        Some(raw_write_sync(&sync.dir, sync.total_bytes, results.sync_write_bytes, true).await);
    results
}

fn merged<'a>(all: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for h in all {
        merged.add(h).unwrap();
    }
    merged
}

fn report(results: &[ShardResults], only: &str) {
    let store_async: Vec<&StoreRun> = results
        .iter()
        .filter_map(|r| r.store_async.as_ref())
        .collect();
    let store_sync: Vec<&StoreRun> = results
        .iter()
        .filter_map(|r| r.store_sync.as_ref())
        .collect();
    let store_line = |runs: &[&StoreRun]| {
        format!(
            "{:8.1} MB/s   mean flush {:.0} B   window waits {}   segment waits {}   chunk writes {} (mean {:.0} µs to completion)",
            mb(rate(runs.iter().map(|r| r.measured))),
            runs.iter().map(|r| r.mean_flush_bytes).sum::<f64>() / runs.len() as f64,
            runs.iter().map(|r| r.window_waits).sum::<u64>(),
            runs.iter().map(|r| r.segment_waits).sum::<u64>(),
            runs.iter().map(|r| r.chunk_writes).sum::<u64>(),
            runs.iter().map(|r| r.chunk_write_us).sum::<u64>() as f64
                / runs.iter().map(|r| r.chunk_writes).sum::<u64>().max(1) as f64,
        )
    };
    if !only.is_empty() {
        for (mode, runs) in [("Async", &store_async), ("Sync", &store_sync)] {
            if !runs.is_empty() {
                println!(
                    "store {mode}: {}   latency {}",
                    store_line(runs),
                    percentiles(&merged(runs.iter().map(|r| &r.latency_us)))
                );
            }
        }
        return;
    }
    // The async ratio is taken against the faster raw pattern (writes into allocated blocks),
    // which is the store's own; the file-growing figure is printed for comparison.
    let raw = rate(results.iter().filter_map(|r| r.raw));
    let raw_growing = rate(results.iter().filter_map(|r| r.raw_growing));
    let raw_one_buffer = rate(results.iter().filter_map(|r| r.raw_one_buffer));
    let store_async_rate = rate(store_async.iter().map(|r| r.measured));
    println!(
        "raw O_DIRECT {} KiB writes, {} in flight per shard, from {} MiB of buffers: {:8.1} MB/s into allocated blocks ({:.1} MB/s growing the file; {:.1} MB/s from one cache-hot buffer)",
        CHUNK_BYTES >> 10,
        WRITES_IN_FLIGHT_MAX,
        MEMORY_WINDOW_BYTES >> 20,
        mb(raw),
        mb(raw_growing),
        mb(raw_one_buffer)
    );
    println!(
        "store ASYNC_FLUSH appends: {}   ratio {:.2} (target >= 0.90)   put latency {}",
        store_line(&store_async),
        store_async_rate / raw,
        percentiles(&merged(store_async.iter().map(|r| &r.latency_us)))
    );
    // The sync ratio is taken against the faster raw way: O_DSYNC writes (the store's own)
    // usually, write + fdatasync on some runs.
    let raw_dsync = rate(
        results
            .iter()
            .filter_map(|r| r.raw_dsync.as_ref().map(|(m, _)| *m)),
    );
    let raw_fdatasync = rate(
        results
            .iter()
            .filter_map(|r| r.raw_fdatasync.as_ref().map(|(m, _)| *m)),
    );
    let sizes: Vec<String> = results
        .iter()
        .map(|r| format!("{}", r.sync_write_bytes >> 10))
        .collect();
    println!(
        "raw O_DSYNC writes of {} KiB (the store's mean group commit per shard): {:8.1} MB/s   {}",
        sizes.join("/"),
        mb(raw_dsync),
        percentiles(&merged(
            results
                .iter()
                .filter_map(|r| r.raw_dsync.as_ref().map(|(_, h)| h))
        ))
    );
    println!(
        "raw write+fdatasync, same sizes: {:8.1} MB/s   {}",
        mb(raw_fdatasync),
        percentiles(&merged(
            results
                .iter()
                .filter_map(|r| r.raw_fdatasync.as_ref().map(|(_, h)| h))
        ))
    );
    println!(
        "store SYNC_FLUSH acked: {}   ratio {:.2} (target >= 0.80)   ack latency {}",
        store_line(&store_sync),
        rate(store_sync.iter().map(|r| r.measured)) / raw_dsync.max(raw_fdatasync),
        percentiles(&merged(store_sync.iter().map(|r| &r.latency_us)))
    );
}
