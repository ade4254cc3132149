//! The broker workloads (produce, consume, e2e), driven by the glommio client front end on
//! pinned reactor threads, against any RocketMQ-protocol broker reachable through a name server.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use thruster_client::core::config::ClientConfig;
use thruster_client::core::message::Message;
use thruster_client::core::requests::PullStatus;
use thruster_client::glommio::{self as client_rt, Client};

use crate::cpu::thread_cpu_time;
use crate::stats::{intended_start_us, new_histogram, record};

/// I/O memory each generator reactor registers (an 8 MiB memlock limit holds a few).
const GENERATOR_IO_MEMORY_BYTES: usize = 1 << 20;
/// Open-loop operations outstanding at once per thread; beyond it the schedule still advances
/// and the operation counts as an error (memory stays bounded, the stall stays visible).
const OPEN_LOOP_OUTSTANDING_MAX: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    Sync,
    Async,
    Oneway,
}

/// What every workload needs to know.
#[derive(Debug, Clone)]
pub struct Common {
    pub namesrv: String,
    pub topic: String,
    pub message_bytes: usize,
    /// Generator threads (reactors), pinned to CPUs `cpus[i]` when given.
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub duration: Duration,
    /// Stop after this many operations (all threads), if set.
    pub operations: Option<u64>,
    /// Route like any RocketMQ client: ignore a Thruster broker's shard map.
    pub plain: bool,
    /// Messages a consumer asks for per pull (`maxMsgNums`; RocketMQ clients' default 32).
    pub pull_batch: usize,
}

#[derive(Debug, Clone)]
pub struct ProduceArgs {
    pub common: Common,
    pub mode: SendMode,
    /// Concurrent senders per thread (closed loop); in `async` mode each keeps `in_flight`
    /// sends outstanding.
    pub producers: usize,
    pub in_flight: usize,
    pub batch: usize,
    /// Total rate for an open-loop run (messages/s); closed loop when absent.
    pub rate: Option<f64>,
    pub keys: bool,
    pub tags: bool,
    /// Spread over this many topics (`<topic>-0` … `<topic>-<n-1>`) when above 1.
    pub topics: usize,
}

/// What one generator thread measured.
pub struct ThreadResult {
    pub histogram: Histogram<u64>,
    pub errors: u64,
    pub bytes: u64,
    pub cpu: Duration,
    pub elapsed: Duration,
}

/// Merged results of all threads.
pub struct RunResult {
    pub histogram: Histogram<u64>,
    pub errors: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub cpu_cores: f64,
    pub saturated: bool,
}

impl RunResult {
    fn merge(results: Vec<ThreadResult>) -> RunResult {
        let mut histogram = new_histogram();
        let (mut errors, mut bytes, mut cpu) = (0, 0, Duration::ZERO);
        let mut elapsed = Duration::ZERO;
        let mut saturated = false;
        for r in &results {
            histogram.add(&r.histogram).expect("same bounds");
            errors += r.errors;
            bytes += r.bytes;
            cpu += r.cpu;
            elapsed = elapsed.max(r.elapsed);
            saturated |=
                r.cpu.as_secs_f64() > crate::cpu::SATURATED_SHARE * r.elapsed.as_secs_f64();
        }
        RunResult {
            histogram,
            errors,
            bytes,
            elapsed,
            cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            saturated,
        }
    }
}

fn now_epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A body of `size` bytes whose first 8 carry the send time (µs since the epoch), for e2e.
fn stamped_body(size: usize) -> Bytes {
    let mut body = BytesMut::with_capacity(size.max(8));
    body.put_u64(now_epoch_us());
    body.resize(size.max(8), b'x');
    body.freeze()
}

fn message(args: &ProduceArgs, i: u64) -> Message {
    let topic = if args.topics > 1 {
        format!("{}-{}", args.common.topic, i % args.topics as u64)
    } else {
        args.common.topic.clone()
    };
    let mut message = Message::new(topic, stamped_body(args.common.message_bytes));
    if args.tags {
        message = message.with_tags("bench");
    }
    if args.keys {
        message = message.with_key(format!("k{i}"));
    }
    message
}

/// Runs `work(thread_index, progress)` on `threads` pinned reactors and merges their results.
fn on_threads<F, Fut>(
    common: &Common,
    progress: &Arc<AtomicU64>,
    work: F,
) -> std::io::Result<RunResult>
where
    F: Fn(usize, Arc<AtomicU64>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ThreadResult> + 'static,
{
    let mut handles = Vec::new();
    for t in 0..common.threads {
        let cpu = common.cpus.get(t).copied();
        let work = work.clone();
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || {
            client_rt::run_on_reactor(cpu, GENERATOR_IO_MEMORY_BYTES, move || work(t, progress))
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(
            handle
                .join()
                .map_err(|_| std::io::Error::other("generator thread panicked"))??,
        );
    }
    Ok(RunResult::merge(results))
}

fn client(common: &Common, group: &str) -> Rc<Client> {
    let mut config =
        ClientConfig::new(&common.namesrv).expect("name server address checked by the CLI");
    config.shard_aware = !common.plain;
    Client::new(config, group)
}

/// `produce`: closed loop (max throughput) or open loop at `rate`.
pub fn produce(args: &ProduceArgs, progress: &Arc<AtomicU64>) -> std::io::Result<RunResult> {
    let args = args.clone();
    let common = args.common.clone();
    on_threads(&common, progress, move |_, progress| {
        let args = args.clone();
        async move {
            let client = client(&args.common, "thruster-bench-producer");
            // Warm up: route, connections, topic creation.
            let _ = client.send(&message(&args, 0)).await;
            let per_thread_ops = args
                .common
                .operations
                .map(|n| n / args.common.threads as u64);
            let cpu0 = thread_cpu_time();
            let start = Instant::now();
            let state = Rc::new(State::new());
            match args.rate {
                None => closed_loop(&args, &client, &state, &progress, start, per_thread_ops).await,
                Some(rate) => {
                    let rate = rate / args.common.threads as f64;
                    open_loop(
                        &args,
                        &client,
                        &state,
                        &progress,
                        start,
                        rate,
                        per_thread_ops,
                    )
                    .await
                }
            }
            ThreadResult {
                histogram: state.histogram.replace(new_histogram()),
                errors: state.errors.get(),
                bytes: state.bytes.get(),
                cpu: thread_cpu_time().saturating_sub(cpu0),
                elapsed: start.elapsed(),
            }
        }
    })
}

struct State {
    histogram: RefCell<Histogram<u64>>,
    errors: Cell<u64>,
    bytes: Cell<u64>,
    issued: Cell<u64>,
    outstanding: Cell<u64>,
}

impl State {
    fn new() -> State {
        State {
            histogram: RefCell::new(new_histogram()),
            errors: Cell::new(0),
            bytes: Cell::new(0),
            issued: Cell::new(0),
            outstanding: Cell::new(0),
        }
    }
}

/// One send (a batch counts as `batch` messages); records latency from `intended_us`.
async fn send_one(
    args: &ProduceArgs,
    client: &Client,
    state: &State,
    progress: &AtomicU64,
    start: Instant,
    intended_us: u64,
    i: u64,
) {
    let result = if args.batch > 1 {
        let batch: Vec<Message> = (0..args.batch as u64)
            .map(|j| message(args, i + j))
            .collect();
        client.send_batch(&batch).await.map(|_| ())
    } else {
        match args.mode {
            SendMode::Oneway => client.send_oneway(&message(args, i)).await,
            SendMode::Sync | SendMode::Async => client.send(&message(args, i)).await.map(|_| ()),
        }
    };
    let done_us = start.elapsed().as_micros() as u64;
    match result {
        Ok(()) => {
            record(&mut state.histogram.borrow_mut(), intended_us, done_us);
            let messages = args.batch.max(1) as u64;
            state
                .bytes
                .set(state.bytes.get() + messages * args.common.message_bytes as u64);
            progress.fetch_add(messages, Ordering::Relaxed);
        }
        Err(_) => state.errors.set(state.errors.get() + 1),
    }
}

async fn closed_loop(
    args: &ProduceArgs,
    client: &Rc<Client>,
    state: &Rc<State>,
    progress: &Arc<AtomicU64>,
    start: Instant,
    ops: Option<u64>,
) {
    let senders = args.producers.max(1)
        * if args.mode == SendMode::Async {
            args.in_flight.max(1)
        } else {
            1
        };
    let finished = Rc::new(Cell::new(0usize));
    for _ in 0..senders {
        let (args, client, state, progress, finished) = (
            args.clone(),
            client.clone(),
            state.clone(),
            progress.clone(),
            finished.clone(),
        );
        client_rt::spawn(async move {
            while start.elapsed() < args.common.duration
                && ops.is_none_or(|n| state.issued.get() < n)
            {
                let i = state.issued.get();
                state.issued.set(i + args.batch.max(1) as u64);
                let t0 = start.elapsed().as_micros() as u64;
                send_one(&args, &client, &state, &progress, start, t0, i).await;
            }
            finished.set(finished.get() + 1);
        });
    }
    while finished.get() < senders {
        client_rt::sleep(Duration::from_millis(5)).await;
    }
}

async fn open_loop(
    args: &ProduceArgs,
    client: &Rc<Client>,
    state: &Rc<State>,
    progress: &Arc<AtomicU64>,
    start: Instant,
    rate: f64,
    ops: Option<u64>,
) {
    let mut i = 0u64;
    loop {
        let intended_us = intended_start_us(i, rate);
        if Duration::from_micros(intended_us) >= args.common.duration || ops.is_some_and(|n| i >= n)
        {
            break;
        }
        let now_us = start.elapsed().as_micros() as u64;
        if intended_us > now_us {
            client_rt::sleep(Duration::from_micros(intended_us - now_us)).await;
        }
        if state.outstanding.get() >= OPEN_LOOP_OUTSTANDING_MAX {
            state.errors.set(state.errors.get() + 1);
        } else {
            state.outstanding.set(state.outstanding.get() + 1);
            let (args, client, state, progress) = (
                args.clone(),
                client.clone(),
                state.clone(),
                progress.clone(),
            );
            client_rt::spawn(async move {
                send_one(&args, &client, &state, &progress, start, intended_us, i).await;
                state.outstanding.set(state.outstanding.get() - 1);
            });
        }
        i += args.batch.max(1) as u64;
    }
    while state.outstanding.get() > 0 {
        client_rt::sleep(Duration::from_millis(5)).await;
    }
}

/// `consume`: `threads` consumers split a topic's queues and read from offset 0 (catch-up from
/// the backlog) or, with `from_tail`, from the current end with long polling for the whole
/// run; the histogram holds pull latencies.
pub fn consume(
    common: &Common,
    from_tail: bool,
    progress: &Arc<AtomicU64>,
) -> std::io::Result<RunResult> {
    let common = common.clone();
    let threads = common.threads;
    on_threads(&common.clone(), progress, move |thread, progress| {
        let common = common.clone();
        async move {
            let client = client(&common, "thruster-bench-consumer");
            let queues = client.queues(&common.topic).await.unwrap_or_default();
            let cpu0 = thread_cpu_time();
            let start = Instant::now();
            let histogram = Rc::new(RefCell::new(new_histogram()));
            let errors = Rc::new(Cell::new(0u64));
            let bytes = Rc::new(Cell::new(0u64));
            let running = Rc::new(Cell::new(0usize));
            // One puller task per queue of this thread's share, all at once.
            for queue in queues.into_iter().skip(thread).step_by(threads) {
                let (client, histogram, errors, bytes, running, progress, common) = (
                    client.clone(),
                    histogram.clone(),
                    errors.clone(),
                    bytes.clone(),
                    running.clone(),
                    progress.clone(),
                    common.clone(),
                );
                running.set(running.get() + 1);
                client_rt::spawn(async move {
                    let mut offset = 0;
                    if from_tail {
                        if let Ok(result) = client.pull(&queue, "*", i64::MAX, 1, None).await {
                            offset = result.next_begin_offset;
                        }
                    }
                    let suspend = from_tail.then_some(Duration::from_secs(1));
                    while start.elapsed() < common.duration {
                        let t0 = start.elapsed().as_micros() as u64;
                        // Read in place: a bulk reader needs the bodies, not every field.
                        match client
                            .pull_view(&queue, "*", offset, common.pull_batch as i32, suspend)
                            .await
                        {
                            Ok(result) => {
                                record(
                                    &mut histogram.borrow_mut(),
                                    t0,
                                    start.elapsed().as_micros() as u64,
                                );
                                let got: u64 =
                                    result.messages.iter().map(|m| m.body_bytes() as u64).sum();
                                bytes.set(bytes.get() + got);
                                progress.fetch_add(result.messages.len() as u64, Ordering::Relaxed);
                                offset = result.next_begin_offset;
                                if result.status == PullStatus::NoNewMessage && !from_tail {
                                    break;
                                }
                            }
                            Err(_) => errors.set(errors.get() + 1),
                        }
                    }
                    running.set(running.get() - 1);
                });
            }
            while running.get() > 0 {
                client_rt::sleep(Duration::from_millis(5)).await;
            }
            let (histogram, errors, bytes) = (
                histogram.replace(new_histogram()),
                errors.get(),
                bytes.get(),
            );
            ThreadResult {
                histogram,
                errors,
                bytes,
                cpu: thread_cpu_time().saturating_sub(cpu0),
                elapsed: start.elapsed(),
            }
        }
    })
}

/// `e2e`: one thread produces at `rate` (open loop, stamped bodies), another consumes from
/// the tail with long polling; latency = receive time − stamped send time.
pub fn e2e(
    args: &ProduceArgs,
    progress: &Arc<AtomicU64>,
) -> std::io::Result<(RunResult, RunResult)> {
    let consumer_common = Common {
        threads: 1,
        cpus: args.common.cpus.iter().skip(1).copied().collect(),
        ..args.common.clone()
    };
    // The topic must exist before the consumer looks up its queues.
    let setup = args.common.clone();
    client_rt::run_on_reactor(None, GENERATOR_IO_MEMORY_BYTES, move || async move {
        let client = client(&setup, "thruster-bench-producer");
        let _ = client
            .send(&Message::new(
                setup.topic.clone(),
                stamped_body(setup.message_bytes),
            ))
            .await;
    })?;
    // The consumer takes the current tail of every queue, says so, then the producer starts.
    let ready = Arc::new(AtomicU64::new(0));
    let consumer_ready = ready.clone();
    let tail_progress = progress.clone();
    let consumer = std::thread::spawn(move || -> std::io::Result<RunResult> {
        let grace = Duration::from_secs(2);
        let deadline_common = Common {
            duration: consumer_common.duration + grace,
            ..consumer_common.clone()
        };
        on_threads(&deadline_common, &tail_progress, move |_, _| {
            let common = consumer_common.clone();
            let ready = consumer_ready.clone();
            async move { e2e_consumer(&common, &ready).await }
        })
    });
    while ready.load(Ordering::Acquire) == 0 {
        if consumer.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let producer = produce(
        &ProduceArgs {
            common: Common {
                threads: 1,
                cpus: args.common.cpus.iter().take(1).copied().collect(),
                ..args.common.clone()
            },
            ..args.clone()
        },
        progress,
    )?;
    let consumer = consumer
        .join()
        .map_err(|_| std::io::Error::other("consumer thread panicked"))??;
    Ok((producer, consumer))
}

async fn e2e_consumer(common: &Common, ready: &AtomicU64) -> ThreadResult {
    let client = client(common, "thruster-bench-e2e");
    // The topic was just created: its route reaches the name server with the broker's next
    // registration.
    let mut queues = Vec::new();
    for _ in 0..100 {
        queues = client.queues(&common.topic).await.unwrap_or_default();
        if !queues.is_empty() {
            break;
        }
        client_rt::sleep(Duration::from_millis(100)).await;
    }
    // Start at the tail: only messages sent during the run count.
    let mut tails = Vec::new();
    for queue in &queues {
        let tail = match client.pull(queue, "*", i64::MAX, 1, None).await {
            Ok(result) => result.next_begin_offset,
            Err(_) => 0,
        };
        tails.push(tail);
    }
    ready.store(1, Ordering::Release);
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    let histogram = Rc::new(RefCell::new(new_histogram()));
    let bytes = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let running = Rc::new(Cell::new(queues.len()));
    let deadline = common.duration + Duration::from_millis(500);
    for (queue, tail) in queues.into_iter().zip(tails) {
        let (client, histogram, bytes, errors, running) = (
            client.clone(),
            histogram.clone(),
            bytes.clone(),
            errors.clone(),
            running.clone(),
        );
        client_rt::spawn(async move {
            let mut offset = tail;
            while start.elapsed() < deadline {
                match client
                    .pull(&queue, "*", offset, 32, Some(Duration::from_secs(2)))
                    .await
                {
                    Ok(result) => {
                        let now = now_epoch_us();
                        for m in &result.messages {
                            if m.body.len() >= 8 {
                                let sent =
                                    u64::from_be_bytes(m.body[..8].try_into().expect("8 bytes"));
                                record(&mut histogram.borrow_mut(), sent, now);
                                bytes.set(bytes.get() + m.body.len() as u64);
                            }
                        }
                        offset = result.next_begin_offset;
                    }
                    Err(_) => errors.set(errors.get() + 1),
                }
            }
            running.set(running.get() - 1);
        });
    }
    while running.get() > 0 {
        client_rt::sleep(Duration::from_millis(10)).await;
    }
    ThreadResult {
        histogram: histogram.replace(new_histogram()),
        errors: errors.get(),
        bytes: bytes.get(),
        cpu: thread_cpu_time().saturating_sub(cpu0),
        elapsed: start.elapsed(),
    }
}
