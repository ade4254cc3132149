//! Request-reply between two native clients through a real two-shard broker: every request
//! gets its own reply (pushed to the requester's connection, wherever the broker serves it),
//! replies are also stored in the reply topic, and a request nobody answers times out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use thruster_client::tokio::{
    ClientConfig, ClientError, ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig,
    PullConsumer, PushConsumer, PushConsumerConfig,
};
use thruster_tests::ServerProcess;

/// Every body in every queue of `topic`.
async fn bodies(consumer: &PullConsumer, topic: &str) -> BTreeSet<String> {
    thruster_tests::pull_bodies(consumer, topic)
        .await
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_their_replies_and_unanswered_ones_time_out() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let ns = namesrv.addr.to_string();
    let topic = "RequestTopic";
    let config = |group: &str, name: &str| {
        let mut config = ProducerConfig::new(group, &ns).unwrap();
        config.client = config.client.with_instance_name(name);
        config
    };
    let requester = Producer::new(config("requester-group", "requester"));
    // The first send creates the topic, so the responder's consumer finds its route.
    requester.send(Message::new(topic, "create")).await.unwrap();

    // The responder: a push consumer whose listener hands requests to a replying task.
    let responder = Producer::new(config("responder-group", "responder"));
    let mut consumer_config = PushConsumerConfig::new("responder-consumers", &ns).unwrap();
    consumer_config.client = consumer_config.client.with_instance_name("responder");
    consumer_config.consume_from = ConsumeFromWhere::FirstOffset;
    consumer_config.rebalance_interval = Duration::from_millis(500);
    let consumer = PushConsumer::new(consumer_config);
    consumer.subscribe(topic, "*");
    let (requests_tx, mut requests_rx) = tokio::sync::mpsc::unbounded_channel();
    consumer
        .start(move |messages| {
            for message in messages {
                let _ = requests_tx.send(message.clone());
            }
            ConsumeResult::Success
        })
        .await
        .unwrap();
    let replying = responder.clone();
    let replier = tokio::spawn(async move {
        while let Some(request) = requests_rx.recv().await {
            if request.property("CORRELATION_ID").is_none() {
                continue; // the topic-creating message: not a request
            }
            let body = format!("re:{}", String::from_utf8_lossy(&request.body));
            replying.reply(&request, body).await.unwrap();
        }
    });

    // Concurrent requests, each answered with its own reply.
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let requester = requester.clone();
            tokio::spawn(async move {
                let body = format!("ask-{i}");
                let reply = requester
                    .request(Message::new(topic, body.clone()), Duration::from_secs(20))
                    .await
                    .unwrap();
                (body, reply)
            })
        })
        .collect();
    let mut replies = BTreeSet::new();
    for handle in handles {
        let (body, reply) = handle.await.unwrap();
        assert_eq!(
            String::from_utf8(reply.body.to_vec()).unwrap(),
            format!("re:{body}")
        );
        assert_eq!(reply.topic, "DefaultCluster_REPLY_TOPIC");
        assert_eq!(reply.property("MSG_TYPE"), Some("reply"));
        assert!(reply.property("PUSH_REPLY_TIME").is_some());
        replies.insert(format!("re:{body}"));
    }
    assert_eq!(replies.len(), 10);

    // storeReplyMessageEnable (default): the replies are in the reply topic too, once each.
    let reader = PullConsumer::new("reply-reader", ClientConfig::new(&ns).unwrap());
    assert_eq!(bodies(&reader, "DefaultCluster_REPLY_TOPIC").await, replies);

    // Nobody consumes this topic: the request times out after its timeout, not before.
    let started = Instant::now();
    let error = requester
        .request(
            Message::new("NobodyAnswers", "hello?"),
            Duration::from_millis(800),
        )
        .await
        .expect_err("no reply");
    assert!(
        matches!(
            error,
            ClientError::RequestTimeout {
                timeout_ms: 800,
                ..
            }
        ),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A reply to a requester that is gone is refused by the broker, not lost silently.
    let mut request = None;
    for queue in reader.queues(topic).await.unwrap() {
        let result = reader.pull(&queue, "*", 0, 1, None).await.unwrap();
        if let Some(message) = result.messages.into_iter().next() {
            request = Some(message);
            break;
        }
    }
    let mut request = request.expect("the topic holds the requests");
    request
        .properties
        .insert("REPLY_TO_CLIENT".into(), "127.0.0.1@gone".into());
    request
        .properties
        .insert("CLUSTER".into(), "DefaultCluster".into());
    let error = responder
        .reply(&request, "late")
        .await
        .expect_err("no such requester");
    assert_eq!(error.response_code(), Some(1), "{error}");
    replier.abort();
    consumer.shutdown().await;
    requester.shutdown().await;
    responder.shutdown().await;
}
