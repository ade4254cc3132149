//! RocketMQ 4.x plain ACL (`aclEnable`, `plain_acl.yml`) on a real two-shard broker, with the
//! native client (tokio and glommio front ends), raw signed requests, and the unchanged C++
//! client (PyPI `rocketmq==0.4.4`, which signs with its own HmacSHA1 code): right signatures
//! accepted, wrong ones refused with NO_PERMISSION (16), per-topic permissions, admin codes,
//! white-listed addresses, and the file reloaded while the broker runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use thruster_client::protocol::acl::{sign, SessionCredentials};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_client::tokio::{
    ClientConfig, ClientError, ConsumeFromWhere, ConsumeResult, Message, Producer, ProducerConfig,
    PullConsumer, PushConsumer, PushConsumerConfig, SendStatus,
};
use thruster_tests::cpp_client::ClientProcess;
use thruster_tests::{wait_until, Client, ServerProcess};

const PRODUCER_AK: &str = "producer-ak";
const PRODUCER_SK: &str = "producer-secret";
const ADMIN_AK: &str = "admin-ak-1";
const ADMIN_SK: &str = "admin-secret";
/// How long a reload may take (the broker polls every 100 ms here).
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The producer account: PUB|SUB on AclOrders, SUB only on AclAudit, nothing elsewhere;
/// consumer groups SUB by default, but none for acl-denied-cg.
fn rules(audit_perm: &str) -> String {
    format!(
        "accounts:\n\
         \x20 - accessKey: {PRODUCER_AK}\n\
         \x20   secretKey: {PRODUCER_SK}\n\
         \x20   whiteRemoteAddress:\n\
         \x20   admin: false\n\
         \x20   defaultTopicPerm: DENY\n\
         \x20   defaultGroupPerm: SUB\n\
         \x20   topicPerms:\n\
         \x20     - AclOrders=PUB|SUB\n\
         \x20     - AclAudit={audit_perm}\n\
         \x20   groupPerms:\n\
         \x20     - acl-denied-cg=DENY\n\
         \x20 - accessKey: {ADMIN_AK}\n\
         \x20   secretKey: {ADMIN_SK}\n\
         \x20   admin: true\n"
    )
}

struct AclCluster {
    namesrv: ServerProcess,
    broker: ServerProcess,
    /// Holds the ACL file.
    _conf: tempfile::TempDir,
    acl_file: PathBuf,
}

fn start(acl_text: &str) -> AclCluster {
    let conf = tempfile::tempdir().expect("temp dir");
    let acl_file = conf.path().join("plain_acl.yml");
    std::fs::write(&acl_file, acl_text).expect("acl file");
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let path_setting = format!("aclFilePath={}", acl_file.display());
    let broker = ServerProcess::broker(
        namesrv.addr,
        2,
        &["aclEnable=true", &path_setting, "aclReloadIntervalMs=100"],
    );
    AclCluster {
        namesrv,
        broker,
        _conf: conf,
        acl_file,
    }
}

/// Replaces the file's content (write to a new file, rename over: the broker never reads a
/// half-written file).
fn rewrite(path: &Path, text: &str) {
    let staging = path.with_extension("yml.new");
    std::fs::write(&staging, text).expect("new acl file");
    std::fs::rename(&staging, path).expect("rename acl file");
}

fn producer(cluster: &AclCluster, group: &str, credentials: Option<(&str, &str)>) -> Producer {
    let mut config = ProducerConfig::new(group, &cluster.namesrv.addr.to_string()).unwrap();
    config.retry_times = 0;
    if let Some((ak, sk)) = credentials {
        config.client = config
            .client
            .with_credentials(SessionCredentials::new(ak, sk));
    }
    Producer::new(config)
}

/// The refusal `result` must be: NO_PERMISSION with a remark containing `why`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, why: &str) {
    match result {
        Err(error @ ClientError::Broker { .. }) => {
            assert_eq!(error.response_code(), Some(response_code::NO_PERMISSION));
            assert!(error.to_string().contains(why), "{error} lacks {why:?}");
        }
        other => panic!("expected a NO_PERMISSION refusal ({why}), got {other:?}"),
    }
}

/// Every body of every queue of `topic` from offset 0, pulled with `config`'s credentials
/// (a refused pull ends its queue: fewer bodies); each body at most once.
async fn pull_all(config: ClientConfig, group: &str, topic: &str) -> BTreeSet<String> {
    let bodies = thruster_tests::pull_bodies(&PullConsumer::new(group, config), topic).await;
    let set: BTreeSet<String> = bodies.iter().cloned().collect();
    assert_eq!(
        set.len(),
        bodies.len(),
        "a message pulled twice: {bodies:?}"
    );
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_signs_and_topic_permissions_hold() {
    let cluster = start(&rules("SUB"));
    let ns = cluster.namesrv.addr.to_string();
    let signed = producer(&cluster, "acl-pg", Some((PRODUCER_AK, PRODUCER_SK)));
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        let body = format!("order-{i}");
        let result = signed
            .send(Message::new("AclOrders", body.clone()))
            .await
            .unwrap();
        assert_eq!(result.status, SendStatus::SendOk);
        sent.insert(body);
    }
    // SUB on AclOrders (listed) and on the group (defaultGroupPerm): the pulls are let in.
    let consumer_config = ClientConfig::new(&ns)
        .unwrap()
        .with_credentials(SessionCredentials::new(PRODUCER_AK, PRODUCER_SK));
    assert_eq!(pull_all(consumer_config, "acl-cg", "AclOrders").await, sent);

    // A group the account may not use: its pulls are refused.
    let denied_config = ClientConfig::new(&ns)
        .unwrap()
        .with_credentials(SessionCredentials::new(PRODUCER_AK, PRODUCER_SK));
    let denied = PullConsumer::new("acl-denied-cg", denied_config);
    let queue = denied.queues("AclOrders").await.unwrap()[0].clone();
    assert_refused(
        denied.pull(&queue, "*", 0, 32, None).await,
        "AccessKey=producer-ak has no SUB permission for group:acl-denied-cg: it has DENY",
    );

    // PUB on a SUB-only topic, and on a topic the account has no permission for.
    assert_refused(
        signed.send(Message::new("AclAudit", "x")).await,
        "AccessKey=producer-ak has no PUB permission for topic:AclAudit: it has SUB",
    );
    assert_refused(
        signed.send(Message::new("AclElsewhere", "x")).await,
        "has no PUB permission for topic:AclElsewhere: it has DENY (defaultTopicPerm)",
    );
    // A wrong secret, no credentials at all, an unknown account.
    let wrong = producer(
        &cluster,
        "acl-pg-wrong",
        Some((PRODUCER_AK, "not-the-secret")),
    );
    assert_refused(
        wrong.send(Message::new("AclOrders", "x")).await,
        "signature check failed for AccessKey=producer-ak",
    );
    // The name server does no ACL (as in RocketMQ 4.x): the unsigned client gets its route
    // and is refused by the broker only.
    let unsigned = producer(&cluster, "acl-pg-none", None);
    assert_refused(
        unsigned.send(Message::new("AclOrders", "x")).await,
        "has no AccessKey",
    );
    let stranger = producer(
        &cluster,
        "acl-pg-stranger",
        Some(("stranger-ak", "whatever")),
    );
    assert_refused(
        stranger.send(Message::new("AclOrders", "x")).await,
        "no account for AccessKey=stranger-ak",
    );
    // Nothing refused was stored.
    let admin_config = ClientConfig::new(&ns)
        .unwrap()
        .with_credentials(SessionCredentials::new(ADMIN_AK, ADMIN_SK));
    assert_eq!(
        pull_all(admin_config, "acl-admin-cg", "AclOrders").await,
        sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_push_consumer_signs_every_request() {
    let cluster = start(&rules("SUB"));
    let ns = cluster.namesrv.addr.to_string();
    let credentials = SessionCredentials::new(PRODUCER_AK, PRODUCER_SK);
    let signed = producer(&cluster, "acl-push-pg", Some((PRODUCER_AK, PRODUCER_SK)));
    let mut sent = BTreeSet::new();
    for i in 0..10 {
        let body = format!("push-{i}");
        signed
            .send(Message::new("AclOrders", body.clone()))
            .await
            .unwrap();
        sent.insert(body);
    }
    // Heartbeats, consumer lists, offsets, pulls, offset commits: all signed, none refused.
    let mut config = PushConsumerConfig::new("acl-push-cg", &ns).unwrap();
    config.client = config.client.with_credentials(credentials);
    config.consume_from = ConsumeFromWhere::FirstOffset;
    let consumer = PushConsumer::new(config);
    consumer.subscribe("AclOrders", "*");
    let received: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sink = received.clone();
    consumer
        .start(move |messages| {
            let mut sink = sink.lock().unwrap();
            for m in messages {
                sink.insert(String::from_utf8(m.body.to_vec()).unwrap());
            }
            ConsumeResult::Success
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + CLIENT_TIMEOUT;
    while *received.lock().unwrap() != sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
    assert_eq!(*received.lock().unwrap(), sent);
    assert!(
        !cluster.broker.log().contains("request refused by ACL"),
        "{}",
        cluster.broker.log()
    );
}

#[test]
fn the_glommio_front_end_signs_too() {
    let cluster = start(&rules("SUB"));
    let ns = cluster.namesrv.addr.to_string();
    let outcomes = thruster_client::glommio::run_on_reactor(None, 1 << 20, move || async move {
        let signed = thruster_client::glommio::Client::new(
            ClientConfig::new(&ns)
                .unwrap()
                .with_credentials(SessionCredentials::new(PRODUCER_AK, PRODUCER_SK)),
            "acl-glommio",
        );
        let stored = signed
            .send(&Message::new("AclOrders", "glommio"))
            .await
            .map(|r| r.status);
        let refused = signed
            .send(&Message::new("AclAudit", "glommio"))
            .await
            .map(|r| r.status);
        (stored, refused)
    })
    .unwrap();
    assert_eq!(outcomes.0.unwrap(), SendStatus::SendOk);
    assert_refused(outcomes.1, "no PUB permission for topic:AclAudit");
}

fn create_topic_request(topic: &str) -> RemotingCommand {
    thruster_tests::create_topic_request(topic, 2)
}

#[test]
fn admin_codes_need_an_admin_account() {
    let cluster = start(&rules("SUB"));
    let mut client = Client::connect(cluster.broker.addr);
    let mut by_producer = create_topic_request("AclCreated");
    sign(
        &mut by_producer,
        &SessionCredentials::new(PRODUCER_AK, PRODUCER_SK),
    );
    let refused = client.invoke(by_producer);
    assert_eq!(refused.code, response_code::NO_PERMISSION);
    assert_eq!(
        refused.remark.as_deref(),
        Some("ACL: request code 17 needs an admin account, and AccessKey=producer-ak is not one")
    );
    let mut by_admin = create_topic_request("AclCreated");
    sign(&mut by_admin, &SessionCredentials::new(ADMIN_AK, ADMIN_SK));
    let created = client.invoke(by_admin);
    assert_eq!(created.code, response_code::SUCCESS, "{:?}", created.remark);
    // A signed request whose header is changed afterwards no longer verifies.
    let mut tampered = create_topic_request("AclCreated2");
    sign(&mut tampered, &SessionCredentials::new(ADMIN_AK, ADMIN_SK));
    tampered.ext_fields.insert("topic", "AclCreated3");
    let refused = client.invoke(tampered);
    assert_eq!(refused.code, response_code::NO_PERMISSION);
    assert!(refused
        .remark
        .unwrap_or_default()
        .contains("signature check failed"));
}

#[test]
fn white_listed_addresses_need_no_signature() {
    // The account's own white address: its requests from there skip the signature.
    let account_white = format!(
        "{}\
         \x20 - accessKey: trusted-ak\n\
         \x20   secretKey: trusted-secret\n\
         \x20   whiteRemoteAddress: 127.0.0.{{1,2}}\n",
        rules("SUB")
    );
    let cluster = start(&account_white);
    let mut client = Client::connect(cluster.broker.addr);
    let mut unsigned = create_topic_request("AclWhite");
    unsigned.ext_fields.insert("AccessKey", "trusted-ak");
    assert_eq!(client.invoke(unsigned.clone()).code, response_code::SUCCESS);
    // Without an AccessKey, or with an account not white-listed here: refused.
    let mut bare = create_topic_request("AclWhite");
    let refused = client.invoke(bare.clone());
    assert_eq!(refused.code, response_code::NO_PERMISSION);
    assert!(refused
        .remark
        .unwrap_or_default()
        .contains("has no AccessKey"));
    bare.ext_fields.insert("AccessKey", PRODUCER_AK);
    assert_eq!(client.invoke(bare).code, response_code::NO_PERMISSION);

    // globalWhiteRemoteAddresses: anything from there, no AccessKey needed. Changed in place
    // (the reload path), and asserted once it is in force.
    let global = format!(
        "globalWhiteRemoteAddresses:\n  - 127.0.0.*\n{}",
        rules("SUB")
    );
    rewrite(&cluster.acl_file, &global);
    let request = create_topic_request("AclGlobal");
    assert!(
        wait_until(RELOAD_DEADLINE, || client.invoke(request.clone()).code
            == response_code::SUCCESS),
        "an unsigned request from 127.0.0.1 was not let in after the global white list"
    );
    let info = RemotingCommand::bare_request(rc::GET_BROKER_RUNTIME_INFO);
    assert_eq!(client.invoke(info).code, response_code::SUCCESS);
    // The native client without credentials, to a topic no account may use.
    let unsigned = producer(&cluster, "acl-white-pg", None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime
        .block_on(unsigned.send(Message::new("AclElsewhere", "white")))
        .unwrap();
    assert_eq!(result.status, SendStatus::SendOk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_file_takes_effect_and_a_broken_one_keeps_the_rules() {
    let cluster = start(&rules("SUB"));
    let signed = producer(&cluster, "acl-reload", Some((PRODUCER_AK, PRODUCER_SK)));
    assert_refused(
        signed.send(Message::new("AclAudit", "before")).await,
        "no PUB permission for topic:AclAudit: it has SUB",
    );
    rewrite(&cluster.acl_file, &rules("PUB"));
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    loop {
        match signed.send(Message::new("AclAudit", "after")).await {
            Ok(result) => {
                assert_eq!(result.status, SendStatus::SendOk);
                break;
            }
            Err(error) if error.response_code() == Some(response_code::NO_PERMISSION) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new rule did not take effect within {RELOAD_DEADLINE:?}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    // Every shard took the new rules (a broker per shard: the topic has queues on both).
    for i in 0..8 {
        let result = signed
            .send(Message::new("AclAudit", format!("after-{i}")))
            .await
            .unwrap();
        assert_eq!(result.status, SendStatus::SendOk);
    }
    // A broken file is refused with an error in the log, and the rules in force stay.
    rewrite(&cluster.acl_file, "accounts: [ {accessKey: \n");
    assert!(
        wait_until(RELOAD_DEADLINE, || cluster
            .broker
            .log()
            .contains("ACL file rejected")),
        "no error logged for the broken file; log:\n{}",
        cluster.broker.log()
    );
    let result = signed
        .send(Message::new("AclAudit", "still"))
        .await
        .unwrap();
    assert_eq!(result.status, SendStatus::SendOk);
    // Fixed again, with the permission taken away: refused once it is in force.
    rewrite(&cluster.acl_file, &rules("DENY"));
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    loop {
        match signed.send(Message::new("AclAudit", "denied")).await {
            Err(error) if error.response_code() == Some(response_code::NO_PERMISSION) => {
                assert!(error.to_string().contains("it has DENY"), "{error}");
                break;
            }
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "DENY did not take effect within {RELOAD_DEADLINE:?}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[test]
fn a_broker_with_an_unreadable_acl_file_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.yml");
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "accounts:\n  - accessKey: short\n").expect("file");
    for (path, why) in [
        (&missing, "No such file"),
        (&broken, "accessKey is required"),
    ] {
        let output = std::process::Command::new(thruster_tests::binary("thruster-broker"))
            .current_dir(dir.path())
            .args(["--set", "listenPort=0", "--set", "shards=1", "--set"])
            .arg(format!(
                "storePathRootDir={}",
                dir.path().join("store").display()
            ))
            .args(["--set", "aclEnable=true", "--set"])
            .arg(format!("aclFilePath={}", path.display()))
            .output()
            .expect("running the broker");
        assert!(!output.status.success(), "started with {}", path.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("aclEnable=true, but the ACL file") && stderr.contains(why),
            "{stderr}"
        );
    }
}

// --- The C++ client: its own signing code is the independent check. ---

fn cpp_env<'a>(ak: &'a str, sk: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("THRUSTER_ACL_ACCESS_KEY", ak),
        ("THRUSTER_ACL_SECRET_KEY", sk),
    ]
}

/// Creates `topics` with the admin account (one request: the broker's shards share the topic
/// table, and the answer comes once the name server has the route). A send the broker
/// refuses never auto-creates its topic, and the C++ client reports a send to a topic without
/// a route as "No route info" whatever the broker said; topics of a broker with ACL are
/// created by an admin anyway.
fn create_topics(cluster: &AclCluster, topics: &[&str]) {
    let mut client = Client::connect(cluster.broker.addr);
    for topic in topics {
        let mut request = create_topic_request(topic);
        sign(&mut request, &SessionCredentials::new(ADMIN_AK, ADMIN_SK));
        let response = client.invoke(request);
        let created = response.code == response_code::SUCCESS;
        assert!(created, "creating {topic}: {:?}", response.remark);
    }
}

/// Runs a `try-sync` C++ producer; returns its `sent` and `send-failed` events.
fn cpp_produce(
    cluster: &AclCluster,
    topic: &str,
    count: usize,
    prefix: &str,
    env: &[(&str, &str)],
) -> (Vec<Value>, Vec<Value>) {
    let ns = cluster.namesrv.addr.to_string();
    let count = count.to_string();
    let producer =
        ClientProcess::start_with_env(&["produce", &ns, topic, "try-sync", &count, prefix], env);
    let events = producer.until("done", CLIENT_TIMEOUT);
    producer.finish();
    let of = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    (of("sent"), of("send-failed"))
}

#[test]
fn the_cpp_client_signature_is_accepted_and_permissions_hold() {
    let cluster = start(&rules("SUB"));
    create_topics(&cluster, &["AclOrders", "AclAudit"]);
    let env = cpp_env(PRODUCER_AK, PRODUCER_SK);
    let (sent, failed) = cpp_produce(&cluster, "AclOrders", 20, "cpp", &env);
    assert!(failed.is_empty(), "signed sends refused: {failed:?}");
    assert_eq!(sent.len(), 20);
    for event in &sent {
        assert_eq!(event["status"], 0, "{event}");
    }
    // The C++ pull consumer, signing too, reads exactly what was acknowledged.
    let ns = cluster.namesrv.addr.to_string();
    let consumer =
        ClientProcess::start_with_env(&["pull", &ns, "acl-cpp-cg", "AclOrders", "20", "60"], &env);
    let events = consumer.until("done", CLIENT_TIMEOUT);
    consumer.finish();
    let received: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "received")
        .map(|e| e["body"].as_str().expect("body").to_owned())
        .collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("cpp-{i}")).collect();
    assert_eq!(received, expected);

    // SUB-only topic: every send refused, for that reason.
    let (sent, failed) = cpp_produce(&cluster, "AclAudit", 3, "audit", &env);
    assert!(
        sent.is_empty(),
        "sends to a SUB-only topic stored: {sent:?}"
    );
    assert_eq!(failed.len(), 3);
    assert_refusals_logged(
        &cluster,
        "AccessKey=producer-ak has no PUB permission for topic:AclAudit: it has SUB",
        failed.len(),
    );
}

/// The C++ client 2.0 reports any failed sync send as "No route info of this topic" (its
/// `sendDefaultImpl` drops the broker's answer), so what the broker refused, and why, is read
/// from the broker's log: at least `at_least` refusals with `remark`.
fn assert_refusals_logged(cluster: &AclCluster, remark: &str, at_least: usize) {
    let log = cluster.broker.log();
    let refusals = log
        .lines()
        .filter(|line| line.contains("request refused by ACL") && line.contains(remark))
        .count();
    assert!(
        refusals >= at_least,
        "{refusals} refusals with {remark:?} logged, expected at least {at_least}:\n{log}"
    );
}

#[test]
fn the_cpp_client_with_a_wrong_secret_is_refused() {
    let cluster = start(&rules("SUB"));
    create_topics(&cluster, &["AclOrders"]);
    let (sent, failed) = cpp_produce(
        &cluster,
        "AclOrders",
        3,
        "wrong",
        &cpp_env(PRODUCER_AK, "not-the-secret"),
    );
    assert!(
        sent.is_empty(),
        "sends with a wrong secret stored: {sent:?}"
    );
    assert_eq!(failed.len(), 3);
    assert_refusals_logged(
        &cluster,
        "signature check failed for AccessKey=producer-ak",
        failed.len(),
    );
}

#[test]
fn the_cpp_push_consumer_signs_its_heartbeats_and_pulls() {
    let cluster = start(&rules("SUB"));
    let env = cpp_env(PRODUCER_AK, PRODUCER_SK);
    let ns = cluster.namesrv.addr.to_string();
    let (sent, failed) = cpp_produce(&cluster, "AclOrders", 10, "push", &env);
    assert!(failed.is_empty() && sent.len() == 10, "{failed:?}");
    let consumer = ClientProcess::start_with_env(
        &["push", &ns, "acl-cpp-push", "AclOrders", "clustering"],
        &env,
    );
    consumer.until("started", CLIENT_TIMEOUT);
    let expected: BTreeSet<String> = (0..10).map(|i| format!("push-{i}")).collect();
    let mut received = BTreeSet::new();
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    while received != expected && std::time::Instant::now() < deadline {
        if let Some(event) = consumer.next(Duration::from_millis(500)) {
            if event["event"] == "received" {
                received.insert(event["body"].as_str().expect("body").to_owned());
            }
        }
    }
    consumer.finish();
    assert_eq!(received, expected);
    // Its heartbeats and pulls were signed: nothing was refused.
    assert!(
        !cluster.broker.log().contains("request refused by ACL"),
        "{}",
        cluster.broker.log()
    );
}

#[test]
fn the_cpp_client_is_let_in_by_a_white_listed_address_without_credentials() {
    let with_white = format!("globalWhiteRemoteAddresses: [127.0.0.1]\n{}", rules("SUB"));
    let cluster = start(&with_white);
    let (sent, failed) = cpp_produce(&cluster, "AclElsewhere", 5, "white", &[]);
    assert!(failed.is_empty(), "white-listed sends refused: {failed:?}");
    assert_eq!(sent.len(), 5);
}

#[test]
fn the_cpp_client_sees_a_reloaded_file() {
    let cluster = start(&rules("SUB"));
    create_topics(&cluster, &["AclAudit"]);
    let env = cpp_env(PRODUCER_AK, PRODUCER_SK);
    let (sent, failed) = cpp_produce(&cluster, "AclAudit", 1, "before", &env);
    assert!(sent.is_empty() && failed.len() == 1, "{sent:?}");
    assert_refusals_logged(&cluster, "no PUB permission for topic:AclAudit", 1);
    rewrite(&cluster.acl_file, &rules("PUB|SUB"));
    // Wait for the rule through a native probe (cheap), then the C++ client must pass.
    let mut client = Client::connect(cluster.broker.addr);
    let send_probe = |client: &mut Client| {
        let mut request = RemotingCommand::bare_request(rc::SEND_MESSAGE_V2);
        request.ext_fields.insert("a", "probe-pg");
        request.ext_fields.insert("b", "AclAudit");
        sign(
            &mut request,
            &SessionCredentials::new(PRODUCER_AK, PRODUCER_SK),
        );
        client.invoke(request)
    };
    assert!(
        wait_until(RELOAD_DEADLINE, || send_probe(&mut client).code
            != response_code::NO_PERMISSION),
        "the new rule did not take effect"
    );
    let (sent, failed) = cpp_produce(&cluster, "AclAudit", 5, "after", &env);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(sent.len(), 5);
}
