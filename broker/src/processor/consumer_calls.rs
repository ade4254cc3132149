//! Requests the broker forwards to a consumer and answers with the consumer's own answer:
//! GET_CONSUMER_RUNNING_INFO (307) and CONSUME_MESSAGE_DIRECTLY (309), as Java's
//! `callConsumer`, and INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223), which asks every consumer of
//! a group for its offsets (GET_CONSUMER_STATUS_FROM_CLIENT). The request goes to the consumer's connection on whichever shard serves it
//! (`Call::AskConnection`); the answer comes back through that connection's reader
//! (`RequestProcessor::response_arrived`), matched by (connection, opaque).

use std::time::Duration;

use thruster_protocol::body::admin::GetConsumerStatusBody;
use thruster_protocol::header::admin::{ConsumerClientRequestHeader, TopicGroupRequestHeader};
use thruster_protocol::message::decode_offset_msg_id;
use thruster_protocol::{request_code as rc, response_code, LanguageCode, RemotingCommand};

use super::{BrokerProcessor, Handled};
use crate::meta::clients::ConnKey;
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};
use crate::store::config::shard_of_offset;

/// Answers the broker waits for at once on one shard; past it a call is refused.
pub const CLIENT_CALLS_MAX: usize = 1024;
/// How long a consumer has to answer (Java's `invokeSync` timeout for these calls).
const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `command` to this shard's connection `id` and waits for the answer.
pub async fn ask_local_connection(
    shard: &Shard,
    id: u64,
    mut command: RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let Some(outbound) = shard.connections.borrow().get(&id).cloned() else {
        return Err(Failure::system("the consumer's connection is gone"));
    };
    if shard.client_calls.borrow().len() >= CLIENT_CALLS_MAX {
        return Err(Failure::new(
            response_code::SYSTEM_BUSY,
            format!("{CLIENT_CALLS_MAX} requests to clients already wait for answers"),
        ));
    }
    let opaque = shard.next_client_opaque.get();
    shard
        .next_client_opaque
        .set(opaque.checked_add(1).unwrap_or(1));
    command.opaque = opaque;
    command.language = LanguageCode::Java;
    let (answer_tx, answer_rx) = runtime::bounded_channel(1);
    shard
        .client_calls
        .borrow_mut()
        .insert((id, opaque), answer_tx);
    let sent = outbound.try_send(command.into()).is_ok();
    let answer = if sent {
        runtime::timeout(CLIENT_ANSWER_TIMEOUT, answer_rx.recv()).await
    } else {
        None
    };
    shard.client_calls.borrow_mut().remove(&(id, opaque));
    match answer {
        Some(Some(answer)) => Ok(answer),
        _ if !sent => Err(Failure::system("the consumer's connection is busy or gone")),
        _ => Err(Failure::system(format!(
            "the consumer did not answer within {CLIENT_ANSWER_TIMEOUT:?}"
        ))),
    }
}

/// A client's answer to a request this shard sent it.
pub fn answer_arrived(shard: &Shard, connection: u64, response: RemotingCommand) {
    let waiter = shard
        .client_calls
        .borrow_mut()
        .remove(&(connection, response.opaque));
    match waiter {
        Some(waiter) => {
            let _ = waiter.try_send(response);
        }
        None => tracing::debug!(
            connection,
            opaque = response.opaque,
            "answer to no request of ours dropped"
        ),
    }
}

/// Sends `command` to the client connection `conn`, wherever it is served, and waits for
/// its answer.
async fn ask_connection(
    processor: &BrokerProcessor,
    conn: ConnKey,
    command: RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let shard = &processor.shard;
    if conn.shard == shard.id {
        return ask_local_connection(shard, conn.id, command).await;
    }
    let call = Call::AskConnection {
        id: conn.id,
        command,
    };
    match shard.call(processor, conn.shard, call).await {
        CallReply::ClientAnswer(answer) => answer,
        _ => Err(Failure::new(
            response_code::SERVICE_NOT_AVAILABLE,
            format!("shard {} is not available", conn.shard),
        )),
    }
}

/// The connection of `client_id` in consumer `group` (Java `findChannel`).
fn consumer_connection(
    processor: &BrokerProcessor,
    group: &str,
    client_id: &str,
) -> Result<ConnKey, Failure> {
    let clients = processor.shard.clients.borrow();
    clients
        .consumer_members(group)
        .and_then(|(_, members)| {
            members
                .into_iter()
                .find(|m| m.client_id == client_id)
                .map(|m| m.conn)
        })
        .ok_or_else(|| Failure::system(format!("The Consumer <{group}> <{client_id}> not online")))
}

/// Forwards `forwarded` (the request, as a two-way request) to the consumer the request's
/// header names and answers with the consumer's answer (code, remark, body).
async fn call_consumer(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
    mut forwarded: RemotingCommand,
) -> Handled {
    let header: ConsumerClientRequestHeader = request.decode_header()?;
    let client_id = header.client_id.unwrap_or_default();
    forwarded.flag = 0;
    let conn = consumer_connection(processor, &header.consumer_group, &client_id)?;
    let answer = ask_connection(processor, conn, forwarded).await?;
    let mut response = request.response_to(answer.code, answer.remark.clone());
    response.body = answer.body;
    Ok(response.into())
}

/// GET_CONSUMER_RUNNING_INFO: the consumer's `ConsumerRunningInfo`, from the consumer.
pub async fn running_info(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    call_consumer(processor, request, request.clone()).await
}

/// CONSUME_MESSAGE_DIRECTLY: the stored message (by its offset id) is handed to the consumer
/// to consume now; its `ConsumeMessageDirectlyResult` is the answer.
pub async fn consume_directly(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ConsumerClientRequestHeader = request.decode_header()?;
    let msg_id = header.msg_id.clone().unwrap_or_default();
    let (_, offset) = decode_offset_msg_id(&msg_id)
        .ok_or_else(|| Failure::system(format!("{msg_id} is not an offset message id")))?;
    let owner = usize::from(shard_of_offset(offset.max(0) as u64));
    if owner != processor.shard.id {
        return Err(Failure::system(format!(
            "message {msg_id} is stored on another broker ({owner}); ask that one"
        )));
    }
    let record = processor
        .shard
        .store
        .read_record(offset as u64)
        .await?
        .ok_or_else(|| Failure::system(format!("no message at {msg_id}")))?;
    let mut forwarded = request.clone().with_body(record.to_vec());
    forwarded
        .ext_fields
        .insert("brokerName", processor.shard.broker_name.clone());
    call_consumer(processor, request, forwarded).await
}

/// INVOKE_BROKER_TO_GET_CONSUMER_STATUS: each online consumer of the group (only the one whose
/// client id is `clientAddr`, when given, as Java reads it) is asked for its offsets in the
/// topic; the answer maps client id to its table. Consumers that fail to answer are left out.
pub async fn consumer_status(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: TopicGroupRequestHeader = request.decode_header()?;
    let members = processor.shard.clients.borrow().consumers_of(&header.group);
    if members.is_empty() {
        return Err(Failure::system(format!(
            "No Any Consumer online in the consumer group: [{}]",
            header.group
        )));
    }
    let only = header.client_addr.as_deref().filter(|c| !c.is_empty());
    let mut status = GetConsumerStatusBody::default();
    for member in members {
        if only.is_some_and(|id| id != member.client_id) {
            continue;
        }
        let ask = RemotingCommand::request(
            rc::GET_CONSUMER_STATUS_FROM_CLIENT,
            &TopicGroupRequestHeader {
                client_addr: None,
                ..header.clone()
            },
        );
        match ask_connection(processor, member.conn, ask).await {
            Ok(answer) if answer.code == response_code::SUCCESS => {
                match GetConsumerStatusBody::decode(&answer.body) {
                    Ok(body) => {
                        status
                            .consumer_table
                            .insert(member.client_id, body.message_queue_table);
                    }
                    Err(error) => tracing::debug!(%error, "consumer status unreadable"),
                }
            }
            Ok(answer) => {
                tracing::debug!(code = answer.code, client = %member.client_id, "consumer status refused")
            }
            Err(failure) => {
                tracing::debug!(remark = %failure.remark, client = %member.client_id, "consumer status not answered")
            }
        }
    }
    Ok(request.success().with_body(status.encode()).into())
}
