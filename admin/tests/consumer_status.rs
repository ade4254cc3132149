//! `thruster-admin consumerStatus` against a real name server, a two-shard broker and a native
//! push consumer: the broker forwards GET_CONSUMER_RUNNING_INFO to the consumer, and what comes
//! back is what the consumer really holds (its subscriptions, its queues and their offsets).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use thruster_client::tokio::{
    ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig,
};
use thruster_tests::{wait_until, ServerProcess};

mod common;
use common::{admin, admin_json};

const TOPIC: &str = "StatusT";
const GROUP: &str = "StatusG";
const MESSAGES: usize = 20;

/// The first broker of the group (its retry topic's route), as thruster-admin finds it.
fn broker_addr_of(ns: &ServerProcess) -> String {
    let route = admin_json(ns, &["topicRoute", "-t", &format!("%RETRY%{GROUP}")]);
    route["brokerDatas"][0]["brokerAddrs"]["0"]
        .as_str()
        .unwrap_or_else(|| panic!("a master in {route}"))
        .to_owned()
}

/// INVOKE_BROKER_TO_GET_CONSUMER_STATUS of GROUP in TOPIC, through the broker at `addr`.
fn consumer_offsets(addr: &str) -> thruster_client::protocol::body::admin::GetConsumerStatusBody {
    use thruster_client::protocol::body::admin::GetConsumerStatusBody;
    use thruster_client::protocol::header::admin::TopicGroupRequestHeader;
    use thruster_client::protocol::{request_code as rc, RemotingCommand};
    let mut client = thruster_tests::Client::connect(addr.parse().unwrap());
    let response = client.invoke(RemotingCommand::request(
        rc::INVOKE_BROKER_TO_GET_CONSUMER_STATUS,
        &TopicGroupRequestHeader {
            topic: TOPIC.into(),
            group: GROUP.into(),
            client_addr: None,
        },
    ));
    assert_eq!(response.code, 0, "{:?}", response.remark);
    GetConsumerStatusBody::decode(&response.body).unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn consumer_status_shows_what_a_native_push_consumer_holds() {
    let ns = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let _broker = ServerProcess::broker(ns.addr, 2, &[]);
    let ns_addr = ns.addr.to_string();
    admin_json(
        &ns,
        &[
            "updateTopic",
            "-c",
            "DefaultCluster",
            "-t",
            TOPIC,
            "-r",
            "4",
            "-w",
            "4",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Sent messages per (broker name, queue id): what each queue's consumed offset must reach.
    let mut sent: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let producer = Producer::new(ProducerConfig::new("StatusP", &ns_addr).unwrap());
    runtime.block_on(async {
        for i in 0..MESSAGES {
            let result = producer
                .send(Message::new(TOPIC, format!("m{i}")).with_tags("TagA"))
                .await
                .unwrap();
            *sent
                .entry((result.queue.broker_name, result.queue.queue_id))
                .or_default() += 1;
        }
    });
    let consumed = Arc::new(AtomicUsize::new(0));
    let mut config = PushConsumerConfig::new(GROUP, &ns_addr).unwrap();
    config.consume_from = ConsumeFromWhere::FirstOffset;
    config.offset_commit_interval = Duration::from_millis(200);
    let consumer = PushConsumer::new(config);
    consumer.subscribe(TOPIC, "TagA || TagB");
    let before_start = now_ms();
    let counter = consumed.clone();
    runtime
        .block_on(consumer.start(move |messages| {
            counter.fetch_add(messages.len(), Ordering::SeqCst);
            ConsumeResult::Success
        }))
        .unwrap();
    let after_start = now_ms();
    assert!(
        wait_until(Duration::from_secs(30), || consumed.load(Ordering::SeqCst)
            == MESSAGES),
        "consumed {} of {MESSAGES}",
        consumed.load(Ordering::SeqCst)
    );
    let client_id = consumer.client_id().to_owned();

    let info = admin_json(&ns, &["consumerStatus", "-g", GROUP, "-i", &client_id]);
    // Properties: Java's keys with this consumer's values.
    let props = &info["properties"];
    assert_eq!(props["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY", "{info}");
    assert_eq!(props["PROP_CONSUMEORDERLY"], "false");
    assert_eq!(props["PROP_NAMESERVER_ADDR"], format!("{ns_addr};"));
    assert_eq!(props["consumerGroup"], GROUP);
    assert_eq!(props["consumeFromWhere"], "CONSUME_FROM_FIRST_OFFSET");
    let started: i64 = props["PROP_CONSUMER_START_TIMESTAMP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((before_start..=after_start).contains(&started), "{started}");
    // Subscriptions: the topic with its expression, and the group's retry topic.
    let subscriptions: BTreeSet<(String, String)> = info["subscriptionSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["topic"].as_str().unwrap().to_owned(),
                s["subString"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (TOPIC.to_owned(), "TagA || TagB".to_owned()),
        (format!("%RETRY%{GROUP}"), "*".to_owned()),
    ]
    .into();
    assert_eq!(subscriptions, expected);
    // Queues: exactly those the consumer holds; each topic queue consumed to its end.
    let queues = info["mqTable"].as_array().unwrap();
    let reported: BTreeSet<(String, String, i64)> = queues
        .iter()
        .map(|q| {
            let mq = &q["messageQueue"];
            (
                mq["topic"].as_str().unwrap().to_owned(),
                mq["brokerName"].as_str().unwrap().to_owned(),
                mq["queueId"].as_i64().unwrap(),
            )
        })
        .collect();
    let held: BTreeSet<(String, String, i64)> = consumer
        .assigned_queues()
        .into_iter()
        .map(|q| (q.topic, q.broker_name, i64::from(q.queue_id)))
        .collect();
    assert_eq!(reported, held);
    assert_eq!(
        held.iter().filter(|q| q.0 == TOPIC).count(),
        4,
        "the topic's 4 queues, spread over the shard-brokers"
    );
    for q in queues
        .iter()
        .filter(|q| q["messageQueue"]["topic"] == TOPIC)
    {
        let mq = &q["messageQueue"];
        let key = (
            mq["brokerName"].as_str().unwrap().to_owned(),
            mq["queueId"].as_i64().unwrap() as i32,
        );
        let expected = sent.get(&key).copied().unwrap_or(0);
        let pq = &q["processQueueInfo"];
        assert_eq!(pq["commitOffset"], expected, "{key:?}: {q}");
        assert_eq!(pq["cachedMsgCount"], 0, "nothing left in the buffer: {q}");
        assert_eq!(pq["droped"], false);
        if expected > 0 {
            assert!(
                pq["lastConsumeTimestamp"].as_i64().unwrap() >= started,
                "{q}"
            );
            assert!(pq["lastPullTimestamp"].as_i64().unwrap() >= started, "{q}");
        }
    }
    // Rates: every message accepted within the last minute.
    let status = &info["statusTable"][TOPIC];
    let ok_per_minute = status["consumeOKTPS"].as_f64().unwrap() * 60.0;
    assert_eq!(ok_per_minute.round() as usize, MESSAGES, "{status}");
    assert_eq!(status["consumeFailedMsgs"], 0);
    assert!(info["jstack"].is_null(), "no task dump unless asked");

    // The group view: one consumer, the same subscription.
    let group = admin_json(&ns, &["consumerStatus", "-g", GROUP]);
    assert_eq!(group["consumers"].as_array().unwrap().len(), 1, "{group}");
    assert_eq!(group["consumers"][0]["clientId"], client_id.as_str());
    assert_eq!(group["sameSubscription"], true);

    // -s: the task dump names every queue's puller.
    let (ok, text, stderr) = admin(
        &ns,
        &["consumerStatus", "-g", GROUP, "-i", &client_id, "-s"],
    );
    assert!(ok, "{stderr}");
    assert!(text.contains("#Consumer jstack#"), "{text}");
    for (topic, broker, queue) in &held {
        let line = format!("\"puller {topic}@{broker}@{queue}\" RUNNABLE");
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(text.contains("#Consumer Subscription#") && text.contains("TagA || TagB"));

    // INVOKE_BROKER_TO_GET_CONSUMER_STATUS (mqadmin getConsumerStatus): the broker asks the
    // consumer, which answers with the offsets of the topic's queues it holds.
    let statuses = consumer_offsets(&broker_addr_of(&ns));
    let mine = &statuses.consumer_table[&client_id];
    let expected: BTreeMap<(String, i32), i64> = consumer
        .assigned_queues()
        .into_iter()
        .filter(|q| q.topic == TOPIC)
        .map(|q| {
            let sent_here = sent
                .get(&(q.broker_name.clone(), q.queue_id))
                .copied()
                .unwrap_or(0);
            ((q.broker_name, q.queue_id), sent_here)
        })
        .collect();
    let answered: BTreeMap<(String, i32), i64> = mine
        .iter()
        .map(|(q, offset)| ((q.broker_name.clone(), q.queue_id), *offset))
        .collect();
    assert_eq!(answered, expected);

    // A client id that is not in the group: the broker's reason.
    let (ok, _, stderr) = admin(&ns, &["consumerStatus", "-g", GROUP, "-i", "nobody@1"]);
    assert!(!ok && stderr.contains("not online"), "{stderr}");

    // statsAll: the brokers' stats items count every message in and out; once the consumer
    // has committed, nothing is left behind. With -a only topics with traffic show.
    let mut row = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            row = admin_json(&ns, &["statsAll", "-t", TOPIC])[0].clone();
            row["accumulation"] == 0
        }),
        "{row}"
    );
    assert_eq!(row["group"], GROUP);
    assert_eq!(row["inMsg24Hour"], MESSAGES as i64, "{row}");
    assert_eq!(row["outMsg24Hour"], MESSAGES as i64, "{row}");
    assert!(row["inTps"].as_f64().unwrap() > 0.0);
    let active = admin_json(&ns, &["statsAll", "-a"]);
    let topics: BTreeSet<&str> = active
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, [TOPIC].into());

    runtime.block_on(consumer.shutdown());
}
