//! The native tokio client against a real two-shard `thruster-broker`: every send mode, pulls
//! with exact message sets, offsets.

use std::collections::BTreeSet;
use std::time::Duration;

use thruster_client::tokio::{
    ClientConfig, Message, Producer, ProducerConfig, PullConsumer, PullStatus, SendStatus,
};
use thruster_tests::ServerProcess;

fn start() -> (ServerProcess, ServerProcess) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    (namesrv, broker)
}

/// Every message of every queue of `topic`, from offset 0.
async fn pull_everything(consumer: &PullConsumer, topic: &str) -> Vec<(String, i32, i64)> {
    let mut got = Vec::new();
    for queue in consumer.queues(topic).await.unwrap() {
        let mut offset = 0;
        loop {
            let result = consumer.pull(&queue, "*", offset, 32, None).await.unwrap();
            for message in &result.messages {
                got.push((
                    String::from_utf8(message.body.to_vec()).unwrap(),
                    message.queue_id,
                    message.queue_offset,
                ));
            }
            offset = result.next_begin_offset;
            if result.status != PullStatus::Found {
                break;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_mode_is_stored_and_pulled_exactly() {
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    let producer = Producer::new(ProducerConfig::new("native-producer", &ns).unwrap());
    let topic = "NativeModes";
    let mut expected = BTreeSet::new();
    for i in 0..20 {
        let body = format!("sync-{i}");
        let result = producer
            .send(
                Message::new(topic, body.clone())
                    .with_tags("TagA")
                    .with_key(format!("k{i}")),
            )
            .await
            .unwrap();
        assert_eq!(result.status, SendStatus::SendOk);
        assert_eq!(result.msg_id.len(), 32);
        expected.insert(body);
    }
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let body = format!("async-{i}");
            expected.insert(body.clone());
            producer.send_async(Message::new(topic, body))
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap().unwrap().status, SendStatus::SendOk);
    }
    for i in 0..20 {
        let body = format!("oneway-{i}");
        producer
            .send_oneway(Message::new(topic, body.clone()))
            .await
            .unwrap();
        expected.insert(body);
    }
    let batch: Vec<Message> = (0..10)
        .map(|i| {
            let body = format!("batch-{i}");
            expected.insert(body.clone());
            Message::new(topic, body)
        })
        .collect();
    let result = producer.send_batch(batch).await.unwrap();
    assert_eq!(result.msg_id.split(',').count(), 10, "one id per message");
    assert_eq!(result.offset_msg_id.split(',').count(), 10);

    let consumer = PullConsumer::new("native-pull", ClientConfig::new(&ns).unwrap());
    // One-way sends are not acknowledged: wait until they are all visible.
    let mut got = Vec::new();
    for _ in 0..100 {
        got = pull_everything(&consumer, topic).await;
        if got.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies: Vec<String> = got.iter().map(|m| m.0.clone()).collect();
    assert_eq!(bodies.len(), expected.len(), "no duplicates");
    assert_eq!(bodies.into_iter().collect::<BTreeSet<_>>(), expected);
    // The batch's messages sit at consecutive offsets of one queue.
    let batch: Vec<&(String, i32, i64)> =
        got.iter().filter(|m| m.0.starts_with("batch-")).collect();
    let queue = batch[0].1;
    assert!(batch.iter().all(|m| m.1 == queue));
    assert!(batch.windows(2).all(|w| w[1].2 == w[0].2 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_sends_keep_keys_in_order_and_offsets_commit() {
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    let producer = Producer::new(ProducerConfig::new("native-ordered", &ns).unwrap());
    let topic = "NativeOrdered";
    for i in 0..30 {
        let key = format!("order-{}", i % 5);
        let result = producer
            .send_orderly(Message::new(topic, format!("{key}:{i}")), &key)
            .await
            .unwrap();
        assert_eq!(result.status, SendStatus::SendOk);
    }
    let consumer = PullConsumer::new("native-ordered-group", ClientConfig::new(&ns).unwrap());
    let got = pull_everything(&consumer, topic).await;
    assert_eq!(got.len(), 30);
    for k in 0..5 {
        let prefix = format!("order-{k}:");
        let of_key: Vec<&(String, i32, i64)> =
            got.iter().filter(|m| m.0.starts_with(&prefix)).collect();
        assert_eq!(of_key.len(), 6);
        assert!(
            of_key.iter().all(|m| m.1 == of_key[0].1),
            "one queue per key"
        );
        let sequence: Vec<u32> = of_key
            .iter()
            .map(|m| m.0.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            sequence.windows(2).all(|w| w[0] < w[1]),
            "send order kept: {sequence:?}"
        );
    }
    let queue = &consumer.queues(topic).await.unwrap()[0];
    consumer.commit_offset(queue, 3).await.unwrap();
    assert_eq!(consumer.fetch_offset(queue).await.unwrap(), Some(3));
    assert!(consumer.max_offset(queue).await.unwrap() >= 0);
    assert_eq!(consumer.min_offset(queue).await.unwrap(), 0);
    // A long poll on the tail is answered by the next send to that queue.
    let tail = consumer.max_offset(queue).await.unwrap();
    let waiter = {
        let consumer = consumer.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            consumer
                .pull(&queue, "*", tail, 32, Some(Duration::from_secs(20)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    producer
        .send_to_queue(Message::new(topic, "late"), queue)
        .await
        .unwrap();
    let result = waiter.await.unwrap().unwrap();
    assert_eq!(result.status, PullStatus::Found);
    assert_eq!(result.messages[0].body.as_ref(), b"late");
}

use std::sync::{Arc, Mutex};
use thruster_client::tokio::{ConsumeResult, MessageModel, PushConsumer, PushConsumerConfig};

/// A queue, broker-wide: the store host (with a broker per shard, the shard's own address) and
/// the queue id there.
type QueueKey = (std::net::SocketAddr, i32);
type Received = Arc<Mutex<Vec<(String, QueueKey)>>>;

async fn push_consumer(
    ns: &str,
    group: &str,
    topic: &str,
    name: &str,
    model: MessageModel,
    home: &std::path::Path,
) -> (PushConsumer, Received) {
    let mut config = PushConsumerConfig::new(group, ns).unwrap();
    config.client = config.client.with_instance_name(name);
    config.model = model;
    config.local_offset_dir = home.to_path_buf();
    // Short intervals keep the test quick; the logic is the same as with RocketMQ's.
    config.rebalance_interval = Duration::from_millis(500);
    config.offset_commit_interval = Duration::from_millis(200);
    let consumer = PushConsumer::new(config);
    consumer.subscribe(topic, "*");
    let received: Received = Arc::default();
    let sink = received.clone();
    consumer
        .start(move |messages| {
            let mut sink = sink.lock().unwrap();
            for m in messages {
                sink.push((
                    String::from_utf8(m.body.to_vec()).unwrap(),
                    (m.store_host, m.queue_id),
                ));
            }
            ConsumeResult::Success
        })
        .await
        .unwrap();
    (consumer, received)
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Queues of a topic the first send creates: the client's 4 on each of the broker's 2 shards
/// (the send was routed by the template's route, where every shard offers 4).
const AUTO_CREATED_QUEUES: usize = 4 * 2;

async fn create_topic(producer: &Producer, topic: &str) {
    // The first send creates the topic (AUTO_CREATED_QUEUES); consumers then see its route.
    producer.send(Message::new(topic, "create")).await.unwrap();
}

async fn produce(producer: &Producer, topic: &str, prefix: &str, count: usize) -> BTreeSet<String> {
    let mut sent = BTreeSet::new();
    for i in 0..count {
        let body = format!("{prefix}-{i}");
        producer
            .send(Message::new(topic, body.clone()))
            .await
            .unwrap();
        sent.insert(body);
    }
    sent
}

fn bodies_with(received: &Received, prefix: &str) -> Vec<(String, QueueKey)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.0.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_push_consumers_split_queues_and_a_leaver_hands_over_without_loss() {
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    let home = tempfile::tempdir().unwrap();
    let topic = "NativePush";
    let producer = Producer::new(ProducerConfig::new("native-push-producer", &ns).unwrap());
    create_topic(&producer, topic).await;
    let (a, got_a) = push_consumer(
        &ns,
        "np-group",
        topic,
        "a",
        MessageModel::Clustering,
        home.path(),
    )
    .await;
    let (b, got_b) = push_consumer(
        &ns,
        "np-group",
        topic,
        "b",
        MessageModel::Clustering,
        home.path(),
    )
    .await;
    // Settled: the topic's queues split evenly between the two, disjoint.
    wait_for("an even split", || {
        let qa: Vec<_> = a
            .assigned_queues()
            .into_iter()
            .filter(|q| q.topic == topic)
            .collect();
        let qb: Vec<_> = b
            .assigned_queues()
            .into_iter()
            .filter(|q| q.topic == topic)
            .collect();
        qa.len() == AUTO_CREATED_QUEUES / 2
            && qb.len() == AUTO_CREATED_QUEUES / 2
            && qa.iter().all(|q| !qb.contains(q))
    })
    .await;
    let first = produce(&producer, topic, "first", 200).await;
    wait_for("all of the first round", || {
        bodies_with(&got_a, "first").len() + bodies_with(&got_b, "first").len() >= 200
    })
    .await;
    let (in_a, in_b) = (bodies_with(&got_a, "first"), bodies_with(&got_b, "first"));
    assert_eq!(in_a.len() + in_b.len(), 200, "every message exactly once");
    let all: BTreeSet<String> = in_a.iter().chain(&in_b).map(|m| m.0.clone()).collect();
    assert_eq!(all, first);
    let queues_a: BTreeSet<QueueKey> = in_a.iter().map(|m| m.1).collect();
    let queues_b: BTreeSet<QueueKey> = in_b.iter().map(|m| m.1).collect();
    assert!(
        queues_a.is_disjoint(&queues_b),
        "{queues_a:?} / {queues_b:?}"
    );

    // b leaves (commits its offsets, unregisters); a takes over all queues.
    b.shutdown().await;
    wait_for("a holding all the queues", || {
        a.assigned_queues()
            .iter()
            .filter(|q| q.topic == topic)
            .count()
            == AUTO_CREATED_QUEUES
    })
    .await;
    let second = produce(&producer, topic, "second", 100).await;
    wait_for("the second round at a", || {
        bodies_with(&got_a, "second").len() >= 100
    })
    .await;
    let second_at_a: BTreeSet<String> = bodies_with(&got_a, "second")
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(second_at_a, second, "nothing lost in the hand-over");
    assert!(bodies_with(&got_b, "second").is_empty());
    assert_eq!(
        bodies_with(&got_a, "first").len(),
        in_a.len(),
        "no redelivery of consumed messages"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_push_consumers_each_get_everything() {
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    let home = tempfile::tempdir().unwrap();
    let topic = "NativeBroadcast";
    let producer = Producer::new(ProducerConfig::new("native-bc-producer", &ns).unwrap());
    create_topic(&producer, topic).await;
    let (a, got_a) = push_consumer(
        &ns,
        "nb-group",
        topic,
        "a",
        MessageModel::Broadcasting,
        home.path(),
    )
    .await;
    let (b, got_b) = push_consumer(
        &ns,
        "nb-group",
        topic,
        "b",
        MessageModel::Broadcasting,
        home.path(),
    )
    .await;
    wait_for("both holding every queue", || {
        a.assigned_queues().len() == AUTO_CREATED_QUEUES
            && b.assigned_queues().len() == AUTO_CREATED_QUEUES
    })
    .await;
    let sent = produce(&producer, topic, "bc", 100).await;
    wait_for("both got everything", || {
        bodies_with(&got_a, "bc").len() >= 100 && bodies_with(&got_b, "bc").len() >= 100
    })
    .await;
    for got in [&got_a, &got_b] {
        let bodies = bodies_with(got, "bc");
        assert_eq!(bodies.len(), 100);
        assert_eq!(
            bodies.into_iter().map(|m| m.0).collect::<BTreeSet<_>>(),
            sent
        );
    }
    a.shutdown().await;
    b.shutdown().await;
    // Broadcasting offsets live in local files, one per client.
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 2);
}

/// Cross-shard hops the broker counted so far.
fn broker_hops(broker: &ServerProcess) -> u64 {
    use thruster_client::protocol::body::{decode_lenient, KvTable};
    use thruster_client::protocol::header::EmptyHeader;
    use thruster_client::protocol::{request_code as rc, RemotingCommand};
    let mut client = thruster_tests::Client::connect(broker.addr);
    let info = client.invoke(RemotingCommand::request(
        rc::GET_BROKER_RUNTIME_INFO,
        &EmptyHeader {},
    ));
    let table: KvTable = decode_lenient("runtime info", &info.body).unwrap();
    table.table["crossShardHops"].parse().unwrap()
}

/// Sends 40 messages over the topic's queues, pulls them all and commits an offset per queue.
async fn workload(ns: &str, topic: &str, shard_aware: bool) {
    let mut client = ClientConfig::new(ns).unwrap();
    client.shard_aware = shard_aware;
    let producer = Producer::new(ProducerConfig {
        client: client.clone(),
        ..ProducerConfig::new("hops-producer", ns).unwrap()
    });
    for i in 0..40 {
        producer
            .send(Message::new(topic, format!("m-{i}")))
            .await
            .unwrap();
    }
    let consumer = PullConsumer::new("hops-group", client);
    let got = pull_everything(&consumer, topic).await;
    assert_eq!(
        got.len(),
        41,
        "the 40 and the message that created the topic"
    );
    for queue in consumer.queues(topic).await.unwrap() {
        consumer.commit_offset(&queue, 1).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_aware_requests_never_cross_cores_and_plain_ones_do() {
    // One broker name for the process (not the default): its queues are spread over the
    // shards, which the shard-aware client follows and a plain one does not.
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &["brokerPerShard=false"]);
    let ns = namesrv.addr.to_string();
    // Create the topics first (auto-creation itself is not a client request hop).
    let setup = Producer::new(ProducerConfig::new("hops-setup", &ns).unwrap());
    setup.send(Message::new("HopsAware", "x")).await.unwrap();
    setup.send(Message::new("HopsPlain", "x")).await.unwrap();
    let before = broker_hops(&broker);
    workload(&ns, "HopsAware", true).await;
    let after_aware = broker_hops(&broker);
    assert_eq!(
        after_aware, before,
        "a shard-aware client's requests all land on their owner"
    );
    workload(&ns, "HopsPlain", false).await;
    let after_plain = broker_hops(&broker);
    assert!(
        after_plain > after_aware,
        "a plain client's requests to another shard's queues hop ({after_aware} -> {after_plain})"
    );
}

#[test]
fn the_glommio_front_end_sends_and_pulls_on_owner_shards() {
    let (namesrv, broker) = start();
    let ns = namesrv.addr.to_string();
    let before = broker_hops(&broker);
    let bodies = thruster_client::glommio::run_on_reactor(None, 1 << 20, move || async move {
        let client =
            thruster_client::glommio::Client::new(ClientConfig::new(&ns).unwrap(), "glommio-group");
        for i in 0..40 {
            let result = client
                .send(&Message::new("GlommioTopic", format!("g-{i}")))
                .await
                .unwrap();
            assert_eq!(result.status, SendStatus::SendOk);
        }
        client
            .send_oneway(&Message::new("GlommioTopic", "oneway"))
            .await
            .unwrap();
        let mut bodies = BTreeSet::new();
        for _ in 0..100 {
            bodies.clear();
            for queue in client.queues("GlommioTopic").await.unwrap() {
                let mut offset = 0;
                loop {
                    let result = client.pull(&queue, "*", offset, 32, None).await.unwrap();
                    for m in &result.messages {
                        bodies.insert(String::from_utf8(m.body.to_vec()).unwrap());
                    }
                    offset = result.next_begin_offset;
                    if result.status != PullStatus::Found {
                        break;
                    }
                }
            }
            if bodies.len() == 41 {
                break;
            }
            // The one-way send is not acknowledged; give it a moment (nothing else runs on
            // this test reactor).
            std::thread::sleep(Duration::from_millis(10));
        }
        bodies
    })
    .unwrap();
    let mut expected: BTreeSet<String> = (0..40).map(|i| format!("g-{i}")).collect();
    expected.insert("oneway".into());
    assert_eq!(bodies, expected);
    // Even the first send (to the auto-create template's queues) went to the owner shard.
    assert_eq!(broker_hops(&broker), before, "no request crossed cores");
}

/// Pulls answered with frames far larger than the glommio front end's 64 KiB read chunk (read
/// straight into place) give every message exactly as sent, and the in-place view of each one
/// holds what the decoding pull gives for it.
#[test]
fn large_pulls_read_in_place_hold_what_was_sent() {
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    const MESSAGES: usize = 60;
    let body_of = |i: usize| format!("{i:04}-").repeat(5_000).into_bytes(); // 25 KB
    let (sent, pulled) =
        thruster_client::glommio::run_on_reactor(None, 1 << 20, move || async move {
            let client = thruster_client::glommio::Client::new(
                ClientConfig::new(&ns).unwrap(),
                "large-group",
            );
            let mut sent = BTreeSet::new();
            for i in 0..MESSAGES {
                let message = Message::new("LargePulls", body_of(i))
                    .with_tags(["even", "odd"][i % 2])
                    .with_key(format!("key-{i}"));
                let result = client.send(&message).await.unwrap();
                assert_eq!(result.status, SendStatus::SendOk);
                sent.insert((result.msg_id, i));
            }
            let mut pulled = BTreeSet::new();
            let mut largest_frame_bytes = 0;
            for queue in client.queues("LargePulls").await.unwrap() {
                let mut offset = 0;
                loop {
                    let view = client
                        .pull_view(&queue, "*", offset, 1024, None)
                        .await
                        .unwrap();
                    let eager = client.pull(&queue, "*", offset, 1024, None).await.unwrap();
                    assert_eq!(view.status, eager.status);
                    assert_eq!(view.next_begin_offset, eager.next_begin_offset);
                    assert_eq!(view.messages.len(), eager.messages.len());
                    largest_frame_bytes = largest_frame_bytes.max(
                        view.messages
                            .iter()
                            .map(|m| m.record().total_size())
                            .sum::<usize>(),
                    );
                    for (view, ext) in view.messages.iter().zip(&eager.messages) {
                        assert_eq!(view.msg_id(), ext.msg_id);
                        assert_eq!(view.offset_msg_id(), ext.offset_msg_id);
                        assert_eq!(view.queue_offset(), ext.queue_offset);
                        assert_eq!(view.body(), ext.body);
                        assert_eq!(view.properties(), ext.properties);
                        assert_eq!(view.keys(), ext.keys());
                        let i: usize = std::str::from_utf8(&view.body()[..4])
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert_eq!(view.body(), body_of(i), "message {i}");
                        assert_eq!(view.tags(), Some(["even", "odd"][i % 2]));
                        assert_eq!(view.keys(), [format!("key-{i}")]);
                        pulled.insert((view.msg_id().into_owned(), i));
                    }
                    offset = view.next_begin_offset;
                    if view.status != PullStatus::Found {
                        break;
                    }
                }
            }
            assert!(
                largest_frame_bytes > 2 * 64 * 1024,
                "some pull carried several read chunks ({largest_frame_bytes} bytes)"
            );
            (sent, pulled)
        })
        .unwrap();
    assert_eq!(sent.len(), MESSAGES);
    assert_eq!(pulled, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_name_server_is_skipped_for_a_live_one() {
    let (namesrv, _broker) = start();
    // Port 1 on loopback refuses connections: the client must fail over to the next.
    let addrs = format!("127.0.0.1:1;{}", namesrv.addr);
    let producer = Producer::new(ProducerConfig::new("failover-producer", &addrs).unwrap());
    let result = producer.send(Message::new("Failover", "x")).await.unwrap();
    assert_eq!(result.status, SendStatus::SendOk);
    let consumer = PullConsumer::new("failover-group", ClientConfig::new(&addrs).unwrap());
    let got = pull_everything(&consumer, "Failover").await;
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_comes_back_through_the_retry_topic() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // Level 3 (the first retry) is 1 s here, so the test does not wait RocketMQ's 10 s.
    let _broker = ServerProcess::broker(namesrv.addr, 2, &["messageDelayLevel=1s 1s 1s 1s"]);
    let ns = namesrv.addr.to_string();
    let home = tempfile::tempdir().unwrap();
    let topic = "NativeRetry";
    let producer = Producer::new(ProducerConfig::new("retry-producer", &ns).unwrap());
    create_topic(&producer, topic).await;
    let mut config = PushConsumerConfig::new("retry-group", &ns).unwrap();
    config.local_offset_dir = home.path().to_path_buf();
    config.rebalance_interval = Duration::from_millis(500);
    let consumer = PushConsumer::new(config);
    consumer.subscribe(topic, "*");
    // (body, topic as delivered, reconsume times)
    let seen: Arc<Mutex<Vec<(String, String, i32)>>> = Arc::default();
    let sink = seen.clone();
    consumer
        .start(move |messages| {
            let mut sink = sink.lock().unwrap();
            let mut result = ConsumeResult::Success;
            for m in messages {
                let body = String::from_utf8(m.body.to_vec()).unwrap();
                if body.starts_with("fail-once") && m.reconsume_times == 0 {
                    result = ConsumeResult::ReconsumeLater;
                }
                sink.push((body, m.topic.clone(), m.reconsume_times));
            }
            result
        })
        .await
        .unwrap();
    wait_for("the consumer to hold the topic's queues", || {
        consumer.assigned_queues().iter().any(|q| q.topic == topic)
    })
    .await;
    producer
        .send(Message::new(topic, "fail-once"))
        .await
        .unwrap();
    wait_for("the retry", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|m| m.0 == "fail-once" && m.2 == 1)
    })
    .await;
    let retried: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.0 == "fail-once")
        .cloned()
        .collect();
    assert_eq!(
        retried.len(),
        2,
        "delivered, failed, delivered again: {retried:?}"
    );
    assert_eq!(
        retried[1].1, topic,
        "the original topic is restored from RETRY_TOPIC"
    );
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_offset_reset_makes_the_push_consumer_read_again_from_there() {
    use thruster_client::protocol::header::admin::ResetOffsetRequestHeader;
    use thruster_client::protocol::{request_code, response_code, RemotingCommand};
    let (namesrv, _broker) = start();
    let ns = namesrv.addr.to_string();
    let home = tempfile::tempdir().unwrap();
    let topic = "NativeReset";
    let producer = Producer::new(ProducerConfig::new("native-reset-producer", &ns).unwrap());
    create_topic(&producer, topic).await;
    let (consumer, got) = push_consumer(
        &ns,
        "reset-group",
        topic,
        "r",
        MessageModel::Clustering,
        home.path(),
    )
    .await;
    wait_for("the queues assigned", || {
        consumer
            .assigned_queues()
            .iter()
            .filter(|q| q.topic == topic)
            .count()
            == AUTO_CREATED_QUEUES
    })
    .await;
    let sent = produce(&producer, topic, "once", 20).await;
    wait_for("20 consumed", || bodies_with(&got, "once-").len() == 20).await;
    // mqadmin resetOffsetByTime: every broker of the topic, back to the start (timestamp 0).
    // A broker refuses until the group has committed there (the client commits every 200 ms).
    let route = thruster_tests::route(namesrv.addr, topic).unwrap();
    for broker in &route.broker_datas {
        let addr: std::net::SocketAddr = broker.master_addr().unwrap().parse().unwrap();
        let reset = move || {
            let request = RemotingCommand::request(
                request_code::INVOKE_BROKER_TO_RESET_OFFSET,
                &ResetOffsetRequestHeader {
                    topic: topic.into(),
                    group: "reset-group".into(),
                    timestamp: 0,
                    is_force: true,
                },
            );
            thruster_tests::Client::connect(addr).invoke(request).code
        };
        let done = tokio::task::spawn_blocking(move || {
            thruster_tests::wait_until(Duration::from_secs(30), || {
                reset() == response_code::SUCCESS
            })
        })
        .await
        .unwrap();
        assert!(done, "{addr} took the reset");
    }
    // Every message comes again, exactly once more.
    wait_for("20 consumed again", || {
        bodies_with(&got, "once-").len() == 40
    })
    .await;
    let again = bodies_with(&got, "once-");
    for body in &sent {
        assert_eq!(again.iter().filter(|(b, _)| b == body).count(), 2, "{body}");
    }
    consumer.shutdown().await;
}
