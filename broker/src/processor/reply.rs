//! SEND_REPLY_MESSAGE (324) and SEND_REPLY_MESSAGE_V2 (325): request-reply (RocketMQ 4.6+).
//!
//! A requester sends a request message carrying `CORRELATION_ID`, `REPLY_TO_CLIENT` (its
//! client id) and `TTL`; a consumer of it answers with a reply message (`MSG_TYPE=reply`, the
//! same three properties, topic `<cluster>_REPLY_TOPIC`) sent with these codes. The broker
//! pushes the reply to a connection of the client `REPLY_TO_CLIENT` names with
//! PUSH_REPLY_MESSAGE_TO_CLIENT (326), found in the replicated client table on whichever shard
//! serves it (one hop when another shard does), and, with `storeReplyMessageEnable`, also
//! stores it in its topic. The answer is SUCCESS once the push is queued on the requester's
//! connection (RocketMQ waits for the requester's acknowledgement; the push here is one-way),
//! SYSTEM_ERROR when no connection of that client is known.

use std::net::SocketAddr;

use thruster_protocol::header::send::{
    ReplyMessageRequestHeader, SendMessageRequestHeader, SendMessageResponseHeader,
};
use thruster_protocol::message::{self, encode_properties, find_property, property};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{debug, warn};

use super::schedule::{put_anywhere, without};
use super::{send, send_to_connection, BrokerProcessor, Handled};
use crate::remoting::{ConnectionContext, Failure};
use crate::runtime;
use crate::store::PutStatus;

/// Pushes the reply to its requester, stores it (when enabled), and answers the responder.
pub async fn send_reply(
    processor: &BrokerProcessor,
    context: &ConnectionContext,
    request: &RemotingCommand,
) -> Handled {
    let shard = &processor.shard;
    let (header, _, _) = send::resolve(processor, request).await?;
    let properties = header.properties.clone().unwrap_or_default();
    let pushed = push(processor, context.peer, &header, request, &properties).await;
    let mut stored = SendMessageResponseHeader {
        // RocketMQ's placeholder when the reply is not stored ("to avoid client decoding
        // exception").
        msg_id: "0".to_owned(),
        queue_id: header.queue_id,
        queue_offset: 0,
        transaction_id: None,
        batch_uniq_id: None,
        msg_region: Some(shard.config.region_id.clone()),
        trace_on: Some(shard.config.trace_on.to_string()),
    };
    if shard.config.store_reply_message_enable {
        let messages =
            send::messages_to_put(shard, request, &header, &properties, None, context.peer)?;
        for message in messages {
            let result = put_anywhere(processor, message).await;
            match result.status {
                PutStatus::Ok | PutStatus::FlushDiskTimeout => {
                    let offset = result.phys_offsets.first().copied().unwrap_or(0) as i64;
                    stored.msg_id = message::offset_msg_id(shard.broker_addr, offset);
                    stored.queue_offset = result.queue_offset as i64;
                }
                status => warn!(topic = header.topic, ?status, "reply message not stored"),
            }
        }
    }
    match pushed {
        Ok(()) => Ok(request
            .response_to(response_code::SUCCESS, None)
            .with_header(&stored)
            .into()),
        Err(remark) => Err(Failure::new(response_code::SYSTEM_ERROR, remark)),
    }
}

/// PUSH_REPLY_MESSAGE_TO_CLIENT to a connection of the client `REPLY_TO_CLIENT` names (this
/// shard's first); the remark says why not.
async fn push(
    processor: &BrokerProcessor,
    responder: SocketAddr,
    header: &SendMessageRequestHeader,
    request: &RemotingCommand,
    properties: &str,
) -> Result<(), String> {
    let shard = &processor.shard;
    let Some(client_id) = find_property(properties, property::MESSAGE_REPLY_TO_CLIENT) else {
        return Err(format!(
            "reply message properties[{}] is null",
            property::MESSAGE_REPLY_TO_CLIENT
        ));
    };
    let mut connections = shard.clients.borrow().client_connections(client_id);
    if connections.is_empty() {
        return Err(format!(
            "push reply message fail, channel of <{client_id}> not found."
        ));
    }
    connections.sort_by_key(|c| c.shard != shard.id);
    let now_ms = runtime::now_ms();
    let mut pushed_properties = without(properties, &[property::PUSH_REPLY_TIME]);
    pushed_properties.push_str(&encode_properties([(
        property::PUSH_REPLY_TIME,
        now_ms.to_string().as_str(),
    )]));
    let push_header = ReplyMessageRequestHeader {
        producer_group: header.producer_group.clone(),
        topic: header.topic.clone(),
        default_topic: header.default_topic.clone(),
        default_topic_queue_nums: header.default_topic_queue_nums,
        queue_id: header.queue_id,
        sys_flag: header.sys_flag,
        born_timestamp: header.born_timestamp,
        flag: header.flag,
        properties: Some(pushed_properties),
        reconsume_times: header.reconsume_times,
        unit_mode: header.unit_mode,
        born_host: message::canonical_host(responder).to_string(),
        store_host: shard.broker_addr.to_string(),
        store_timestamp: now_ms,
    };
    let command = RemotingCommand::request(rc::PUSH_REPLY_MESSAGE_TO_CLIENT, &push_header)
        .with_body(request.body.clone())
        .oneway();
    for conn in connections {
        if send_to_connection(processor, conn, command.clone()).await {
            debug!(client_id, shard = conn.shard, "reply pushed");
            return Ok(());
        }
    }
    Err(format!("push reply message to {client_id} fail."))
}
