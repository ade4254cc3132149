//! `thruster-admin` against a real name server and a two-shard broker (each shard a broker):
//! every subcommand runs as a process, and what it prints (`--json`, or the table) is checked
//! against what the broker holds.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use thruster_protocol::body::heartbeat::{
    ConsumerData, HeartbeatData, ProducerData, SubscriptionData,
};
use thruster_protocol::body::{self, decode_lenient, SubscriptionGroupConfig};
use thruster_protocol::header::admin::GroupRequestHeader;
use thruster_protocol::header::offset::UpdateConsumerOffsetRequestHeader;
use thruster_protocol::header::send::SendMessageResponseHeader;
use thruster_protocol::header::EmptyHeader;
use thruster_protocol::message::encode_properties;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::{group_pull_request, send_v2, v2_header};
use thruster_tests::{route_brokers, wait_until, Client, ServerProcess};

mod common;
use common::{admin, admin_json};

fn send(
    client: &mut Client,
    topic: &str,
    body: &str,
    key: &str,
    uniq: &str,
) -> SendMessageResponseHeader {
    let properties = encode_properties([("KEYS", key), ("UNIQ_KEY", uniq), ("TAGS", "t")]);
    send_v2(client, topic, 0, properties, body.as_bytes())
}

fn heartbeat(group: &str, producer_group: &str, topic: &str) -> RemotingCommand {
    let data = HeartbeatData {
        client_id: "admin-test-client".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: topic.into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
        producer_data_set: vec![ProducerData {
            group_name: producer_group.into(),
        }],
        ..HeartbeatData::default()
    };
    RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {}).with_body(body::encode(&data))
}

fn pull_code(client: &mut Client, group: &str, topic: &str) -> i32 {
    client
        .invoke(group_pull_request(group, topic, 0, 0, 0))
        .code
}

#[test]
fn every_subcommand_against_a_real_broker() {
    let ns = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(ns.addr, 2, &["autoCreateSubscriptionGroup=false"]);
    let shard0 = broker.addr.to_string();

    // clusterList: both shard-brokers, reachable, with the version they report.
    let clusters = admin_json(&ns, &["clusterList"]);
    let rows = clusters.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{clusters}");
    assert!(rows
        .iter()
        .all(|r| r["cluster"] == "DefaultCluster" && r["reachable"] == true));
    assert!(rows.iter().all(|r| r["version"] == "V4_9_8"));
    let (ok, table, _) = admin(&ns, &["clusterList"]);
    assert!(ok && table.starts_with("#Cluster Name"), "{table}");

    // updateTopic on the cluster, then topicList / topicRoute see it.
    let created = admin_json(
        &ns,
        &[
            "updateTopic",
            "-c",
            "DefaultCluster",
            "-t",
            "AdminT",
            "-r",
            "4",
            "-w",
            "4",
        ],
    );
    assert_eq!(created["brokers"].as_array().unwrap().len(), 2);
    let topics = admin_json(&ns, &["topicList"]);
    assert!(
        topics.as_array().unwrap().iter().any(|t| t == "AdminT"),
        "{topics}"
    );
    let route = admin_json(&ns, &["topicRoute", "-t", "AdminT"]);
    let queues: i64 = route["queueDatas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["writeQueueNums"].as_i64().unwrap())
        .sum();
    assert_eq!(queues, 4, "4 queues in all over the shards: {route}");

    // Five messages into shard 0's queue 0; topicStatus counts them.
    let mut client = Client::connect(broker.addr);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            send(
                &mut client,
                "AdminT",
                &format!("m{i}"),
                &format!("key-{i}"),
                &format!("UNIQ{i}"),
            )
            .msg_id,
        );
    }
    let status = admin_json(&ns, &["topicStatus", "-t", "AdminT"]);
    let max_total: i64 = status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["maxOffset"].as_i64().unwrap())
        .sum();
    assert_eq!(max_total, 5, "{status}");

    // Queries by key, unique key and offset id find exactly the message asked for.
    let by_key = admin_json(&ns, &["queryMsgByKey", "-t", "AdminT", "-k", "key-3"]);
    assert_eq!(by_key.as_array().unwrap().len(), 1, "{by_key}");
    assert_eq!(by_key[0]["body"], "m3");
    let by_uniq = admin_json(&ns, &["queryMsgByUniqueKey", "-t", "AdminT", "-i", "UNIQ2"]);
    assert_eq!(by_uniq[0]["body"], "m2");
    let (ok, text, _) = admin(&ns, &["queryMsgById", "-i", &ids[4]]);
    assert!(ok && text.contains("Message Body:       m4"), "{text}");

    // updateSubGroup: the group exists on every shard with the settings given.
    admin_json(
        &ns,
        &[
            "updateSubGroup",
            "-c",
            "DefaultCluster",
            "-g",
            "AdminG",
            "-r",
            "5",
        ],
    );
    let stored = client.invoke(RemotingCommand::request(
        rc::GET_SUBSCRIPTIONGROUP_CONFIG,
        &GroupRequestHeader {
            group_name: "AdminG".into(),
            remove_offset: None,
            clean_offset: None,
        },
    ));
    let config: SubscriptionGroupConfig = decode_lenient("group", &stored.body).unwrap();
    assert_eq!(
        (config.retry_max_times, config.consume_broadcast_enable),
        (5, false)
    );

    // A consumer of AdminG and a producer of AdminP connect; the consumer has consumed 2.
    let heartbeat_response = client.invoke(heartbeat("AdminG", "AdminP", "AdminT"));
    assert_eq!(heartbeat_response.code, response_code::SUCCESS);
    // Committed on both shard-brokers (queue 0 of each), as a consumer of all queues does.
    let shard1 = route_brokers(ns.addr, "AdminT")[1].addr;
    for (addr, offset) in [(broker.addr, 2), (shard1, 0)] {
        let commit = Client::connect(addr).invoke(RemotingCommand::request(
            rc::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: "AdminG".into(),
                topic: "AdminT".into(),
                queue_id: 0,
                commit_offset: offset,
                broker_name: None,
            },
        ));
        assert_eq!(commit.code, response_code::SUCCESS);
    }
    assert!(wait_until(Duration::from_secs(10), || route_brokers(
        ns.addr,
        "%RETRY%AdminG"
    )
    .len()
        == 2));
    let progress = admin_json(&ns, &["consumerProgress", "-g", "AdminG"]);
    assert_eq!(progress["diffTotal"], 3, "5 stored, 2 consumed: {progress}");
    let lagging: Vec<&Value> = progress["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["diff"] != 0)
        .collect();
    assert_eq!(lagging.len(), 1);
    assert_eq!(
        (
            lagging[0]["brokerOffset"].as_i64(),
            lagging[0]["consumerOffset"].as_i64()
        ),
        (Some(5), Some(2))
    );

    let connections = admin_json(&ns, &["consumerConnection", "-g", "AdminG"]);
    assert_eq!(connections["messageModel"], "CLUSTERING");
    let set = connections["connectionSet"].as_array().unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["clientId"], "admin-test-client");
    assert_eq!(set[0]["language"], "RUST");
    assert!(connections["subscriptionTable"]["AdminT"].is_object());
    let producers = admin_json(&ns, &["producerConnection", "-g", "AdminP", "-t", "AdminT"]);
    assert_eq!(producers.as_array().unwrap().len(), 1, "{producers}");

    // resetOffsetByTime with the consumer online: the broker computes the offsets (to the
    // start: time 0) and tells the client with RESET_CONSUMER_CLIENT_OFFSET.
    let reset = admin_json(
        &ns,
        &[
            "resetOffsetByTime",
            "-g",
            "AdminG",
            "-t",
            "AdminT",
            "-s",
            "0",
        ],
    );
    assert_eq!(reset["offline"], false);
    assert!(
        reset["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["offset"] == 0),
        "{reset}"
    );
    let mut told = BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            while let Ok(Some(frame)) = client.read_command() {
                if frame.code == rc::RESET_CONSUMER_CLIENT_OFFSET {
                    let body = thruster_protocol::body::admin::ResetOffsetBody::decode(&frame.body)
                        .unwrap();
                    told.extend(body.offset_table.keys().map(|q| q.broker_name.clone()));
                }
                if told.len() == 2 {
                    break;
                }
            }
            told.len() == 2
        }),
        "the client was told by both shard-brokers: {told:?}"
    );
    // With nobody online the offsets are committed directly (mqadmin's fallback).
    drop(client);
    let mut client = Client::connect(broker.addr);
    assert!(wait_until(Duration::from_secs(10), || client
        .consumer_ids("AdminG")
        .is_empty()));
    let reset = admin_json(
        &ns,
        &[
            "resetOffsetByTime",
            "-g",
            "AdminG",
            "-t",
            "AdminT",
            "-s",
            "now",
        ],
    );
    assert_eq!(reset["offline"], true, "{reset}");
    let progress = admin_json(&ns, &["consumerProgress", "-g", "AdminG"]);
    assert_eq!(progress["diffTotal"], 0, "committed to the end: {progress}");

    // brokerStatus, getBrokerConfig, updateBrokerConfig.
    let status = admin_json(&ns, &["brokerStatus", "-b", &shard0]);
    assert_eq!(status[&shard0]["msgPutTotalTodayNow"], "5");
    let config = admin_json(&ns, &["getBrokerConfig", "-b", &shard0]);
    assert_eq!(config[&shard0]["brokerPermission"], "6");
    admin_json(
        &ns,
        &[
            "updateBrokerConfig",
            "-c",
            "DefaultCluster",
            "-k",
            "brokerPermission",
            "-v",
            "4",
        ],
    );
    let config = admin_json(&ns, &["getBrokerConfig", "-b", &shard0]);
    assert_eq!(config[&shard0]["brokerPermission"], "4");
    let refused = client.invoke(
        RemotingCommand::request(rc::SEND_MESSAGE_V2, &v2_header("AdminT", 0, None))
            .with_body(b"x".to_vec()),
    );
    assert_eq!(
        refused.code,
        response_code::NO_PERMISSION,
        "a read-only broker refuses sends"
    );
    admin_json(
        &ns,
        &[
            "updateBrokerConfig",
            "-c",
            "DefaultCluster",
            "-k",
            "brokerPermission",
            "-v",
            "6",
        ],
    );
    send(&mut client, "AdminT", "again", "k", "u");
    let (ok, _, stderr) = admin(
        &ns,
        &[
            "updateBrokerConfig",
            "-b",
            &shard0,
            "-k",
            "listenPort",
            "-v",
            "1",
        ],
    );
    assert!(!ok && stderr.contains("restart"), "{stderr}");

    // deleteSubGroup: the group is unknown again (no auto-creation here).
    admin_json(
        &ns,
        &["deleteSubGroup", "-c", "DefaultCluster", "-g", "AdminG"],
    );
    assert_eq!(
        pull_code(&mut client, "AdminG", "AdminT"),
        response_code::SUBSCRIPTION_GROUP_NOT_EXIST
    );

    // deleteTopic: gone from the brokers and the name server.
    admin_json(
        &ns,
        &["deleteTopic", "-c", "DefaultCluster", "-t", "AdminT"],
    );
    let topics = admin_json(&ns, &["topicList"]);
    assert!(
        !topics.as_array().unwrap().iter().any(|t| t == "AdminT"),
        "{topics}"
    );
    assert_eq!(
        pull_code(&mut client, "TOOLS_CONSUMER", "AdminT"),
        response_code::TOPIC_NOT_EXIST
    );

    // Errors say what to do.
    let (ok, _, stderr) = admin(&ns, &["topicStatus", "-t", "NoSuchTopic"]);
    assert!(
        !ok && stderr.contains("no route for topic NoSuchTopic"),
        "{stderr}"
    );
    let (ok, _, stderr) = admin(&ns, &["brokerStatus"]);
    assert!(!ok && stderr.contains("-b host:port"), "{stderr}");
}
