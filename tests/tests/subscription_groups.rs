//! Subscription groups on a real broker: created, replicated to every shard, persisted in
//! RocketMQ's `config/subscriptionGroup.json`, and honoured (unknown groups refused with
//! `autoCreateSubscriptionGroup=false`, `consumeEnable`, `retryMaxTimes`, `retryQueueNums`).

use std::time::Duration;

use thruster_client::protocol::body::{
    decode_lenient, encode, SubscriptionGroupConfig, SubscriptionGroupWrapper,
};
use thruster_client::protocol::header::admin::GroupRequestHeader;
use thruster_client::protocol::header::client::ConsumerSendMsgBackRequestHeader;
use thruster_client::protocol::header::send::SendMessageResponseHeader;
use thruster_client::protocol::header::EmptyHeader;
use thruster_client::protocol::message::{
    decode_offset_msg_id, decode_records, encode_properties, DecodedRecord,
};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{group_pull_request, send_v2};
use thruster_tests::{route_brokers, wait_until, Client, ServerProcess};

fn start(extra: &[&str]) -> (ServerProcess, ServerProcess) {
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, extra);
    (namesrv, broker)
}

fn pull(client: &mut Client, group: &str, topic: &str, queue_id: i32) -> RemotingCommand {
    client.invoke(group_pull_request(group, topic, queue_id, 0, 0))
}

fn upsert_group(client: &mut Client, config: &SubscriptionGroupConfig) {
    let response = client.invoke(
        RemotingCommand::request(rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &EmptyHeader {})
            .with_body(encode(config)),
    );
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
}

fn all_groups(client: &mut Client) -> SubscriptionGroupWrapper {
    let response = client.invoke(RemotingCommand::request(
        rc::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
        &EmptyHeader {},
    ));
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    decode_lenient("groups", &response.body).expect("a SubscriptionGroupWrapper")
}

fn delete_group(client: &mut Client, group: &str) {
    let response = client.invoke(RemotingCommand::request(
        rc::DELETE_SUBSCRIPTIONGROUP,
        &GroupRequestHeader {
            group_name: group.into(),
            remove_offset: Some(true),
            clean_offset: None,
        },
    ));
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
}

fn stored_groups(broker: &ServerProcess) -> SubscriptionGroupWrapper {
    let path = broker
        .dir
        .path()
        .join("data/store/config/subscriptionGroup.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_lenient("subscriptionGroup.json", &bytes).expect("RocketMQ's shape")
}

#[test]
fn groups_are_replicated_persisted_enforced_and_deleted() {
    let (namesrv, broker) = start(&["autoCreateSubscriptionGroup=false"]);
    let mut shard0 = Client::connect(broker.addr);
    shard0.create_topic("GroupTopic", 4);
    let shards = route_brokers(namesrv.addr, "GroupTopic");
    assert_eq!(shards.len(), 2);
    let mut shard1 = Client::connect(shards[1].addr);

    // Unknown group, no auto-creation: refused on every shard, as the Java broker does.
    for client in [&mut shard0, &mut shard1] {
        let refused = pull(client, "Ops", "GroupTopic", 0);
        assert_eq!(
            refused.code,
            response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
            "{:?}",
            refused.remark
        );
    }
    // Created through shard 1 (shard 0 writes; every shard's copy follows).
    upsert_group(&mut shard1, &SubscriptionGroupConfig::named("Ops"));
    for client in [&mut shard0, &mut shard1] {
        let served = pull(client, "Ops", "GroupTopic", 0);
        assert_eq!(
            served.code,
            response_code::PULL_NOT_FOUND,
            "{:?}",
            served.remark
        );
        assert!(all_groups(client)
            .subscription_group_table
            .contains_key("Ops"));
    }
    // consumeEnable=false: NO_PERMISSION, from every shard.
    let disabled = SubscriptionGroupConfig {
        consume_enable: false,
        retry_max_times: 3,
        ..SubscriptionGroupConfig::named("Ops")
    };
    upsert_group(&mut shard0, &disabled);
    let mut seen_everywhere = false;
    for client in [&mut shard0, &mut shard1] {
        let refused = pull(client, "Ops", "GroupTopic", 0);
        seen_everywhere = refused.code == response_code::NO_PERMISSION;
        assert!(seen_everywhere, "{} {:?}", refused.code, refused.remark);
    }
    assert!(seen_everywhere);
    // On disk in RocketMQ's shape once the update was answered; the system groups are there.
    let stored = stored_groups(&broker);
    assert_eq!(stored.subscription_group_table["Ops"], disabled);
    assert!(stored
        .subscription_group_table
        .contains_key("TOOLS_CONSUMER"));
    let version = stored.data_version.counter;

    // A restart keeps the group.
    drop((shard0, shard1));
    let broker = broker.restart();
    let mut shard0 = Client::connect(broker.addr);
    assert_eq!(
        all_groups(&mut shard0).subscription_group_table["Ops"],
        disabled
    );
    assert!(all_groups(&mut shard0).data_version.counter >= version);

    // Deleted: unknown again, on disk too.
    delete_group(&mut shard0, "Ops");
    let refused = pull(&mut shard0, "Ops", "GroupTopic", 0);
    assert_eq!(refused.code, response_code::SUBSCRIPTION_GROUP_NOT_EXIST);
    assert!(!stored_groups(&broker)
        .subscription_group_table
        .contains_key("Ops"));
    // A bad name is refused with a reason, and the broker keeps serving.
    let response = shard0.invoke(
        RemotingCommand::request(rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &EmptyHeader {})
            .with_body(encode(&SubscriptionGroupConfig::named("bad name"))),
    );
    assert_eq!(response.code, response_code::SYSTEM_ERROR);
    assert!(response.remark.unwrap_or_default().contains("illegal"));
    drop(namesrv);
}

fn send(client: &mut Client, topic: &str, queue_id: i32, body: &str) -> SendMessageResponseHeader {
    send_v2(
        client,
        topic,
        queue_id,
        encode_properties([("TAGS", "T")]),
        body.as_bytes(),
    )
}

/// Records of `topic`'s queue `queue_id` once there are any (within `limit`).
fn records_within(
    client: &mut Client,
    topic: &str,
    queue_id: i32,
    limit: Duration,
) -> Vec<DecodedRecord> {
    let mut records = Vec::new();
    let arrived = wait_until(limit, || {
        let response = pull(client, "TOOLS_CONSUMER", topic, queue_id);
        if response.code == response_code::SUCCESS {
            records = decode_records(&response.body, true).unwrap();
        }
        !records.is_empty()
    });
    assert!(
        arrived,
        "nothing arrived in {topic}:{queue_id} within {limit:?}"
    );
    records
}

fn send_back(client: &mut Client, group: &str, offset: i64) -> RemotingCommand {
    client.invoke(RemotingCommand::request(
        rc::CONSUMER_SEND_MSG_BACK,
        &ConsumerSendMsgBackRequestHeader {
            offset,
            group: group.into(),
            delay_level: 0,
            origin_msg_id: None,
            origin_topic: Some("Retried".into()),
            unit_mode: None,
            // Not given: the group's retryMaxTimes decides.
            max_reconsume_times: None,
            broker_name: None,
        },
    ))
}

#[test]
fn send_back_follows_the_groups_retry_settings() {
    let (_namesrv, broker) = start(&[
        "autoCreateSubscriptionGroup=false",
        "messageDelayLevel=1s 1s 1s 1s",
    ]);
    let mut client = Client::connect(broker.addr);
    client.create_topic("Retried", 4);
    let sent = send(&mut client, "Retried", 0, "failing");
    let (_, offset) = decode_offset_msg_id(&sent.msg_id).expect("offsetMsgId");

    // Unknown group: refused.
    let refused = send_back(&mut client, "Nobody", offset);
    assert_eq!(refused.code, response_code::SUBSCRIPTION_GROUP_NOT_EXIST);
    // retryMaxTimes=0: the first failure is already too many, straight to the DLQ.
    upsert_group(
        &mut client,
        &SubscriptionGroupConfig {
            retry_max_times: 0,
            ..SubscriptionGroupConfig::named("Impatient")
        },
    );
    assert_eq!(
        send_back(&mut client, "Impatient", offset).code,
        response_code::SUCCESS
    );
    let dead = records_within(&mut client, "%DLQ%Impatient", 0, Duration::from_secs(10));
    assert_eq!(dead[0].body.as_ref(), b"failing");
    // Default retries, two retry queues: the retry topic has two queues on every shard and
    // the message comes back in it after its delay.
    upsert_group(
        &mut client,
        &SubscriptionGroupConfig {
            retry_queue_nums: 2,
            ..SubscriptionGroupConfig::named("Patient")
        },
    );
    assert_eq!(
        send_back(&mut client, "Patient", offset).code,
        response_code::SUCCESS
    );
    assert_eq!(
        send_back(&mut client, "Patient", offset).code,
        response_code::SUCCESS
    );
    let mut retried = Vec::new();
    for queue_id in 0..2 {
        retried.extend(records_within(
            &mut client,
            "%RETRY%Patient",
            queue_id,
            Duration::from_secs(20),
        ));
    }
    assert_eq!(retried.len(), 2, "one per retry queue (rotation)");
    assert!(retried.iter().all(|r| r.reconsume_times == 1));
    let dlq = pull(&mut client, "TOOLS_CONSUMER", "%DLQ%Patient", 0);
    assert_ne!(dlq.code, response_code::SUCCESS, "not dead yet");
    // retryQueueNums=0: what its consumers send back is dropped, as Java does.
    upsert_group(
        &mut client,
        &SubscriptionGroupConfig {
            retry_queue_nums: 0,
            ..SubscriptionGroupConfig::named("Dropper")
        },
    );
    assert_eq!(
        send_back(&mut client, "Dropper", offset).code,
        response_code::SUCCESS
    );
    let dropped = pull(&mut client, "TOOLS_CONSUMER", "%RETRY%Dropper", 0);
    assert_eq!(dropped.code, response_code::TOPIC_NOT_EXIST);
}
