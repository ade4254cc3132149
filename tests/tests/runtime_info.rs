//! GET_BROKER_RUNTIME_INFO on a real broker: every key the Java 4.9 broker reports is there,
//! and the counters follow the traffic exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use thruster_client::protocol::message::encode_properties;
use thruster_client::protocol::{response_code, RemotingCommand};
use thruster_tests::wire::{pull_request, runtime_info, send_v2};
use thruster_tests::{wait_until, Client, ServerProcess};

/// The keys of `AdminBrokerProcessor.prepareRuntimeInfo` (4.9.8) with the store's, for a
/// broker without a transient store pool.
const JAVA_KEYS: &[&str] = &[
    "bootTimestamp",
    "runtime",
    "putMessageEntireTimeMax",
    "putMessageTimesTotal",
    "putMessageFailedTimes",
    "putMessageSizeTotal",
    "putMessageDistributeTime",
    "putMessageAverageSize",
    "dispatchMaxBuffer",
    "getMessageEntireTimeMax",
    "putTps",
    "getFoundTps",
    "getMissTps",
    "getTotalTps",
    "getTransferedTps",
    "putLatency99",
    "putLatency999",
    "commitLogDiskRatio",
    "consumeQueueDiskRatio",
    "commitLogMinOffset",
    "commitLogMaxOffset",
    "brokerVersionDesc",
    "brokerVersion",
    "msgPutTotalYesterdayMorning",
    "msgPutTotalTodayMorning",
    "msgPutTotalTodayNow",
    "msgGetTotalYesterdayMorning",
    "msgGetTotalTodayMorning",
    "msgGetTotalTodayNow",
    "sendThreadPoolQueueSize",
    "sendThreadPoolQueueCapacity",
    "pullThreadPoolQueueSize",
    "pullThreadPoolQueueCapacity",
    "queryThreadPoolQueueSize",
    "queryThreadPoolQueueCapacity",
    "EndTransactionQueueSize",
    "EndTransactionThreadPoolQueueCapacity",
    "dispatchBehindBytes",
    "pageCacheLockTimeMills",
    "sendThreadPoolQueueHeadWaitTimeMills",
    "pullThreadPoolQueueHeadWaitTimeMills",
    "queryThreadPoolQueueHeadWaitTimeMills",
    "earliestMessageTimeStamp",
    "startAcceptSendRequestTimeStamp",
    "remainTransientStoreBufferNumbs",
    "remainHowManyDataToFlush",
    "commitLogDirCapacity",
];

fn send(client: &mut Client, topic: &str, body: &str) {
    send_v2(
        client,
        topic,
        0,
        encode_properties([("TAGS", "t")]),
        body.as_bytes(),
    );
}

fn pull_all(client: &mut Client, topic: &str) -> RemotingCommand {
    client.invoke(pull_request(topic, 0, 0, 0))
}

fn first_window(info: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    info[key].split(' ').next().and_then(|w| w.parse().ok())
}

#[test]
fn every_java_key_is_reported_and_counters_follow_the_traffic() {
    let broker = ServerProcess::standalone_broker(1);
    let mut client = Client::connect(broker.listening[1].1);
    client.create_topic("Counted", 1);
    let before = runtime_info(&mut client);
    for key in JAVA_KEYS {
        assert!(before.contains_key(*key), "{key} missing: {before:?}");
    }
    assert!(before.keys().any(|k| k.starts_with("commitLogDiskRatio_")));
    assert_eq!(
        before["earliestMessageTimeStamp"], "-1",
        "nothing stored yet"
    );
    let ratio: f64 = before["commitLogDiskRatio"].parse().unwrap();
    assert!((0.0..=1.0).contains(&ratio), "a fraction, as Java: {ratio}");
    assert!(before["commitLogDirCapacity"].starts_with("Total : "));

    // The 10 s window exists once the sampler has ten seconds behind it.
    assert!(
        wait_until(Duration::from_secs(20), || first_window(
            &runtime_info(&mut client),
            "putTps"
        )
        .is_some()),
        "putTps 10 s window never filled"
    );
    let sent = 20;
    for i in 0..sent {
        send(&mut client, "Counted", &format!("m{i}"));
    }
    let pulled = pull_all(&mut client, "Counted");
    assert_eq!(pulled.code, response_code::SUCCESS);
    let missed = pull_all(&mut client, "Nope");
    assert_ne!(missed.code, response_code::SUCCESS);

    let after = runtime_info(&mut client);
    let count = |info: &BTreeMap<String, String>, key: &str| -> u64 { info[key].parse().unwrap() };
    assert_eq!(
        count(&after, "msgPutTotalTodayNow") - count(&before, "msgPutTotalTodayNow"),
        sent
    );
    assert_eq!(
        count(&after, "msgGetTotalTodayNow"),
        sent,
        "20 messages transferred"
    );
    assert!(count(&after, "putMessageSizeTotal") > 20 * 2);
    assert_eq!(count(&after, "putMessageFailedTimes"), 0);
    assert!(after["putMessageDistributeTime"].starts_with("[<=0ms]:"));
    let distributed: u64 = after["putMessageDistributeTime"]
        .split_whitespace()
        .map(|b| b.rsplit(':').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(distributed, sent, "every send in one bucket");
    assert!(count(&after, "earliestMessageTimeStamp") > 1_600_000_000_000);
    assert!(count(&after, "commitLogMaxOffset") > count(&after, "commitLogMinOffset"));
    // Within the next ten seconds the 10 s window covers all 20 sends (made at one instant,
    // so it covers all of them or none): 20 over the window's ~10 s.
    let mut seen = 0.0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            seen = first_window(&runtime_info(&mut client), "putTps").unwrap_or(0.0);
            seen > 0.0
        }),
        "putTps stayed at 0"
    );
    assert!((1.3..=2.05).contains(&seen), "20 sends over ~10 s: {seen}");
}

#[test]
fn expired_commit_log_segments_go_when_asked() {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(
        namesrv.addr,
        1,
        &[
            "mappedFileSizeCommitLog=1048576",
            "maxMessageSize=262144",
            "fileReservedTime=0",
            "deleteWhen=99",
        ],
    );
    let mut client = Client::connect(broker.addr);
    client.create_topic("Expiring", 1);
    let body = vec![b'x'; 100 << 10];
    for _ in 0..40 {
        send_v2(
            &mut client,
            "Expiring",
            0,
            encode_properties([("TAGS", "t")]),
            &body,
        );
    }
    let min = |client: &mut Client| -> u64 {
        runtime_info(client)["commitLogMinOffset"].parse().unwrap()
    };
    assert_eq!(
        min(&mut client),
        0,
        "nothing deleted before the request (deleteWhen=99 never comes)"
    );
    let response = client.invoke(RemotingCommand::request(
        thruster_client::protocol::request_code::DELETE_EXPIRED_COMMITLOG,
        &thruster_client::protocol::header::EmptyHeader {},
    ));
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    let after = min(&mut client);
    assert!(
        after >= 1 << 20,
        "whole expired segments deleted: min offset {after}"
    );
    // What is left is still readable from the new start.
    let pulled = client.invoke(pull_request("Expiring", 0, 0, 0));
    assert!(
        [response_code::SUCCESS, response_code::PULL_OFFSET_MOVED].contains(&pulled.code),
        "{}",
        pulled.code
    );
}
