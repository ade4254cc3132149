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
