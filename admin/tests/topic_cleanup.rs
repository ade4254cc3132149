//! `thruster-admin deleteTopic` and `cleanUnusedTopic` against a real two-shard broker: a
//! deleted topic's ConsumeQueue directories are gone from every shard's store, a re-created
//! topic starts at offset 0 (also after a kill and the CommitLog replay that follows), and the
//! queues a kill leaves behind a deletion are removed by CLEAN_UNUSED_TOPIC.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thruster_client::tokio::{
    ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig, PushConsumer,
    PushConsumerConfig,
};
use thruster_tests::{wait_until, ServerProcess};

mod common;
use common::{admin, admin_json};

/// Every `consumequeue/<shard>/<topic>` directory under `root`.
fn queue_dirs(root: &Path, topic: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let in_queue_tree = path
                .ancestors()
                .any(|a| a.file_name().is_some_and(|n| n == "consumequeue"));
            if in_queue_tree && path.file_name().is_some_and(|n| n == topic) {
                found.push(path);
            } else {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The shard directories (`consumequeue/<shard>`) holding `topic`'s queues.
fn shards_holding(root: &Path, topic: &str) -> BTreeSet<String> {
    queue_dirs(root, topic)
        .iter()
        .filter_map(|d| Some(d.parent()?.file_name()?.to_str()?.to_owned()))
        .collect()
}

fn update_topic(ns: &ServerProcess, topic: &str) {
    admin_json(
        ns,
        &[
            "updateTopic",
            "-c",
            "DefaultCluster",
            "-t",
            topic,
            "-r",
            "4",
            "-w",
            "4",
        ],
    );
}

fn delete_topic(ns: &ServerProcess, topic: &str) {
    admin_json(ns, &["deleteTopic", "-c", "DefaultCluster", "-t", topic]);
}

/// Sends `bodies` to `topic`; the queue offset each got.
fn send_all(
    runtime: &tokio::runtime::Runtime,
    ns: &ServerProcess,
    topic: &str,
    bodies: &[String],
) -> Vec<i64> {
    let producer = Producer::new(ProducerConfig::new("CleanupP", &ns.addr.to_string()).unwrap());
    runtime.block_on(async {
        let mut offsets = Vec::new();
        for body in bodies {
            let sent = producer
                .send(Message::new(topic, body.clone()))
                .await
                .unwrap();
            offsets.push(sent.queue_offset);
        }
        producer.shutdown().await;
        offsets
    })
}

/// Σ maxOffset over the topic's queues (topicStatus).
fn stored(ns: &ServerProcess, topic: &str) -> i64 {
    let status = admin_json(ns, &["topicStatus", "-t", topic]);
    status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["maxOffset"].as_i64().unwrap())
        .sum()
}

/// Takes `topic` out of the broker's `topics.json` (RocketMQ's `topicConfigTable`).
fn forget_topic(root: &Path, topic: &str) {
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "topics.json") {
                files.push(path);
            }
        }
    }
    assert_eq!(files.len(), 1, "one topics.json: {files:?}");
    let mut table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let removed = table["topicConfigTable"]
        .as_object_mut()
        .unwrap()
        .remove(topic);
    assert!(removed.is_some(), "{topic} was in {}", files[0].display());
    std::fs::write(&files[0], serde_json::to_vec(&table).unwrap()).unwrap();
}

fn bodies(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn deleted_topics_leave_no_consume_queues() {
    let ns = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // SYNC_FLUSH: every acknowledged message survives the kill below (its replay is what
    // brings a deleted topic's queues back).
    let broker = ServerProcess::broker(ns.addr, 2, &["flushDiskType=SYNC_FLUSH"]);
    let root = broker.dir.path().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // A topic with queues on both shards.
    update_topic(&ns, "GoneT");
    send_all(&runtime, &ns, "GoneT", &bodies("old", 8));
    let both: BTreeSet<String> = ["0".to_owned(), "1".to_owned()].into();
    assert_eq!(shards_holding(&root, "GoneT"), both);

    // deleteTopic: no directory of it is left on any shard.
    delete_topic(&ns, "GoneT");
    assert_eq!(queue_dirs(&root, "GoneT"), Vec::<PathBuf>::new());

    // Re-created: every send lands at offset 0 of its queue, and a consumer gets exactly the
    // new messages.
    update_topic(&ns, "GoneT");
    let fresh = bodies("new", 4);
    assert_eq!(send_all(&runtime, &ns, "GoneT", &fresh), [0, 0, 0, 0]);
    assert_eq!(stored(&ns, "GoneT"), 4);
    // Its stats items went with it: the day's count is the new topic's.
    let stats = admin_json(&ns, &["statsAll", "-t", "GoneT"]);
    assert_eq!(stats[0]["inMsg24Hour"], 4, "{stats}");
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut config = PushConsumerConfig::new("CleanupG", &ns.addr.to_string()).unwrap();
    config.consume_from = ConsumeFromWhere::FirstOffset;
    let consumer = PushConsumer::new(config);
    consumer.subscribe("GoneT", "*");
    let sink = received.clone();
    runtime
        .block_on(consumer.start(move |messages| {
            let mut sink = sink.lock().unwrap();
            sink.extend(
                messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
            ConsumeResult::Success
        }))
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || received
        .lock()
        .unwrap()
        .len()
        >= fresh.len()));
    runtime.block_on(consumer.shutdown());
    let got: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
    assert_eq!(got, fresh.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(received.lock().unwrap().len(), fresh.len());

    // A kill: recovery replays the CommitLog, GoneT's old records included.
    update_topic(&ns, "KeptT");
    send_all(&runtime, &ns, "KeptT", &bodies("kept", 6));
    update_topic(&ns, "OrphanT");
    send_all(&runtime, &ns, "OrphanT", &bodies("orphan", 6));
    let mut broker = broker;
    broker.kill();
    // The kill struck between the table's write and the queues' deletion: the table no longer
    // has the topic, its queues are still there.
    forget_topic(&root, "OrphanT");
    let broker = broker.restart();
    let root = broker.dir.path().to_owned();
    assert!(
        !queue_dirs(&root, "OrphanT").is_empty(),
        "the orphans are there"
    );
    assert!(wait_until(Duration::from_secs(30), || {
        let (ok, out, _) = admin(&ns, &["--json", "clusterList"]);
        ok && serde_json::from_str::<serde_json::Value>(&out)
            .map(|v| v.as_array().map_or(0, Vec::len) == 2)
            .unwrap_or(false)
    }));

    // The replay dispatched none of GoneT's records from before its deletion: its queues hold
    // the 4 new messages only.
    assert_eq!(stored(&ns, "GoneT"), 4);

    // cleanUnusedTopic: the orphans go, known topics stay whole.
    let cleaned = admin_json(&ns, &["cleanUnusedTopic", "-c", "DefaultCluster"]);
    assert_eq!(cleaned["brokers"].as_array().unwrap().len(), 2, "{cleaned}");
    assert_eq!(queue_dirs(&root, "OrphanT"), Vec::<PathBuf>::new());
    assert_eq!(shards_holding(&root, "KeptT"), both);
    assert_eq!(stored(&ns, "KeptT"), 6);
}
