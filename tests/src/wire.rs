//! Requests the multi-process tests send frame by frame, and what they read back.

use std::collections::BTreeMap;

use thruster_client::protocol::body::{decode_lenient, KvTable};
use thruster_client::protocol::header::pull::{pull_sys_flag, PullMessageRequestHeader};
use thruster_client::protocol::header::send::{
    SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use thruster_client::protocol::header::EmptyHeader;
use thruster_client::protocol::message::{decode_records, DecodedRecord};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};

use crate::Client;

/// The queue count a send asks for when it creates a topic (`defaultTopicQueueNums`).
pub const SEND_DEFAULT_QUEUES: i32 = 4;

/// A SEND_MESSAGE_V2 header for `queue_id` of `topic` with `properties`.
pub fn v2_header(
    topic: &str,
    queue_id: i32,
    properties: Option<String>,
) -> SendMessageRequestHeaderV2 {
    SendMessageRequestHeaderV2 {
        a: "test-producer".into(),
        b: topic.into(),
        c: "TBW102".into(),
        d: SEND_DEFAULT_QUEUES,
        e: queue_id,
        f: 0,
        g: 1_700_000_000_000,
        h: 0,
        i: properties,
        j: None,
        k: None,
        l: None,
        m: None,
        n: None,
    }
}

/// Sends `body` to `topic`'s queue `queue_id` with `properties` (SEND_MESSAGE_V2); panics
/// unless it is stored.
pub fn send_v2(
    client: &mut Client,
    topic: &str,
    queue_id: i32,
    properties: String,
    body: &[u8],
) -> SendMessageResponseHeader {
    let header = v2_header(topic, queue_id, Some(properties));
    let request = RemotingCommand::request(rc::SEND_MESSAGE_V2, &header).with_body(body.to_vec());
    let response = client.invoke(request);
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
    response.decode_header().expect("send response header")
}

/// A PULL_MESSAGE of up to 32 messages of group `test-group`, held `suspend_ms` when empty.
pub fn pull_request(topic: &str, queue_id: i32, offset: i64, suspend_ms: i64) -> RemotingCommand {
    group_pull_request("test-group", topic, queue_id, offset, suspend_ms)
}

/// [`pull_request`] for consumer group `group`.
pub fn group_pull_request(
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
    suspend_ms: i64,
) -> RemotingCommand {
    let flags = pull_sys_flag::SUBSCRIPTION
        | if suspend_ms > 0 {
            pull_sys_flag::SUSPEND
        } else {
            0
        };
    RemotingCommand::request(
        rc::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id,
            queue_offset: offset,
            max_msg_nums: 32,
            sys_flag: flags,
            commit_offset: 0,
            suspend_timeout_millis: suspend_ms,
            subscription: Some("*".into()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
            broker_name: None,
        },
    )
}

/// Every record of a queue from offset 0, in order (checked: queue offsets count up).
pub fn pull_records(client: &mut Client, topic: &str, queue_id: i32) -> Vec<DecodedRecord> {
    let mut out = Vec::new();
    loop {
        let offset = out.len() as i64;
        let response = client.invoke(pull_request(topic, queue_id, offset, 0));
        if response.code != response_code::SUCCESS {
            assert_eq!(
                response.code,
                response_code::PULL_NOT_FOUND,
                "{:?}",
                response.remark
            );
            return out;
        }
        let records = decode_records(&response.body, true).expect("stored records");
        for (i, record) in records.into_iter().enumerate() {
            assert_eq!(
                record.queue_offset,
                offset + i as i64,
                "records in queue order"
            );
            assert_eq!(record.queue_id, queue_id);
            out.push(record);
        }
    }
}

/// GET_BROKER_RUNTIME_INFO as a map.
pub fn runtime_info(client: &mut Client) -> BTreeMap<String, String> {
    let info = client.invoke(RemotingCommand::request(
        rc::GET_BROKER_RUNTIME_INFO,
        &EmptyHeader {},
    ));
    let table: KvTable = decode_lenient("runtime info", &info.body).unwrap();
    table.table.into_iter().collect()
}
