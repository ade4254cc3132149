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
