//! Admin request codes thruster-admin does not send, driven frame by frame: QUERY_CONSUME_QUEUE
//! (mqadmin queryCq) decoded with RocketMQ's field names.

use thruster_client::protocol::body::admin::QueryConsumeQueueResponseBody;
use thruster_client::protocol::body::heartbeat::{ConsumerData, HeartbeatData, SubscriptionData};
use thruster_client::protocol::body::{self, decode_lenient};
use thruster_client::protocol::header::admin::QueryConsumeQueueRequestHeader;
use thruster_client::protocol::header::EmptyHeader;
use thruster_client::protocol::message::encode_properties;
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use thruster_tests::wire::send_v2;
use thruster_tests::{Client, ServerProcess};

fn query(client: &mut Client, group: Option<&str>, index: i64, count: i32) -> RemotingCommand {
    client.invoke(RemotingCommand::request(
        rc::QUERY_CONSUME_QUEUE,
        &QueryConsumeQueueRequestHeader {
            topic: "Queued".into(),
            queue_id: 0,
            index,
            count,
            consumer_group: group.map(str::to_owned),
        },
    ))
}

#[test]
fn query_consume_queue_lists_entries_and_what_a_group_accepts() {
    let broker = ServerProcess::standalone_broker(1);
    let mut client = Client::connect(broker.listening[1].1);
    client.create_topic("Queued", 1);
    let mut offsets = Vec::new();
    for tag in ["A", "B", "A"] {
        let sent = send_v2(
            &mut client,
            "Queued",
            0,
            encode_properties([("TAGS", tag)]),
            b"body",
        );
        offsets.push(sent.queue_offset);
    }
    let heartbeat = HeartbeatData {
        client_id: "cq-client".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: "OnlyA".into(),
            consume_type: "CONSUME_ACTIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "Queued".into(),
                sub_string: "A".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
        ..HeartbeatData::default()
    };
    let registered = client.invoke(
        RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {})
            .with_body(body::encode(&heartbeat)),
    );
    assert_eq!(registered.code, response_code::SUCCESS);

    let answer = query(&mut client, Some("OnlyA"), 0, 10);
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    let body: QueryConsumeQueueResponseBody = decode_lenient("cq", &answer.body).unwrap();
    assert_eq!((body.min_queue_index, body.max_queue_index), (0, 3));
    assert_eq!(body.subscription_data.unwrap().sub_string, "A");
    let evals: Vec<bool> = body.queue_data.iter().map(|e| e.eval).collect();
    assert_eq!(evals, [true, false, true], "tag A passes, tag B does not");
    assert!(body
        .queue_data
        .windows(2)
        .all(|w| w[1].physic_offset > w[0].physic_offset));
    assert!(body.queue_data.iter().all(|e| e.physic_size > 4));
    // From an index, at most `count`; an unknown group is reported, not an error.
    let answer = query(&mut client, Some("Nobody"), 1, 1);
    let body: QueryConsumeQueueResponseBody = decode_lenient("cq", &answer.body).unwrap();
    assert_eq!(body.queue_data.len(), 1);
    assert_eq!(
        body.filter_data.as_deref(),
        Some("Nobody@Queued is not online!")
    );
    assert_eq!(offsets, [0, 1, 2]);
}

#[test]
fn consumer_status_asks_each_consumer_for_its_offsets() {
    use thruster_client::protocol::body::admin::GetConsumerStatusBody;
    use thruster_client::protocol::body::heartbeat::MessageQueue;
    use thruster_client::protocol::header::admin::TopicGroupRequestHeader;
    let broker = ServerProcess::standalone_broker(1);
    let addr = broker.listening[1].1;
    let mut admin = Client::connect(addr);
    admin.create_topic("Statused", 1);
    // A consumer on its own connection that answers GET_CONSUMER_STATUS_FROM_CLIENT.
    let mut consumer = Client::connect(addr);
    let heartbeat = HeartbeatData {
        client_id: "status-client".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: "StatusGroup".into(),
            consume_type: "CONSUME_PASSIVELY".into(),
            message_model: "CLUSTERING".into(),
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "Statused".into(),
                sub_string: "*".into(),
                expression_type: "TAG".into(),
                ..SubscriptionData::default()
            }],
            unit_mode: false,
        }],
        ..HeartbeatData::default()
    };
    let registered = consumer.invoke(
        RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {})
            .with_body(body::encode(&heartbeat)),
    );
    assert_eq!(registered.code, response_code::SUCCESS);
    let queue = MessageQueue {
        topic: "Statused".into(),
        broker_name: "whatever".into(),
        queue_id: 0,
    };
    let answering = queue.clone();
    let answerer = std::thread::spawn(move || loop {
        let request = consumer
            .read_command()
            .unwrap()
            .expect("the broker's request");
        if request.code != rc::GET_CONSUMER_STATUS_FROM_CLIENT {
            continue; // NOTIFY_CONSUMER_IDS_CHANGED and the like
        }
        assert_eq!(request.ext_fields.get("group"), Some("StatusGroup"));
        let mut answer = GetConsumerStatusBody::default();
        answer.message_queue_table.insert(answering.clone(), 42);
        let response = request
            .response_to(response_code::SUCCESS, None)
            .with_body(answer.encode());
        consumer.send(&response).unwrap();
        return consumer;
    });
    let status = admin.invoke(RemotingCommand::request(
        rc::INVOKE_BROKER_TO_GET_CONSUMER_STATUS,
        &TopicGroupRequestHeader {
            topic: "Statused".into(),
            group: "StatusGroup".into(),
            client_addr: None,
        },
    ));
    assert_eq!(status.code, response_code::SUCCESS, "{:?}", status.remark);
    let body = GetConsumerStatusBody::decode(&status.body).unwrap();
    assert_eq!(body.consumer_table["status-client"][&queue], 42);
    drop(answerer.join().unwrap());
    // A group nobody is in: refused with a reason.
    let nobody = admin.invoke(RemotingCommand::request(
        rc::INVOKE_BROKER_TO_GET_CONSUMER_STATUS,
        &TopicGroupRequestHeader {
            topic: "Statused".into(),
            group: "Empty".into(),
            client_addr: None,
        },
    ));
    assert_eq!(nobody.code, response_code::SYSTEM_ERROR);
    assert!(nobody
        .remark
        .unwrap_or_default()
        .contains("No Any Consumer online"));
}

/// mqadmin exportConfigs reads these keys from every master's GET_BROKER_CONFIG and fails with
/// a NullPointerException on a missing one; exportMetadata and exportMetrics ask every master
/// for GET_SYSTEM_TOPIC_LIST_FROM_BROKER (305). Asked of the second shard-broker.
#[test]
fn export_commands_get_the_config_keys_and_system_topics_they_read() {
    let broker = ServerProcess::standalone_broker(2);
    let mut client = Client::connect(broker.listening[1].1);
    let answer = client.invoke(RemotingCommand::request(
        rc::GET_BROKER_CONFIG,
        &EmptyHeader {},
    ));
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let config: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    for key in [
        "brokerClusterName",
        "brokerId",
        "brokerName",
        "brokerRole",
        "fileReservedTime",
        "filterServerNums",
        "flushDiskType",
        "maxMessageSize",
        "messageDelayLevel",
        "msgTraceTopicName",
        "slaveReadEnable",
        "traceOn",
        "traceTopicEnable",
        "useTLS",
        "autoCreateTopicEnable",
        "autoCreateSubscriptionGroup",
    ] {
        assert!(config.contains_key(key), "{key} missing from {text}");
    }
    assert_eq!(config["brokerRole"], "ASYNC_MASTER");
    assert_eq!(config["slaveReadEnable"], "false");

    let answer = client.invoke(RemotingCommand::request(
        rc::GET_SYSTEM_TOPIC_LIST_FROM_BROKER,
        &EmptyHeader {},
    ));
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    let list: body::TopicList = decode_lenient("system topics", &answer.body).unwrap();
    let (cluster, name) = (config["brokerClusterName"], config["brokerName"]);
    let mut expected: std::collections::BTreeSet<String> = [
        "TBW102",
        "SCHEDULE_TOPIC_XXXX",
        "BenchmarkTest",
        "RMQ_SYS_TRANS_HALF_TOPIC",
        "RMQ_SYS_TRACE_TOPIC",
        "RMQ_SYS_TRANS_OP_HALF_TOPIC",
        "TRANS_CHECK_MAX_TIME_TOPIC",
        "SELF_TEST_TOPIC",
        "OFFSET_MOVED_EVENT",
        "rmq_sys_wheel_timer",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    expected.extend([
        cluster.to_owned(),
        name.to_owned(),
        format!("{cluster}_REPLY_TOPIC"),
    ]);
    assert_eq!(list.topic_list, expected);
    assert_eq!(list.broker_addr, None);
}

/// VIEW_BROKER_STATS_DATA of one item: (code, remark, the data when found).
fn stats_data(
    client: &mut Client,
    name: &str,
    key: &str,
) -> (
    i32,
    Option<String>,
    Option<thruster_client::protocol::body::admin::BrokerStatsData>,
) {
    use thruster_client::protocol::header::admin::ViewBrokerStatsDataRequestHeader;
    let response = client.invoke(RemotingCommand::request(
        rc::VIEW_BROKER_STATS_DATA,
        &ViewBrokerStatsDataRequestHeader {
            stats_name: name.into(),
            stats_key: key.into(),
        },
    ));
    let data = (response.code == response_code::SUCCESS)
        .then(|| decode_lenient("broker stats data", &response.body).expect("BrokerStatsData"));
    (response.code, response.remark, data)
}

/// Sums over the minute, the hour and the day.
fn sums(data: &thruster_client::protocol::body::admin::BrokerStatsData) -> [i64; 3] {
    [
        data.stats_minute.sum,
        data.stats_hour.sum,
        data.stats_day.sum,
    ]
}

#[test]
fn broker_stats_data_sums_what_was_sent_pulled_and_sent_back() {
    use thruster_client::protocol::header::client::ConsumerSendMsgBackRequestHeader;
    use thruster_client::protocol::message::decode_records;
    use thruster_tests::wire::group_pull_request;
    let broker = ServerProcess::standalone_broker(1);
    let mut client = Client::connect(broker.listening[1].1);
    client.create_topic("Statsd", 1);
    for i in 0..5 {
        let body = format!("message {i}").repeat(i + 1);
        send_v2(
            &mut client,
            "Statsd",
            0,
            encode_properties([]),
            body.as_bytes(),
        );
    }
    let pulled = client.invoke(group_pull_request("StatsG", "Statsd", 0, 0, 0));
    assert_eq!(pulled.code, response_code::SUCCESS);
    let records = decode_records(&pulled.body, true).unwrap();
    assert_eq!(records.len(), 5);
    // The stored records, as pulled: what the sends wrote and the pull carried.
    let stored_bytes = pulled.body.len() as i64;

    let (_, _, puts) = stats_data(&mut client, "TOPIC_PUT_NUMS", "Statsd");
    let puts = puts.expect("the topic's item");
    assert_eq!(sums(&puts), [5, 5, 5]);
    assert_eq!(puts.stats_minute.avgpt, 1.0, "one message per send");
    assert!(puts.stats_minute.tps > 0.0);
    let (_, _, size) = stats_data(&mut client, "TOPIC_PUT_SIZE", "Statsd");
    assert_eq!(sums(&size.unwrap()), [stored_bytes; 3]);
    let (_, _, gets) = stats_data(&mut client, "GROUP_GET_NUMS", "Statsd@StatsG");
    let gets = gets.expect("the group's item");
    assert_eq!(sums(&gets), [5, 5, 5]);
    assert_eq!(gets.stats_day.avgpt, 5.0, "five messages in one pull");
    let (_, _, got_size) = stats_data(&mut client, "GROUP_GET_SIZE", "Statsd@StatsG");
    assert_eq!(sums(&got_size.unwrap()), [stored_bytes; 3]);
    let (_, _, broker_puts) = stats_data(&mut client, "BROKER_PUT_NUMS", "DefaultCluster");
    assert_eq!(sums(&broker_puts.unwrap()), [5, 5, 5]);
    let (_, _, broker_gets) = stats_data(&mut client, "BROKER_GET_NUMS", "DefaultCluster");
    assert_eq!(sums(&broker_gets.unwrap()), [5, 5, 5]);

    // A consumer gives two messages back: counted under its retry topic and group.
    for record in &records[..2] {
        let back = client.invoke(RemotingCommand::request(
            rc::CONSUMER_SEND_MSG_BACK,
            &ConsumerSendMsgBackRequestHeader {
                offset: record.physical_offset,
                group: "StatsG".into(),
                delay_level: 0,
                origin_msg_id: None,
                origin_topic: Some("Statsd".into()),
                unit_mode: None,
                max_reconsume_times: None,
                broker_name: None,
            },
        ));
        assert_eq!(back.code, response_code::SUCCESS, "{:?}", back.remark);
    }
    let (_, _, backs) = stats_data(&mut client, "SNDBCK_PUT_NUMS", "%RETRY%StatsG@StatsG");
    assert_eq!(sums(&backs.unwrap()), [2, 2, 2]);

    // Unknown items: Java's SYSTEM_ERROR and remark.
    for (name, key) in [
        ("TOPIC_PUT_NUMS", "Nope"),
        ("NO_SUCH_STATS", "Statsd"),
        ("GROUP_GET_NUMS", "Statsd"),
        ("BROKER_PUT_NUMS", "OtherCluster"),
    ] {
        let (code, remark, _) = stats_data(&mut client, name, key);
        assert_eq!(code, response_code::SYSTEM_ERROR);
        assert_eq!(
            remark.as_deref(),
            Some(format!("The stats <{name}> <{key}> not exist").as_str())
        );
    }
}

#[test]
fn a_shard_broker_lists_the_connections_made_to_it() {
    use thruster_client::protocol::body::admin::{ConsumerConnection, ProducerConnection};
    use thruster_client::protocol::body::heartbeat::ProducerData;
    use thruster_client::protocol::header::admin::{
        ConsumerGroupRequestHeader, ProducerGroupRequestHeader,
    };
    let namesrv = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let broker = ServerProcess::broker(namesrv.addr, 2, &[]);
    let mut shard0 = Client::connect(broker.addr);
    shard0.create_topic("Listed", 2);
    let brokers = thruster_tests::route_brokers(namesrv.addr, "Listed");
    assert_eq!(brokers.len(), 2, "a broker per shard");
    let mut shard1 = Client::connect(brokers[1].addr);
    // One client, connected to both shard-brokers; another to shard-broker 0 only.
    let heartbeat = |client_id: &str| {
        let data = HeartbeatData {
            client_id: client_id.into(),
            consumer_data_set: vec![ConsumerData {
                group_name: "ListedG".into(),
                consume_type: "CONSUME_PASSIVELY".into(),
                message_model: "CLUSTERING".into(),
                consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: "Listed".into(),
                    sub_string: "*".into(),
                    expression_type: "TAG".into(),
                    ..SubscriptionData::default()
                }],
                unit_mode: false,
            }],
            producer_data_set: vec![ProducerData {
                group_name: "ListedP".into(),
            }],
            ..HeartbeatData::default()
        };
        RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {}).with_body(body::encode(&data))
    };
    let mut only0 = Client::connect(broker.addr);
    for (client, id) in [
        (&mut shard0, "both"),
        (&mut shard1, "both"),
        (&mut only0, "only-0"),
    ] {
        assert_eq!(client.invoke(heartbeat(id)).code, response_code::SUCCESS);
    }
    let consumers = |client: &mut Client| -> Vec<String> {
        let answer = client.invoke(RemotingCommand::request(
            rc::GET_CONSUMER_CONNECTION_LIST,
            &ConsumerGroupRequestHeader {
                consumer_group: "ListedG".into(),
            },
        ));
        assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
        let list: ConsumerConnection = decode_lenient("connections", &answer.body).unwrap();
        list.connection_set
            .into_iter()
            .map(|c| c.client_id)
            .collect()
    };
    let producers = |client: &mut Client| -> Vec<String> {
        let answer = client.invoke(RemotingCommand::request(
            rc::GET_PRODUCER_CONNECTION_LIST,
            &ProducerGroupRequestHeader {
                producer_group: "ListedP".into(),
            },
        ));
        assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
        let list: ProducerConnection = decode_lenient("connections", &answer.body).unwrap();
        list.connection_set
            .into_iter()
            .map(|c| c.client_id)
            .collect()
    };
    // Each lists the connections made to it, once each, as a Java broker does.
    assert_eq!(consumers(&mut shard0), ["both", "only-0"]);
    assert_eq!(consumers(&mut shard1), ["both"]);
    assert_eq!(producers(&mut shard0), ["both", "only-0"]);
    assert_eq!(producers(&mut shard1), ["both"]);
}
