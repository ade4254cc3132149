//! Request-reply (RocketMQ 4.6+) without I/O: what a request carries, the reply a responder
//! makes of it, and the reply a broker pushes back (PUSH_REPLY_MESSAGE_TO_CLIENT).

use std::net::SocketAddr;

use super::error::{ClientError, ClientResult};
use super::message::{Message, MessageExt};
use crate::protocol::header::send::ReplyMessageRequestHeader;
use crate::protocol::message::{parse_properties, property};
use crate::protocol::RemotingCommand;

/// `MSG_TYPE` of a reply (`MixAll.REPLY_MESSAGE_FLAG`): it is sent with SEND_REPLY_MESSAGE_V2.
pub const REPLY_MESSAGE_FLAG: &str = "reply";

/// The topic replies of `cluster` go to (`MixAll.getReplyTopic`).
pub fn reply_topic(cluster: &str) -> String {
    format!("{cluster}_REPLY_TOPIC")
}

/// `message` as a request: the reply names `correlation_id` and goes to `client_id`, which
/// waits `timeout_ms` for it.
pub fn request_message(
    message: Message,
    correlation_id: &str,
    client_id: &str,
    timeout_ms: u64,
) -> Message {
    message
        .with_property(property::CORRELATION_ID, correlation_id)
        .with_property(property::MESSAGE_REPLY_TO_CLIENT, client_id)
        .with_property(property::MESSAGE_TTL, timeout_ms.to_string())
}

/// The reply to `request` (RocketMQ's `MessageUtil.createReplyMessage`): to the reply topic of
/// the cluster that stored the request, naming its correlation id and requester.
pub fn reply_message(request: &MessageExt, body: impl Into<bytes::Bytes>) -> ClientResult<Message> {
    let cluster = request.property(property::CLUSTER).ok_or_else(|| {
        ClientError::InvalidArgument(format!(
            "create reply message fail, requestMessage error, property[{}] is null.",
            property::CLUSTER
        ))
    })?;
    let mut reply = Message::new(reply_topic(cluster), body)
        .with_property(property::MESSAGE_TYPE, REPLY_MESSAGE_FLAG);
    for name in [
        property::CORRELATION_ID,
        property::MESSAGE_REPLY_TO_CLIENT,
        property::MESSAGE_TTL,
    ] {
        if let Some(value) = request.property(name) {
            reply = reply.with_property(name, value);
        }
    }
    Ok(reply)
}

/// Whether `message` is a reply (sent with the reply codes).
pub fn is_reply(message: &Message) -> bool {
    message.property(property::MESSAGE_TYPE) == Some(REPLY_MESSAGE_FLAG)
}

/// The reply a broker pushed, as the requester receives it.
pub fn pushed_reply(addr: SocketAddr, request: &RemotingCommand) -> ClientResult<MessageExt> {
    let header: ReplyMessageRequestHeader =
        request.decode_header().map_err(|e| ClientError::Protocol {
            addr,
            reason: e.to_string(),
        })?;
    let properties = parse_properties(header.properties.as_deref().unwrap_or_default());
    let store_host = header.store_host.parse().unwrap_or(addr);
    let msg_id = properties
        .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
        .cloned()
        .unwrap_or_default();
    Ok(MessageExt {
        topic: header.topic,
        queue_id: header.queue_id,
        queue_offset: 0,
        commit_log_offset: 0,
        body: request.body.clone(),
        properties,
        born_timestamp: header.born_timestamp,
        store_timestamp: header.store_timestamp,
        store_host,
        reconsume_times: header.reconsume_times.unwrap_or(0),
        msg_id,
        offset_msg_id: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::offset_msg_id;

    #[test]
    fn a_reply_names_the_request_it_answers() {
        let request = request_message(Message::new("Q", "ask"), "C1", "127.0.0.1@7", 3000);
        assert_eq!(request.property("CORRELATION_ID"), Some("C1"));
        assert_eq!(request.property("REPLY_TO_CLIENT"), Some("127.0.0.1@7"));
        assert_eq!(request.property("TTL"), Some("3000"));
        let addr: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        let mut received = MessageExt {
            topic: "Q".into(),
            queue_id: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            body: "ask".into(),
            properties: request.properties.clone(),
            born_timestamp: 0,
            store_timestamp: 0,
            store_host: addr,
            reconsume_times: 0,
            msg_id: "U".into(),
            offset_msg_id: offset_msg_id(addr, 0),
        };
        assert!(
            reply_message(&received, "x").is_err(),
            "no CLUSTER: no reply topic"
        );
        received
            .properties
            .insert("CLUSTER".into(), "DefaultCluster".into());
        let reply = reply_message(&received, "answer").unwrap();
        assert_eq!(reply.topic, "DefaultCluster_REPLY_TOPIC");
        assert!(is_reply(&reply));
        assert_eq!(reply.property("CORRELATION_ID"), Some("C1"));
        assert_eq!(reply.property("REPLY_TO_CLIENT"), Some("127.0.0.1@7"));
        assert_eq!(reply.property("TTL"), Some("3000"));
    }
}
