//! Timer-message load: sends N messages with `TIMER_DELAY_MS` spread evenly over
//! [min, max] seconds, samples the broker's memory and CPU while they wait, then reads them
//! all back and reports how late each was stored in its queue (store time − TIMER_OUT_MS).
//!
//! `timer-load NAMESRV COUNT MIN_S MAX_S BROKER_PID [SENDERS]`

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thruster_client::tokio::{ClientConfig, Message, Producer, ProducerConfig, PullConsumer};

const TOPIC: &str = "TimerLoad";

/// (resident bytes, user + system CPU seconds) of `pid`, from /proc.
fn sample(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (rss_kib * 1024, ticks / hz)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: timer-load NAMESRV COUNT MIN_S MAX_S BROKER_PID [SENDERS]");
        std::process::exit(2);
    }
    let namesrv = &args[1];
    let count: u64 = args[2].parse().expect("COUNT");
    let min_ms: u64 = args[3].parse::<u64>().expect("MIN_S") * 1000;
    let max_ms: u64 = args[4].parse::<u64>().expect("MAX_S") * 1000;
    let pid: u32 = args[5].parse().expect("BROKER_PID");
    let senders: u64 = args.get(6).map_or(64, |s| s.parse().expect("SENDERS"));
    let producer = Producer::new(ProducerConfig::new("timer-load", namesrv).expect("config"));
    producer
        .send(Message::new(TOPIC, "create"))
        .await
        .expect("create");

    let (rss_before, cpu_before) = sample(pid);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let producer = producer.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let delay = min_ms + (max_ms - min_ms) * i / count.max(1);
                    let message = Message::new(TOPIC, format!("{i:08}"))
                        .with_property("TIMER_DELAY_MS", delay.to_string());
                    if let Err(error) = producer.send(message).await {
                        eprintln!("send {i}: {error}");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    let sent_s = started.elapsed().as_secs_f64();
    let (rss_pending, cpu_after_send) = sample(pid);
    println!(
        "sent {count} timers in {sent_s:.1} s ({:.0}/s); broker RSS {} MiB before, {} MiB with \
         all pending; broker CPU for the sends {:.1} s",
        count as f64 / sent_s,
        rss_before >> 20,
        rss_pending >> 20,
        cpu_after_send - cpu_before
    );

    // Sample while they wait and fall due.
    // The last send was the last due: wait for it, and 2 s more.
    let due_all = Instant::now() + Duration::from_millis(max_ms) + Duration::from_secs(2);
    let mut rss_peak = rss_pending;
    while Instant::now() < due_all {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(sample(pid).0);
    }
    let (_, cpu_end) = sample(pid);
    println!(
        "broker RSS peak while pending/delivering {} MiB; broker CPU from the last send to the \
         last due time {:.1} s",
        rss_peak >> 20,
        cpu_end - cpu_after_send
    );

    let consumer = PullConsumer::new(
        "timer-load-reader",
        ClientConfig::new(namesrv).expect("config"),
    );
    let mut lateness: Vec<i64> = Vec::with_capacity(count as usize);
    let mut seen = HashSet::with_capacity(count as usize);
    let mut early = 0u64;
    for queue in consumer.queues(TOPIC).await.expect("queues") {
        let mut offset = 0;
        loop {
            let result = consumer
                .pull(&queue, "*", offset, 32, None)
                .await
                .expect("pull");
            if result.messages.is_empty() {
                break;
            }
            for m in &result.messages {
                let Some(due) = m
                    .property("TIMER_OUT_MS")
                    .and_then(|d| d.parse::<i64>().ok())
                else {
                    continue;
                };
                if m.store_timestamp < due {
                    early += 1;
                }
                if seen.insert(m.body.clone()) {
                    lateness.push(m.store_timestamp - due);
                }
            }
            offset = result.next_begin_offset;
        }
    }
    lateness.sort_unstable();
    println!(
        "delivered {} of {count} (early: {early}); lateness ms p50 {} p99 {} p99.9 {} max {}",
        lateness.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        percentile(&lateness, 0.999),
        lateness.last().copied().unwrap_or(0)
    );
}
