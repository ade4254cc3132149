//! The requests producers and consumers send, and what their responses mean, without I/O:
//! each front end builds a request here, moves it over its own sockets, and hands the response
//! back here.

use std::net::SocketAddr;

use bytes::BytesMut;

use super::error::{ClientError, ClientResult};
use super::message::{Message, MessageExt, MessageView};
use crate::protocol::batch::{encode_entry, BatchEntry};
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::header::pull::{
    pull_sys_flag, PullMessageRequestHeader, PullMessageResponseHeader,
};
use crate::protocol::header::send::{SendMessageRequestHeaderV2, SendMessageResponseHeader};
use crate::protocol::header::CommandHeader;
use crate::protocol::message::{property, record_views, sys_flag};
use crate::protocol::{request_code as rc, response_code, RemotingCommand};

/// The subscription-expression parser lives in the protocol crate; the broker uses it too.
pub use crate::protocol::expression::expression_tags;

/// `defaultTopic` of sends: the broker's auto-create template.
pub const AUTO_CREATE_TOPIC: &str = "TBW102";
/// Queues a topic auto-created by a send gets (RocketMQ producer default).
pub const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;
/// Messages one pull asks for (RocketMQ default).
pub const PULL_BATCH_SIZE: i32 = 32;

/// How the broker stored a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    SendOk,
    /// Stored, but the sync flush did not finish in time.
    FlushDiskTimeout,
    /// Stored, but the slave did not confirm in time.
    FlushSlaveTimeout,
    /// Stored, but no slave was available.
    SlaveNotAvailable,
}

#[derive(Debug, Clone)]
pub struct SendResult {
    pub status: SendStatus,
    /// The producer's id(s) (`UNIQ_KEY`); comma-joined for a batch.
    pub msg_id: String,
    /// The broker's id(s) (store host + CommitLog offset); comma-joined for a batch.
    pub offset_msg_id: String,
    pub queue: MessageQueue,
    /// Queue offset of the (first) message.
    pub queue_offset: i64,
}

/// Codes after which a producer sends again to another broker (4.9's set plus SYSTEM_BUSY).
pub fn send_retryable(code: i32) -> bool {
    matches!(
        code,
        response_code::TOPIC_NOT_EXIST
            | response_code::SERVICE_NOT_AVAILABLE
            | response_code::SYSTEM_ERROR
            | response_code::NO_PERMISSION
            | response_code::NO_BUYER_ID
            | response_code::NOT_IN_CURRENT_UNIT
            | response_code::SYSTEM_BUSY
    )
}

/// Wall-clock time, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn send_header(
    group: &str,
    topic: &str,
    queue: &MessageQueue,
    flag: i32,
    properties: String,
    batch: bool,
) -> SendMessageRequestHeaderV2 {
    SendMessageRequestHeaderV2 {
        a: group.to_owned(),
        b: topic.to_owned(),
        c: AUTO_CREATE_TOPIC.into(),
        d: DEFAULT_TOPIC_QUEUE_NUMS,
        e: queue.queue_id,
        f: 0,
        g: now_ms(),
        h: flag,
        i: Some(properties),
        j: Some(0),
        k: Some(false),
        l: None,
        m: batch.then_some(true),
        n: Some(queue.broker_name.clone()),
    }
}

/// SEND_MESSAGE_V2 for `message` to `queue`, carrying the message id `msg_id`.
pub fn send_request(
    group: &str,
    message: &Message,
    queue: &MessageQueue,
    msg_id: &str,
) -> RemotingCommand {
    let mut header = send_header(
        group,
        &message.topic,
        queue,
        message.flag,
        message.properties_string(msg_id),
        false,
    );
    if message.property(property::TRANSACTION_PREPARED) == Some("true") {
        // A half message: the sysFlag says so too, as Java's producer sets it.
        header.f |= sys_flag::TRANSACTION_PREPARED;
    }
    // A reply goes with the reply code: the broker pushes it to its requester.
    let code = if super::reply::is_reply(message) {
        rc::SEND_REPLY_MESSAGE_V2
    } else {
        rc::SEND_MESSAGE_V2
    };
    RemotingCommand::request(code, &header).with_body(message.body.clone())
}

/// SEND_BATCH_MESSAGE for messages of one topic (`msg_ids[i]` for `messages[i]`).
pub fn batch_request(
    group: &str,
    messages: &[Message],
    queue: &MessageQueue,
    msg_ids: &[String],
) -> ClientResult<RemotingCommand> {
    let Some(first) = messages.first() else {
        return Err(ClientError::InvalidArgument("an empty batch".into()));
    };
    if messages
        .iter()
        .any(|m| m.topic != first.topic || m.delay_level > 0)
    {
        return Err(ClientError::InvalidArgument(
            "a batch is one topic, without delay levels".into(),
        ));
    }
    assert_eq!(messages.len(), msg_ids.len(), "one id per message");
    let mut body = BytesMut::new();
    for (message, id) in messages.iter().zip(msg_ids) {
        encode_entry(
            &BatchEntry {
                flag: message.flag,
                body: message.body.clone(),
                properties: message.properties_string(id),
            },
            &mut body,
        );
    }
    let header = send_header(group, &first.topic, queue, 0, String::new(), true);
    Ok(RemotingCommand::request(rc::SEND_BATCH_MESSAGE, &header).with_body(body))
}

/// A response's typed header; a malformed one is a protocol error naming the peer.
pub fn response_header<H: CommandHeader>(
    addr: SocketAddr,
    response: &RemotingCommand,
) -> ClientResult<H> {
    response.decode_header().map_err(|e| ClientError::Protocol {
        addr,
        reason: e.to_string(),
    })
}

/// A refusal: the broker's code and remark.
pub fn refusal(addr: SocketAddr, response: RemotingCommand) -> ClientError {
    ClientError::Broker {
        addr,
        code: response.code,
        remark: response.remark.unwrap_or_default(),
    }
}

/// What a send response means.
pub fn parse_send_response(
    addr: SocketAddr,
    response: RemotingCommand,
    msg_id: String,
    queue: MessageQueue,
) -> ClientResult<SendResult> {
    let status = match response.code {
        response_code::SUCCESS => SendStatus::SendOk,
        response_code::FLUSH_DISK_TIMEOUT => SendStatus::FlushDiskTimeout,
        response_code::FLUSH_SLAVE_TIMEOUT => SendStatus::FlushSlaveTimeout,
        response_code::SLAVE_NOT_AVAILABLE => SendStatus::SlaveNotAvailable,
        _ => return Err(refusal(addr, response)),
    };
    let header: SendMessageResponseHeader = response_header(addr, &response)?;
    Ok(SendResult {
        status,
        msg_id,
        offset_msg_id: header.msg_id,
        queue: MessageQueue {
            queue_id: header.queue_id,
            ..queue
        },
        queue_offset: header.queue_offset,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    Found,
    /// Nothing new (after the long poll, if one was asked for).
    NoNewMessage,
    /// Entries were scanned but none matched the tag filter: pull again from `next_begin_offset`.
    NoMatchedMessage,
    /// The offset was outside the queue: continue from `next_begin_offset`.
    OffsetIllegal,
}

/// What a pull got: messages as `MessageExt` (every field decoded) or, from the `*_view`
/// pulls, as `MessageView` (read in place from the response, fields decoded on demand).
#[derive(Debug, Clone)]
pub struct PullResult<M = MessageExt> {
    pub status: PullStatus,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    pub messages: Vec<M>,
}

impl PullResult<MessageView> {
    /// The same result with every message decoded.
    pub fn into_message_ext(self) -> PullResult {
        PullResult {
            status: self.status,
            next_begin_offset: self.next_begin_offset,
            min_offset: self.min_offset,
            max_offset: self.max_offset,
            messages: self
                .messages
                .iter()
                .map(MessageView::to_message_ext)
                .collect(),
        }
    }
}

/// PULL_MESSAGE: up to `max` messages of `queue` matching `expression` from `offset`; the
/// broker may hold it `suspend_ms` (0: answer at once); `commit_offset` is committed for the
/// group on the way.
pub fn pull_request(
    group: &str,
    queue: &MessageQueue,
    expression: &str,
    offset: i64,
    max: i32,
    suspend_ms: i64,
    commit_offset: Option<i64>,
) -> RemotingCommand {
    let mut sys_flag = pull_sys_flag::SUBSCRIPTION;
    if suspend_ms > 0 {
        sys_flag |= pull_sys_flag::SUSPEND;
    }
    if commit_offset.is_some() {
        sys_flag |= pull_sys_flag::COMMIT_OFFSET;
    }
    RemotingCommand::request(
        rc::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: group.to_owned(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            queue_offset: offset,
            max_msg_nums: max,
            sys_flag,
            commit_offset: commit_offset.unwrap_or(0),
            suspend_timeout_millis: suspend_ms,
            subscription: Some(expression.to_owned()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
            broker_name: Some(queue.broker_name.clone()),
        },
    )
}

/// What a pull response means; found records are decoded and filtered by exact tag (the
/// broker filters by tag hash only, as RocketMQ's).
pub fn parse_pull_response(
    addr: SocketAddr,
    response: RemotingCommand,
    expression: &str,
) -> ClientResult<PullResult> {
    parse_pull_response_view(addr, response, expression).map(PullResult::into_message_ext)
}

/// [`parse_pull_response`] without decoding: each found record is validated and read in place
/// (no allocation per message), and filtered by exact tag.
pub fn parse_pull_response_view(
    addr: SocketAddr,
    response: RemotingCommand,
    expression: &str,
) -> ClientResult<PullResult<MessageView>> {
    let status = match response.code {
        response_code::SUCCESS => PullStatus::Found,
        response_code::PULL_NOT_FOUND => PullStatus::NoNewMessage,
        response_code::PULL_RETRY_IMMEDIATELY => PullStatus::NoMatchedMessage,
        response_code::PULL_OFFSET_MOVED => PullStatus::OffsetIllegal,
        _ => return Err(refusal(addr, response)),
    };
    let header: PullMessageResponseHeader = response_header(addr, &response)?;
    let mut messages = Vec::new();
    if status == PullStatus::Found {
        let filter = TagFilter::new(expression);
        for record in record_views(&response.body, false) {
            let message = MessageView::new(record.map_err(|e| ClientError::Protocol {
                addr,
                reason: format!("pull body: {e}"),
            })?);
            if filter.accepts(message.tags()) {
                messages.push(message);
            }
        }
    }
    Ok(PullResult {
        status,
        next_begin_offset: header.next_begin_offset,
        min_offset: header.min_offset,
        max_offset: header.max_offset,
        messages,
    })
}

/// The exact tag check applied to pulled messages.
#[derive(Debug, Clone)]
pub struct TagFilter {
    tags: Option<Vec<String>>,
}

impl TagFilter {
    pub fn new(expression: &str) -> TagFilter {
        TagFilter {
            tags: expression_tags(expression),
        }
    }

    pub fn accepts(&self, tags: Option<&str>) -> bool {
        match (&self.tags, tags) {
            (None, _) => true,
            (Some(wanted), Some(tags)) => wanted.iter().any(|w| w == tags),
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::CommandHeader;
    use crate::protocol::message::find_property;
    use bytes::Bytes;

    fn queue() -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: 2,
        }
    }

    #[test]
    fn exact_tag_filter() {
        assert!(TagFilter::new("*").accepts(None));
        let filter = TagFilter::new("a || b");
        assert!(filter.accepts(Some("a")) && filter.accepts(Some("b")));
        assert!(!filter.accepts(Some("c")) && !filter.accepts(None));
    }

    #[test]
    fn send_requests_carry_queue_broker_and_id() {
        let message = Message::new("T", "body").with_tags("x");
        let request = send_request("g", &message, &queue(), "ID");
        let header = SendMessageRequestHeaderV2::decode(&request.ext_fields).unwrap();
        assert_eq!(
            (header.b.as_str(), header.e, header.n.as_deref()),
            ("T", 2, Some("b"))
        );
        assert_eq!(
            find_property(header.i.as_deref().unwrap(), "UNIQ_KEY"),
            Some("ID")
        );
        assert_eq!(request.body.as_ref(), b"body");
        let batch = batch_request(
            "g",
            &[message.clone(), message],
            &queue(),
            &["1".into(), "2".into()],
        )
        .unwrap();
        assert_eq!(batch.code, rc::SEND_BATCH_MESSAGE);
        assert!(batch_request("g", &[], &queue(), &[]).is_err());
    }

    /// The in-place pull and the decoding pull keep the same messages (exact tag filter) with
    /// the same fields, and refuse the same corrupt body.
    #[test]
    fn view_and_decoded_pulls_agree() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let response = |body: Bytes| {
            let request = RemotingCommand::bare_request(rc::PULL_MESSAGE);
            let mut response = request.success().with_header(&PullMessageResponseHeader {
                suggest_which_broker_id: 0,
                next_begin_offset: 45,
                min_offset: 0,
                max_offset: 45,
                offset_delta: None,
                topic_sys_flag: None,
                group_sys_flag: None,
                forbidden_type: None,
            });
            response.body = body;
            response
        };
        let body = crate::core::message::tests::pull_body();
        for expression in ["*", "TagA", "TagB || TagC", "TagC"] {
            let eager = parse_pull_response(addr, response(body.clone()), expression).unwrap();
            let view = parse_pull_response_view(addr, response(body.clone()), expression).unwrap();
            assert_eq!(
                (view.status, view.next_begin_offset, view.max_offset),
                (eager.status, eager.next_begin_offset, eager.max_offset)
            );
            assert_eq!(
                view.messages
                    .iter()
                    .map(|m| m.queue_offset())
                    .collect::<Vec<_>>(),
                eager
                    .messages
                    .iter()
                    .map(|m| m.queue_offset)
                    .collect::<Vec<_>>()
            );
            for (view, ext) in view.messages.iter().zip(&eager.messages) {
                assert_eq!(view.msg_id(), ext.msg_id);
                assert_eq!(view.body(), ext.body);
            }
        }
        let tag_a = parse_pull_response_view(addr, response(body.clone()), "TagA").unwrap();
        assert_eq!(
            tag_a
                .messages
                .iter()
                .map(|m| m.queue_offset())
                .collect::<Vec<_>>(),
            [40, 43, 44]
        );
        let mut corrupt = body.to_vec();
        corrupt[body.len() - 3] = 0xFF; // not UTF-8, in the last record's properties
        let corrupt = Bytes::from(corrupt);
        let eager = parse_pull_response(addr, response(corrupt.clone()), "*").unwrap_err();
        let view = parse_pull_response_view(addr, response(corrupt), "*").unwrap_err();
        assert_eq!(eager.to_string(), view.to_string());
        assert!(view.to_string().contains("not UTF-8"), "{view}");
    }

    #[test]
    fn send_responses_map_codes() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let request = RemotingCommand::bare_request(rc::SEND_MESSAGE_V2);
        let ok = request.success().with_header(&SendMessageResponseHeader {
            msg_id: "OFF".into(),
            queue_id: 2,
            queue_offset: 7,
            transaction_id: None,
            batch_uniq_id: None,
            msg_region: None,
            trace_on: None,
        });
        let result = parse_send_response(addr, ok, "ID".into(), queue()).unwrap();
        assert_eq!(
            (result.status, result.queue_offset),
            (SendStatus::SendOk, 7)
        );
        let refused = request.error(response_code::MESSAGE_ILLEGAL, "too big");
        let error = parse_send_response(addr, refused, "ID".into(), queue()).unwrap_err();
        assert_eq!(error.response_code(), Some(response_code::MESSAGE_ILLEGAL));
        assert!(!send_retryable(response_code::MESSAGE_ILLEGAL));
        assert!(send_retryable(response_code::SERVICE_NOT_AVAILABLE));
    }
}
