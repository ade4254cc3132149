//! The native orderly push consumer against a real two-shard broker: per-queue order across a
//! rebalance (a member joins mid-stream, another leaves), never two members consuming one queue
//! at the same time (each delivery's member and time span are recorded), and local retries of a
//! suspended queue followed by the dead-letter queue.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thruster_client::tokio::{
    ClientConfig, ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig, PullConsumer,
    PushConsumer, PushConsumerConfig,
};
use thruster_tests::ServerProcess;

/// One delivery: member, body, queue (store host, queue id), when it started and ended.
#[derive(Debug, Clone)]
struct Delivery {
    member: String,
    body: String,
    queue: (SocketAddr, i32),
    start: Instant,
    end: Instant,
}

type Deliveries = Arc<Mutex<Vec<Delivery>>>;

fn config(ns: &str, group: &str, member: &str) -> PushConsumerConfig {
    let mut config = PushConsumerConfig::new(group, ns).unwrap();
    config.client = config.client.with_instance_name(member);
    config.orderly = true;
    config.consume_from = ConsumeFromWhere::FirstOffset;
    config.rebalance_interval = Duration::from_millis(300);
    config.lock_renew_interval = Duration::from_millis(500);
    config.suspend_current_queue_time = Duration::from_millis(100);
    config.offset_commit_interval = Duration::from_millis(200);
    config
}

async fn member(
    ns: &str,
    group: &str,
    topic: &str,
    name: &str,
    deliveries: Deliveries,
) -> PushConsumer {
    let consumer = PushConsumer::new(config(ns, group, name));
    consumer.subscribe(topic, "*");
    let name = name.to_owned();
    consumer
        .start(move |messages| {
            let start = Instant::now();
            // A little work, so spans are long enough for an overlap to show.
            std::thread::sleep(Duration::from_millis(2));
            let mut deliveries = deliveries.lock().unwrap();
            for m in messages {
                deliveries.push(Delivery {
                    member: name.clone(),
                    body: String::from_utf8(m.body.to_vec()).unwrap(),
                    queue: (m.store_host, m.queue_id),
                    start,
                    end: Instant::now(),
                });
            }
            ConsumeResult::Success
        })
        .await
        .unwrap();
    consumer
}

async fn produce(producer: &Producer, topic: &str, round: usize, keys: usize, per_key: usize) {
    for seq in 0..per_key {
        for key in 0..keys {
            let body = format!("k{key}:{round}:{seq:03}");
            producer
                .send_orderly(Message::new(topic, body), &format!("k{key}"))
                .await
                .unwrap();
        }
    }
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn consumed(deliveries: &Deliveries) -> usize {
    deliveries.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_and_no_queue_has_two_consumers_across_a_rebalance() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let ns = namesrv.addr.to_string();
    let topic = "OrderlyTopic";
    let group = "orderly-group";
    let producer = Producer::new(ProducerConfig::new("orderly-producer", &ns).unwrap());
    let (keys, per_key) = (8, 20);
    produce(&producer, topic, 0, keys, per_key).await;
    let deliveries: Deliveries = Arc::default();

    let a = member(&ns, group, topic, "A", deliveries.clone()).await;
    wait_for("A's first messages", || consumed(&deliveries) >= 40).await;
    // B joins mid-stream: queues move from A to B while messages keep coming.
    let b = member(&ns, group, topic, "B", deliveries.clone()).await;
    produce(&producer, topic, 1, keys, per_key).await;
    wait_for("B takes queues", || {
        deliveries.lock().unwrap().iter().any(|d| d.member == "B")
    })
    .await;
    // A leaves mid-stream: its queues move to B.
    produce(&producer, topic, 2, keys, per_key).await;
    a.shutdown().await;
    let total = 3 * keys * per_key;
    wait_for("every message", || consumed(&deliveries) >= total).await;
    b.shutdown().await;

    let deliveries = deliveries.lock().unwrap().clone();
    let bodies: Vec<&str> = deliveries.iter().map(|d| d.body.as_str()).collect();
    let unique: BTreeSet<&str> = bodies.iter().copied().collect();
    assert_eq!(unique.len(), total, "every message consumed");
    assert_eq!(bodies.len(), total, "none consumed twice");
    assert!(deliveries.iter().any(|d| d.member == "A"));
    assert!(deliveries.iter().any(|d| d.member == "B"));

    // Per key (one queue each), consumption follows send order.
    let mut by_key: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in &deliveries {
        by_key
            .entry(d.body.split(':').next().unwrap())
            .or_default()
            .push(d);
    }
    assert_eq!(by_key.len(), keys);
    for (key, mut list) in by_key {
        list.sort_by_key(|d| d.start);
        let sequence: Vec<&str> = list
            .iter()
            .map(|d| &d.body[d.body.find(':').unwrap()..])
            .collect();
        let mut sorted = sequence.clone();
        sorted.sort();
        assert_eq!(sequence, sorted, "{key} consumed out of order");
        assert!(
            list.iter().all(|d| d.queue == list[0].queue),
            "{key}: one queue"
        );
    }

    // Per queue, a delivery by one member never overlaps one by another.
    let mut by_queue: BTreeMap<(SocketAddr, i32), Vec<&Delivery>> = BTreeMap::new();
    for d in &deliveries {
        by_queue.entry(d.queue).or_default().push(d);
    }
    let mut handovers = 0;
    for (queue, mut list) in by_queue {
        list.sort_by_key(|d| d.start);
        for pair in list.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "{queue:?}: overlapping deliveries"
            );
            if pair[0].member != pair[1].member {
                handovers += 1;
            }
        }
    }
    assert!(handovers > 0, "some queue changed hands mid-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_queue_retries_locally_then_sends_to_the_dead_letter_queue() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let ns = namesrv.addr.to_string();
    let topic = "OrderlyPoison";
    let group = "orderly-poison-group";
    let producer = Producer::new(ProducerConfig::new("poison-producer", &ns).unwrap());
    for body in ["before", "poison", "after"] {
        producer
            .send_orderly(Message::new(topic, body), "one-key")
            .await
            .unwrap();
    }
    let mut config = config(&ns, group, "P");
    config.max_reconsume_times = 2;
    let consumer = PushConsumer::new(config);
    consumer.subscribe(topic, "*");
    let seen: Arc<Mutex<Vec<(String, i32, Instant)>>> = Arc::default();
    let sink = seen.clone();
    consumer
        .start(move |messages| {
            let mut seen = sink.lock().unwrap();
            let m = &messages[0];
            let body = String::from_utf8(m.body.to_vec()).unwrap();
            seen.push((body.clone(), m.reconsume_times, Instant::now()));
            if body == "poison" {
                ConsumeResult::SuspendCurrentQueueAMoment
            } else {
                ConsumeResult::Success
            }
        })
        .await
        .unwrap();
    wait_for("after the poison", || {
        seen.lock().unwrap().iter().any(|s| s.0 == "after")
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        order,
        ["before", "poison", "poison", "poison", "after"],
        "the queue waits on the poison: delivered max_reconsume_times + 1 times, in place"
    );
    let retries: Vec<i32> = seen
        .iter()
        .filter(|s| s.0 == "poison")
        .map(|s| s.1)
        .collect();
    assert_eq!(retries, [0, 1, 2], "each delivery counts its retries");
    let gaps: Vec<Duration> = seen.windows(2).skip(1).map(|w| w[1].2 - w[0].2).collect();
    assert!(
        gaps[..2].iter().all(|g| *g >= Duration::from_millis(100)),
        "suspended between attempts: {gaps:?}"
    );
    consumer.shutdown().await;

    let reader = PullConsumer::new("dlq-reader", ClientConfig::new(&ns).unwrap());
    let dlq = format!("%DLQ%{group}");
    let mut dead = Vec::new();
    wait_for_async_dlq(&reader, &dlq, &mut dead).await;
    assert_eq!(dead, ["poison"], "exactly the poison message is dead");
}

async fn wait_for_async_dlq(reader: &PullConsumer, topic: &str, dead: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        *dead = thruster_tests::pull_bodies(reader, topic).await;
        if !dead.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the DLQ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
