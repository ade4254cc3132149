//! `thruster-broker` with an unchanged, independent client: the Apache RocketMQ C++ client
//! 2.x from PyPI `rocketmq==0.4.4` (see `thruster_tests::cpp_client`). Each test starts its
//! own name server and a two-shard broker on free ports in the default mode, where each shard
//! is a broker of its own: a topic has queues on both, and the client reaches each directly.
//!
//! Assertions are on exact message sets: what the client acknowledged is what consumers get.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use thruster_client::protocol::body::decode_lenient;
use thruster_client::protocol::{request_code as rc, RemotingCommand};
use thruster_tests::cpp_client::ClientProcess;
use thruster_tests::{wait_until, Client, ServerProcess};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn start_cluster() -> (ServerProcess, ServerProcess) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    (namesrv, broker)
}

/// Runs a producer to completion; returns the bodies it was told were stored.
fn produce(
    namesrv: &ServerProcess,
    topic: &str,
    mode: &str,
    count: usize,
    prefix: &str,
) -> Vec<Value> {
    let ns = namesrv.addr.to_string();
    let count = count.to_string();
    let producer = ClientProcess::start(&["produce", &ns, topic, mode, &count, prefix]);
    let events = producer.until("done", CLIENT_TIMEOUT);
    producer.finish();
    let sent: Vec<Value> = events
        .into_iter()
        .filter(|e| e["event"] == "sent")
        .collect();
    for event in &sent {
        assert_eq!(event["status"], 0, "{mode} send not OK: {event}");
    }
    sent
}

/// The brokers of `topic`'s route in shard order: address and write queues.
fn broker_queues(namesrv: &ServerProcess, topic: &str) -> Vec<(std::net::SocketAddr, i32)> {
    thruster_tests::route_brokers(namesrv.addr, topic)
        .into_iter()
        .map(|b| (b.addr, b.write_queues))
        .collect()
}

/// (shard, queue id).
type QueueKey = (i64, i64);

/// The queue a received message came from: (shard, queue id). With a broker per shard two
/// brokers have a queue 0; Thruster's CommitLog offsets carry the shard in their top byte,
/// and the C++ client reports the offset (it does not report the broker's name).
fn queue_of(event: &Value) -> QueueKey {
    let commit_log_offset = event["commit_log_offset"]
        .as_i64()
        .expect("commit_log_offset");
    (
        commit_log_offset >> 56,
        event["queue"].as_i64().expect("queue"),
    )
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"].as_str().expect("body").to_owned())
        .collect()
}

fn expected(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Pulls with the C++ pull consumer from offset 0 of every queue until `expect` messages.
fn pull_all(namesrv: &ServerProcess, group: &str, topic: &str, expect: usize) -> Vec<Value> {
    let ns = namesrv.addr.to_string();
    let consumer = ClientProcess::start(&["pull", &ns, group, topic, &expect.to_string(), "60"]);
    let events = consumer.until("done", CLIENT_TIMEOUT);
    consumer.finish();
    events
        .into_iter()
        .filter(|e| e["event"] == "received")
        .collect()
}

#[test]
fn sync_async_oneway_and_batch_sends_are_stored_and_pulled_exactly() {
    let (namesrv, broker) = start_cluster();
    let topic = "CppSendModes";
    let mut all = BTreeSet::new();
    for (mode, count) in [("sync", 20), ("async", 20), ("oneway", 20), ("batch", 10)] {
        let sent = produce(&namesrv, topic, mode, count, mode);
        assert_eq!(
            bodies(&sent).into_iter().collect::<BTreeSet<_>>(),
            expected(mode, count),
            "{mode}: every message acknowledged"
        );
        all.extend(expected(mode, count));
    }
    let received = pull_all(&namesrv, "CppPullGroup", topic, all.len());
    let got = bodies(&received);
    assert_eq!(
        got.len(),
        all.len(),
        "no duplicates, nothing missing: {got:?}"
    );
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), all);
    // The send that created the topic was routed by the template's route, where each shard
    // promises the client's 4 queues: each shard has 4. Sends without a queue were spread
    // over all of them.
    let shard_brokers = broker_queues(&namesrv, topic);
    assert_eq!(
        shard_brokers.len(),
        2,
        "a broker per shard: {shard_brokers:?}"
    );
    assert_eq!(shard_brokers[0].0, broker.addr);
    assert!(shard_brokers.iter().all(|b| b.1 == 4), "{shard_brokers:?}");
    let queues: BTreeSet<QueueKey> = received.iter().map(queue_of).collect();
    assert_eq!(
        queues,
        (0..2).flat_map(|s| (0..4).map(move |q| (s, q))).collect()
    );
    // The unchanged client followed the routes to each shard's own port: both shards stored
    // messages and no request crossed between them.
    for (addr, _) in shard_brokers {
        let mut client = Client::connect(addr);
        let info = client.invoke(RemotingCommand::request(
            rc::GET_BROKER_RUNTIME_INFO,
            &thruster_client::protocol::header::EmptyHeader {},
        ));
        let table: thruster_client::protocol::body::KvTable =
            decode_lenient("runtime info", &info.body).unwrap();
        assert_eq!(table.table["crossShardHops"], "0", "{addr}");
        let puts: u64 = table.table["msgPutTotalTodayNow"].parse().unwrap();
        assert!(puts > 0, "the shard at {addr} stored some of the messages");
    }
}

#[test]
fn ordered_send_by_sharding_key_keeps_each_key_in_one_queue_in_order() {
    let (namesrv, broker) = start_cluster();
    let topic = "CppOrdered";
    // Created before the first send, as an ordered topic must be: auto-created by that send,
    // its route would change under the producer (first TBW102's queues, then the new topic's)
    // and a key would map to another queue part-way, in RocketMQ as here.
    Client::connect(broker.addr).create_topic(topic, 8);
    assert!(wait_until(Duration::from_secs(10), || {
        thruster_tests::route(namesrv.addr, topic).is_some_and(|r| r.broker_datas.len() == 2)
    }));
    let sent = produce(&namesrv, topic, "orderly", 30, "ord");
    let key_of: BTreeMap<String, i64> = sent
        .iter()
        .map(|e| {
            (
                e["body"].as_str().unwrap().to_owned(),
                e["key"].as_i64().unwrap(),
            )
        })
        .collect();
    let received = pull_all(&namesrv, "CppOrderedGroup", topic, 30);
    assert_eq!(
        bodies(&received).into_iter().collect::<BTreeSet<_>>(),
        expected("ord", 30)
    );
    // Per key: one queue, and queue offsets in send order.
    let mut by_key: BTreeMap<i64, Vec<(usize, QueueKey, i64)>> = BTreeMap::new();
    for event in &received {
        let body = event["body"].as_str().unwrap();
        let index: usize = body.trim_start_matches("ord-").parse().unwrap();
        by_key.entry(key_of[body]).or_default().push((
            index,
            queue_of(event),
            event["offset"].as_i64().unwrap(),
        ));
    }
    assert_eq!(by_key.len(), 3);
    for (key, mut messages) in by_key {
        let queues: BTreeSet<QueueKey> = messages.iter().map(|m| m.1).collect();
        assert_eq!(queues.len(), 1, "key {key} spread over {queues:?}");
        messages.sort();
        let offsets: Vec<i64> = messages.iter().map(|m| m.2).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {key}: queue offsets not in send order: {offsets:?}"
        );
    }
}

/// Sends probe messages (one to each of the topic's queues on every broker, by sharding key)
/// until every consumer has received probes and, in the last full round, each queue's probe
/// reached exactly `per_queue` consumers: then assignments have settled.
fn settle_with_probes(
    namesrv: &ServerProcess,
    topic: &str,
    consumers: &[&ClientProcess],
    per_queue: usize,
) {
    let queues: i32 = broker_queues(namesrv, topic).iter().map(|b| b.1).sum();
    let queues = queues as usize;
    for round in 0..40 {
        let prefix = format!("probe{round}");
        produce(namesrv, topic, "each-queue", queues, &prefix);
        let mut reached: BTreeMap<String, usize> = BTreeMap::new();
        let mut everyone = true;
        for consumer in consumers {
            let mut got_any = false;
            // Probes of this round arrive within the long-poll wake-up; wait for the round.
            while let Some(event) = consumer.next(Duration::from_millis(1500)) {
                if let Some(body) = event["body"].as_str() {
                    if body.starts_with(&prefix) {
                        got_any = true;
                        *reached.entry(body.to_owned()).or_default() += 1;
                    }
                }
            }
            everyone &= got_any;
        }
        if everyone && reached.len() == queues && reached.values().all(|&n| n == per_queue) {
            return;
        }
    }
    panic!("consumers did not settle on an assignment");
}

fn received_bodies(events: &[Value], prefix: &str) -> Vec<(String, QueueKey)> {
    events
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| {
            let body = e["body"].as_str()?;
            body.starts_with(prefix)
                .then(|| (body.to_owned(), queue_of(e)))
        })
        .collect()
}

/// Starts two push consumers of `group` on `topic` (`model`: clustering or broadcasting) and
/// waits until the broker knows both.
fn two_push_consumers(
    namesrv: &ServerProcess,
    broker: &ServerProcess,
    group: &str,
    topic: &str,
    model: &str,
) -> (ClientProcess, ClientProcess) {
    let ns = namesrv.addr.to_string();
    let a = ClientProcess::start(&["push", &ns, group, topic, model]);
    let b = ClientProcess::start(&["push", &ns, group, topic, model]);
    a.until("started", CLIENT_TIMEOUT);
    b.until("started", CLIENT_TIMEOUT);
    assert!(
        wait_until(CLIENT_TIMEOUT, || Client::connect(broker.addr)
            .consumer_ids(group)
            .len()
            == 2),
        "both consumers registered with the broker"
    );
    (a, b)
}

#[test]
fn push_clustering_two_consumers_split_the_queues_and_get_every_message_once() {
    let (namesrv, broker) = start_cluster();
    let topic = "CppClustering";
    let group = "CppClusterGroup";
    // The topic exists before the consumers subscribe (4 queues on each shard).
    produce(&namesrv, topic, "sync", 1, "create");
    let (a, b) = two_push_consumers(&namesrv, &broker, group, topic, "clustering");
    settle_with_probes(&namesrv, topic, &[&a, &b], 1);

    produce(&namesrv, topic, "sync", 200, "msg");
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    assert!(
        wait_until(CLIENT_TIMEOUT, || {
            got_a.extend(received_bodies(&a.drain(), "msg-"));
            got_b.extend(received_bodies(&b.drain(), "msg-"));
            got_a.len() + got_b.len() >= 200
        }),
        "only {} + {} of 200 consumed",
        got_a.len(),
        got_b.len()
    );
    a.finish();
    b.finish();
    let all: Vec<String> = got_a.iter().chain(&got_b).map(|m| m.0.clone()).collect();
    assert_eq!(all.len(), 200, "every message exactly once");
    assert_eq!(
        all.into_iter().collect::<BTreeSet<_>>(),
        expected("msg", 200)
    );
    let queues_a: BTreeSet<QueueKey> = got_a.iter().map(|m| m.1).collect();
    let queues_b: BTreeSet<QueueKey> = got_b.iter().map(|m| m.1).collect();
    assert!(
        !queues_a.is_empty() && !queues_b.is_empty(),
        "both consumers got queues"
    );
    assert!(
        queues_a.is_disjoint(&queues_b),
        "a queue went to both consumers: {queues_a:?} / {queues_b:?}"
    );
}

#[test]
fn push_broadcasting_every_consumer_gets_every_message() {
    let (namesrv, broker) = start_cluster();
    let topic = "CppBroadcast";
    let group = "CppBroadcastGroup";
    produce(&namesrv, topic, "sync", 1, "create");
    let (a, b) = two_push_consumers(&namesrv, &broker, group, topic, "broadcasting");
    settle_with_probes(&namesrv, topic, &[&a, &b], 2);

    produce(&namesrv, topic, "sync", 100, "msg");
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    assert!(
        wait_until(CLIENT_TIMEOUT, || {
            got_a.extend(received_bodies(&a.drain(), "msg-"));
            got_b.extend(received_bodies(&b.drain(), "msg-"));
            got_a.len() >= 100 && got_b.len() >= 100
        }),
        "broadcast: {} and {} of 100",
        got_a.len(),
        got_b.len()
    );
    a.finish();
    b.finish();
    for got in [got_a, got_b] {
        let names: Vec<String> = got.into_iter().map(|m| m.0).collect();
        assert_eq!(names.len(), 100, "each consumer gets each message once");
        assert_eq!(
            names.into_iter().collect::<BTreeSet<_>>(),
            expected("msg", 100)
        );
    }
}

#[test]
fn with_auto_created_groups_off_an_existing_group_consumes_as_before() {
    use thruster_client::protocol::body::{encode, SubscriptionGroupConfig};
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &["autoCreateSubscriptionGroup=false"]);
    let topic = "CppStrictGroups";
    let mut admin = Client::connect(broker.addr);
    for group in ["CppStrictPull", "CppStrictPush"] {
        let created = admin.invoke(
            RemotingCommand::request(
                rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
                &thruster_client::protocol::header::EmptyHeader {},
            )
            .with_body(encode(&SubscriptionGroupConfig::named(group))),
        );
        assert_eq!(created.code, 0, "{:?}", created.remark);
    }
    let sent = produce(&namesrv, topic, "sync", 40, "strict");
    assert_eq!(sent.len(), 40);
    let pulled = pull_all(&namesrv, "CppStrictPull", topic, 40);
    let got = bodies(&pulled);
    assert_eq!(got.len(), 40, "no duplicates, nothing missing: {got:?}");
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        expected("strict", 40)
    );

    let (a, b) = two_push_consumers(&namesrv, &broker, "CppStrictPush", topic, "clustering");
    settle_with_probes(&namesrv, topic, &[&a, &b], 1);
    produce(&namesrv, topic, "sync", 100, "msg");
    let mut got = Vec::new();
    assert!(
        wait_until(CLIENT_TIMEOUT, || {
            got.extend(received_bodies(&a.drain(), "msg-"));
            got.extend(received_bodies(&b.drain(), "msg-"));
            got.len() >= 100
        }),
        "only {} of 100 consumed",
        got.len()
    );
    a.finish();
    b.finish();
    let all: Vec<String> = got.into_iter().map(|m| m.0).collect();
    assert_eq!(all.len(), 100, "every message exactly once");
    assert_eq!(
        all.into_iter().collect::<BTreeSet<_>>(),
        expected("msg", 100)
    );
}

#[test]
fn the_broker_asks_a_cpp_consumer_for_its_running_info() {
    use thruster_client::protocol::header::admin::ConsumerClientRequestHeader;
    let (namesrv, broker) = start_cluster();
    let topic = "CppRunningInfo";
    let group = "CppRunningInfoGroup";
    produce(&namesrv, topic, "sync", 1, "create");
    let ns = namesrv.addr.to_string();
    let consumer = ClientProcess::start(&["push", &ns, group, topic, "clustering"]);
    consumer.until("started", CLIENT_TIMEOUT);
    let mut client = Client::connect(broker.addr);
    let mut ids = Vec::new();
    assert!(wait_until(CLIENT_TIMEOUT, || {
        ids = client.consumer_ids(group);
        !ids.is_empty()
    }));
    let ask = |client: &mut Client, client_id: &str| {
        client.invoke(RemotingCommand::request(
            rc::GET_CONSUMER_RUNNING_INFO,
            &ConsumerClientRequestHeader {
                consumer_group: group.into(),
                client_id: Some(client_id.into()),
                jstack_enable: Some(false),
                msg_id: None,
                broker_name: None,
            },
        ))
    };
    // The consumer's own answer comes back through the broker.
    let answer = ask(&mut client, &ids[0]);
    assert_eq!(answer.code, 0, "{:?}", answer.remark);
    // fastjson-shaped (MessageQueue keys are bare objects): read it as the broker reads bodies.
    let info: Value =
        decode_lenient("running info", &answer.body).expect("ConsumerRunningInfo JSON");
    assert!(info.get("properties").is_some(), "{info}");
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.contains(topic),
        "subscribed topic in the running info: {text}"
    );
    // A client that is not in the group: refused with a reason.
    let refused = ask(&mut client, "nobody@1");
    assert_eq!(refused.code, 1);
    assert!(refused.remark.unwrap_or_default().contains("not online"));
    consumer.finish();
}
