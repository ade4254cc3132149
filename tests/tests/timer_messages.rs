//! Timer messages (RocketMQ 5's `TIMER_DELAY_MS` / `TIMER_DELAY_SEC` / `TIMER_DELIVER_MS`)
//! against a real two-shard broker: a spread of delays arrives, never before its time, across a
//! SIGKILL and restart of the broker; refusals past `timerMaxDelaySec` and with
//! `timerWheelEnable=false`. Lateness is printed here; its target lives in the bench.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thruster_client::tokio::{
    ClientError, ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig, SendStatus,
};
use thruster_tests::ServerProcess;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (body, received at, stored in its real queue at, due per the broker's TIMER_OUT_MS, where
/// it is stored: store host, queue, offset).
type Received = Arc<Mutex<Vec<(String, i64, i64, i64, (std::net::SocketAddr, i32, i64))>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_messages_arrive_not_early_and_survive_a_sigkill() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let port = thruster_tests::free_port_block(&[0, 2, 10, 12]) + 2;
    let listen = format!("listenPort={port}");
    let settings = [
        listen.as_str(),
        "flushDiskType=SYNC_FLUSH",
        "haListenPort=0",
    ];
    let broker = ServerProcess::broker(namesrv.addr, 2, &settings);
    let ns = namesrv.addr.to_string();
    let topic = "Timed";
    let producer = Producer::new(ProducerConfig::new("timer-producer", &ns).unwrap());
    producer.send(Message::new(topic, "create")).await.unwrap();

    let mut config = PushConsumerConfig::new("timer-readers", &ns).unwrap();
    config.consume_from = ConsumeFromWhere::FirstOffset;
    config.rebalance_interval = Duration::from_millis(500);
    // A pull parked on the killed broker is given up sooner.
    config.suspend = Duration::from_secs(2);
    let consumer = PushConsumer::new(config);
    consumer.subscribe(topic, "*");
    let received: Received = Arc::default();
    let sink = received.clone();
    consumer
        .start(move |messages| {
            let at = now_ms();
            let mut sink = sink.lock().unwrap();
            for m in messages {
                if let Some(due) = m.property("TIMER_OUT_MS") {
                    let body = String::from_utf8(m.body.to_vec()).unwrap();
                    let stored_at = (m.store_host, m.queue_id, m.queue_offset);
                    sink.push((body, at, m.store_timestamp, due.parse().unwrap(), stored_at));
                }
            }
            ConsumeResult::Success
        })
        .await
        .unwrap();

    // Delays from 0.5 s to 20 s, spread over every level they need; each body says when it
    // was asked for.
    let delays_ms: Vec<i64> = (0..40).map(|i| 500 + i * 500).collect();
    let mut expected = BTreeSet::new();
    for (i, delay) in delays_ms.iter().enumerate() {
        let asked_due = now_ms() + delay;
        let body = format!("t{i}:{asked_due}");
        let property = if i % 2 == 0 {
            "TIMER_DELAY_MS"
        } else {
            "TIMER_DELIVER_MS"
        };
        let value = if i % 2 == 0 {
            delay.to_string()
        } else {
            asked_due.to_string()
        };
        let sent = producer
            .send(Message::new(topic, body.clone()).with_property(property, value))
            .await
            .unwrap();
        assert_eq!(sent.status, SendStatus::SendOk);
        expected.insert(body);
    }
    // Kill the broker once the first few arrived; the rest wait in the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "no timer message arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _broker = broker.restart();
    let restarted_ms = now_ms();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect();
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing after the restart: {:?}",
            expected.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
    let received = received.lock().unwrap().clone();
    // First delivery of each message (a kill repeats some: at least once).
    let mut first: std::collections::BTreeMap<&str, (i64, i64, i64)> = Default::default();
    let mut copies: std::collections::BTreeMap<&str, BTreeSet<_>> = Default::default();
    for (body, at, stored, due, location) in &received {
        copies.entry(body).or_default().insert(*location);
        let asked_due: i64 = body.split(':').nth(1).unwrap().parse().unwrap();
        assert!(
            *due >= asked_due,
            "{body}: the broker's due time is before the asked one"
        );
        assert!(
            *stored >= *due,
            "{body}: delivered {} ms early",
            due - stored
        );
        assert!(*at >= *due, "{body}: received {} ms early", due - at);
        let entry = first.entry(body).or_insert((*at, *stored, *due));
        entry.1 = entry.1.min(*stored);
    }
    // The consumer may see a message again after the kill; the broker stored each one once.
    for (body, locations) in copies {
        assert_eq!(
            locations.len(),
            1,
            "{body} delivered {} times",
            locations.len()
        );
    }
    // Delivery lateness: when the broker stored it in its real queue, against its due time.
    let mut lateness_ms: Vec<(bool, i64)> = first
        .values()
        .map(|(_, stored, due)| (*due > restarted_ms + 3_000, stored - due))
        .collect();
    lateness_ms.sort_unstable();
    eprintln!(
        "timer delivery lateness (ms; true: due 3 s or more after the restart): {lateness_ms:?}; \
         repeated deliveries: {}",
        received.len() - first.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_sends_past_the_max_delay_or_with_the_wheel_off_are_refused() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 1, &["timerMaxDelaySec=60"]);
    let ns = namesrv.addr.to_string();
    let mut config = ProducerConfig::new("timer-refused", &ns).unwrap();
    config.retry_times = 0;
    let producer = Producer::new(config);
    producer
        .send(Message::new("Timers", "create"))
        .await
        .unwrap();
    let refusal = |error: ClientError| match error {
        ClientError::Broker { code, remark, .. } => (code, remark),
        other => panic!("{other}"),
    };
    let (code, remark) = refusal(
        producer
            .send(Message::new("Timers", "far").with_property("TIMER_DELAY_SEC", "61"))
            .await
            .expect_err("past timerMaxDelaySec"),
    );
    assert_eq!(code, 13, "MESSAGE_ILLEGAL: {remark}");
    assert!(remark.contains("60000ms"), "{remark}");
    let (code, _) = refusal(
        producer
            .send(Message::new("Timers", "soon").with_property("TIMER_DELAY_MS", "x"))
            .await
            .expect_err("not a number"),
    );
    assert_eq!(code, 13);
    // A delay level wins over timer properties, as in RocketMQ.
    let sent = producer
        .send(
            Message::new("Timers", "level")
                .with_delay_level(1)
                .with_property("TIMER_DELAY_SEC", "5"),
        )
        .await
        .unwrap();
    assert_eq!(sent.status, SendStatus::SendOk);

    // timerWheelEnable=false: refused as RocketMQ 5 refuses it.
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _off = ServerProcess::broker(namesrv.addr, 1, &["timerWheelEnable=false"]);
    let mut config = ProducerConfig::new("timer-off", &namesrv.addr.to_string()).unwrap();
    config.retry_times = 0;
    let producer = Producer::new(config);
    producer
        .send(Message::new("Timers", "create"))
        .await
        .unwrap();
    let (code, remark) = refusal(
        producer
            .send(Message::new("Timers", "later").with_property("TIMER_DELAY_SEC", "1"))
            .await
            .expect_err("the wheel is off"),
    );
    assert_eq!(code, 1, "{remark}");
    assert!(remark.contains("timerWheelEnable"), "{remark}");
}
