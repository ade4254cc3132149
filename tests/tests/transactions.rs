//! Transactional messages with the native client against a real two-shard broker (each shard
//! a broker with its own half queue): commits, rollbacks, the check-back deciding unknown
//! ones, giving up after `transactionCheckMax` checks, and a SIGKILL between half message and
//! decision. Short check intervals keep it quick; the logic is RocketMQ's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thruster_client::tokio::{
    ClientConfig, LocalTransactionState, Message, ProducerConfig, PullConsumer, TransactionProducer,
};
use thruster_tests::ServerProcess;

const CHECK_SETTINGS: [&str; 3] = [
    "transactionCheckInterval=300",
    "transactionTimeOut=800",
    "transactionCheckMax=3",
];

/// Checks received per message body.
type Checks = Arc<Mutex<BTreeMap<String, u32>>>;

/// What the checker answers for a body, by its prefix.
fn checker_answer(body: &str) -> LocalTransactionState {
    if body.starts_with("unknown-commit") || body.starts_with("kill-commit") {
        LocalTransactionState::Commit
    } else if body.starts_with("unknown-rollback") || body.starts_with("kill-rollback") {
        LocalTransactionState::Rollback
    } else {
        LocalTransactionState::Unknown
    }
}

/// A producer whose checker counts checks in `checks`, and answers (counting those in
/// `answered`) once `answering` is set; until then it answers Unknown. `shard_aware: false`
/// sends everything to the broker's shared port, as any RocketMQ client does.
async fn producer(
    ns: &str,
    shard_aware: bool,
    checks: Checks,
    answered: Checks,
    answering: Arc<Mutex<bool>>,
) -> TransactionProducer {
    let mut config = ProducerConfig::new("tx-producer", ns).unwrap();
    config.client.heartbeat_interval = Duration::from_millis(300);
    config.client.shard_aware = shard_aware;
    TransactionProducer::start(config, move |message| {
        let body = String::from_utf8(message.body.to_vec()).unwrap();
        *checks.lock().unwrap().entry(body.clone()).or_default() += 1;
        if *answering.lock().unwrap() {
            *answered.lock().unwrap().entry(body.clone()).or_default() += 1;
            checker_answer(&body)
        } else {
            LocalTransactionState::Unknown
        }
    })
    .await
    .unwrap()
}

/// Every message body of `topic`, sorted (empty while the topic has no route).
async fn bodies(consumer: &PullConsumer, topic: &str) -> Vec<String> {
    let mut got = thruster_tests::pull_bodies(consumer, topic).await;
    got.sort();
    got
}

/// Polls until `condition` holds, failing the test with `what` after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn recovery_lines(broker: &ServerProcess) -> Vec<String> {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("transactions recovered"))
        .map(str::to_owned)
        .collect()
}

/// Waits for every shard's "transactions recovered" line after the first `earlier` ones (the
/// log is kept across restarts); returns the messages found waiting.
async fn wait_for_recovery(broker: &ServerProcess, earlier: usize, shards: usize) -> usize {
    let mut lines = Vec::new();
    wait_for(
        "transaction recovery",
        Duration::from_secs(20),
        async || {
            lines = recovery_lines(broker);
            lines.len() >= earlier + shards
        },
    )
    .await;
    lines[earlier..]
        .iter()
        .map(|l| {
            let waiting = l.split("waiting=").nth(1).expect("waiting field");
            waiting
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum()
}

fn set(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_checks_make_exactly_the_committed_messages_visible() {
    decisions_and_checks(false).await;
}

/// One broker name: sends and decisions land on any shard and hop to the one that stores the
/// half message; checks go to the producer's connection wherever it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_checks_cross_shards_in_one_name_mode() {
    decisions_and_checks(true).await;
}

async fn decisions_and_checks(one_name: bool) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let mut settings = CHECK_SETTINGS.to_vec();
    if one_name {
        settings.push("brokerPerShard=false");
    }
    let _broker = ServerProcess::broker(namesrv.addr, 2, &settings);
    let ns = namesrv.addr.to_string();
    let checks: Checks = Arc::default();
    let answering = Arc::new(Mutex::new(true));
    let producer = producer(&ns, !one_name, checks.clone(), Checks::default(), answering).await;
    let topic = "TxOrders";
    let local_states = [
        ("commit", LocalTransactionState::Commit),
        ("rollback", LocalTransactionState::Rollback),
        ("unknown-commit", LocalTransactionState::Unknown),
        ("unknown-rollback", LocalTransactionState::Unknown),
        ("silent", LocalTransactionState::Unknown),
    ];
    let mut sent = BTreeMap::new();
    for i in 0..6 {
        for (prefix, state) in local_states {
            let body = format!("{prefix}-{i}");
            let result = producer
                .send_in_transaction(Message::new(topic, body.clone()).with_key(&body), |m, s| {
                    assert_eq!(m.body.as_ref(), body.as_bytes());
                    assert!(!s.offset_msg_id.is_empty());
                    state
                })
                .await
                .unwrap();
            assert!(result.end_error.is_none(), "{body}: {:?}", result.end_error);
            sent.insert(body, result.send);
        }
    }
    let consumer = PullConsumer::new("tx-reader", ClientConfig::new(&ns).unwrap());
    // Committed at once: visible now; nothing else yet (the first check is 800 ms away).
    let committed_now: Vec<String> = set("commit", 6);
    assert_eq!(bodies(&consumer, topic).await, committed_now);

    // The silent producer's messages are the last to be resolved: checked 3 times, then
    // given up. By then every other message was decided long ago.
    let mut expected_given_up = set("silent", 6);
    expected_given_up.sort();
    wait_for(
        "TRANS_CHECK_MAX_TIME_TOPIC",
        Duration::from_secs(30),
        async || bodies(&consumer, "TRANS_CHECK_MAX_TIME_TOPIC").await.len() >= 6,
    )
    .await;
    assert_eq!(
        bodies(&consumer, "TRANS_CHECK_MAX_TIME_TOPIC").await,
        expected_given_up
    );
    let mut expected: Vec<String> = [set("commit", 6), set("unknown-commit", 6)].concat();
    expected.sort();
    assert_eq!(
        bodies(&consumer, topic).await,
        expected,
        "exactly the committed, once each"
    );

    let checks = checks.lock().unwrap().clone();
    for body in set("silent", 6) {
        assert_eq!(
            checks.get(&body),
            Some(&3),
            "{body}: transactionCheckMax checks"
        );
    }
    for body in [set("unknown-commit", 6), set("unknown-rollback", 6)].concat() {
        assert!(checks.get(&body).is_some_and(|&c| c >= 1), "{body} checked");
    }
    for body in [set("commit", 6), set("rollback", 6)].concat() {
        assert_eq!(checks.get(&body), None, "{body} was decided: never checked");
    }

    // A decision for a message decided before is answered and applies nothing.
    for body in ["commit-0", "rollback-0", "unknown-rollback-0", "silent-0"] {
        let error = producer
            .end_transaction(&sent[body], LocalTransactionState::Commit)
            .await
            .expect_err("a second decision is refused");
        assert_eq!(error.response_code(), Some(1), "{body}: {error}");
    }
    assert_eq!(
        bodies(&consumer, topic).await,
        expected,
        "nothing applied twice"
    );
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_message_survives_sigkill_and_is_resolved_once() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    // Fixed ports, so the producer reconnects to the same addresses after the restart;
    // SYNC_FLUSH, so an acknowledged half message is on disk when the process dies.
    let port = thruster_tests::free_port_block(&[0, 2, 10, 12]) + 2;
    let listen = format!("listenPort={port}");
    let settings = [
        listen.as_str(),
        // No slaves here: the HA listeners take free ports, so a restart needs only the above.
        "haListenPort=0",
        "flushDiskType=SYNC_FLUSH",
        "transactionCheckInterval=300",
        "transactionTimeOut=800",
        "transactionCheckMax=1000",
    ];
    let broker = ServerProcess::broker(namesrv.addr, 2, &settings);
    let ns = namesrv.addr.to_string();
    let (checks, answered) = (Checks::default(), Checks::default());
    let answering = Arc::new(Mutex::new(false));
    let producer = producer(
        &ns,
        true,
        checks.clone(),
        answered.clone(),
        answering.clone(),
    )
    .await;
    let topic = "TxKilled";
    let undecided: Vec<String> = [set("kill-commit", 5), set("kill-rollback", 5)].concat();
    for body in &undecided {
        producer
            .send_in_transaction(Message::new(topic, body.clone()), |_, _| {
                LocalTransactionState::Unknown
            })
            .await
            .unwrap();
    }
    for body in set("before-kill", 3) {
        producer
            .send_in_transaction(Message::new(topic, body), |_, _| {
                LocalTransactionState::Commit
            })
            .await
            .unwrap();
    }
    // Let every undecided message be checked once (answered Unknown): the kill then hits
    // messages with check copies, not only first records.
    wait_for(
        "a first check of each",
        Duration::from_secs(20),
        async || {
            let checks = checks.lock().unwrap();
            undecided.iter().all(|b| checks.contains_key(b))
        },
    )
    .await;

    let earlier = recovery_lines(&broker).len();
    let broker = broker.restart(); // SIGKILL, then start again on the same ports
                                   // Recovery found every undecided message waiting (none of the committed ones).
    let recovered = wait_for_recovery(&broker, earlier, 2).await;
    assert_eq!(recovered, undecided.len());
    *answering.lock().unwrap() = true;
    let consumer = PullConsumer::new("tx-killed-reader", ClientConfig::new(&ns).unwrap());
    let mut expected: Vec<String> = [set("before-kill", 3), set("kill-commit", 5)].concat();
    expected.sort();
    wait_for(
        "the committed after restart",
        Duration::from_secs(60),
        async || bodies(&consumer, topic).await.len() >= expected.len(),
    )
    .await;
    assert_eq!(bodies(&consumer, topic).await, expected);
    wait_for(
        "every undecided message answered",
        Duration::from_secs(30),
        async || {
            let answered = answered.lock().unwrap();
            undecided.iter().all(|b| answered.contains_key(b))
        },
    )
    .await;

    // Resolved once: after another kill and restart, a new message is checked (a whole pass
    // ran after recovery) while none of the decided ones is checked again or re-committed.
    let answered: BTreeMap<String, u32> = checks.lock().unwrap().clone();
    let earlier = recovery_lines(&broker).len();
    let broker = broker.restart();
    assert_eq!(
        wait_for_recovery(&broker, earlier, 2).await,
        0,
        "every message was decided: none waits after another restart"
    );
    producer
        .send_in_transaction(Message::new(topic, "probe"), |_, _| {
            LocalTransactionState::Unknown
        })
        .await
        .unwrap();
    wait_for("the probe's check", Duration::from_secs(30), async || {
        checks.lock().unwrap().contains_key("probe")
    })
    .await;
    // The probe is answered Unknown (not a kill-* body): it never becomes visible.
    let after = checks.lock().unwrap().clone();
    for body in &undecided {
        assert_eq!(after.get(body), answered.get(body), "{body} checked again");
    }
    assert_eq!(
        bodies(&consumer, topic).await,
        expected,
        "nothing applied twice"
    );
    producer.shutdown().await;
}
