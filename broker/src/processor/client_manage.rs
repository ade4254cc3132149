//! HEART_BEAT, UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP, CHECK_CLIENT_CONFIG, served on
//! the shard that holds the connection, against the replicated client table.

use std::collections::BTreeSet;

use thruster_protocol::body::heartbeat::{
    CheckClientRequestBody, ConsumerListBody, HeartbeatData, LockBatchRequestBody,
    LockBatchResponseBody, MessageQueue,
};
use thruster_protocol::body::{self, decode_lenient};
use thruster_protocol::header::client::{
    GetConsumerListByGroupRequestHeader, UnregisterClientRequestHeader,
};
use thruster_protocol::{response_code, RemotingCommand};

use super::{groups, notify_consumer_ids_changed, BrokerProcessor, Handled};
use crate::meta::clients::{ClientEvent, ClientInfo, ConnKey};
use crate::meta::topic_config::RETRY_GROUP_TOPIC_PREFIX;
use crate::remoting::{ConnectionContext, Failure};
use crate::runtime;
use crate::shard::{Call, CallReply, MeshMessage, Shard};

/// Consumer groups and producer groups one heartbeat may carry.
const GROUPS_PER_HEARTBEAT_MAX: usize = 1024;

pub fn conn_key(shard: &Shard, context: &ConnectionContext) -> ConnKey {
    ConnKey {
        shard: shard.id,
        id: context.id,
    }
}

/// Applies `event` here, forwards it to every other shard, and notifies this shard's
/// connections of groups whose membership changed. The forward completes before the caller
/// answers the client, so a pull the client sends next (and which hops on the same channels)
/// finds the subscription on the owner.
pub async fn publish(processor: &BrokerProcessor, event: ClientEvent) {
    let shard = &processor.shard;
    let changed = shard.clients.borrow_mut().apply(&event);
    shard.broadcast(|| MeshMessage::Client(event.clone())).await;
    notify_consumer_ids_changed(shard, &changed);
}

pub async fn heartbeat(
    processor: &BrokerProcessor,
    context: &ConnectionContext,
    request: &RemotingCommand,
) -> Handled {
    let shard = &processor.shard;
    let data: HeartbeatData = decode_lenient("heartbeat", &request.body)?;
    if data.consumer_data_set.len() + data.producer_data_set.len() > GROUPS_PER_HEARTBEAT_MAX {
        return Err(Failure::system(format!(
            "a heartbeat may name at most {GROUPS_PER_HEARTBEAT_MAX} groups"
        )));
    }
    let event = ClientEvent::Heartbeat {
        conn: conn_key(shard, context),
        client_id: data.client_id,
        client: ClientInfo {
            addr: context.peer.to_string(),
            language: request.language.name().to_owned(),
            version: request.version,
        },
        producer_groups: data
            .producer_data_set
            .into_iter()
            .map(|p| p.group_name)
            .collect(),
        consumers: data.consumer_data_set,
        now_ms: runtime::now_ms(),
    };
    shard
        .clients
        .borrow()
        .admits(&event)
        .map_err(Failure::system)?;
    if let ClientEvent::Heartbeat { consumers, .. } = &event {
        for consumer in consumers {
            // As Java: the group's config, created with the defaults if groups are created on
            // demand; a group that does not exist still registers (its pulls are refused).
            let Some(group) = groups::find_or_create(processor, &consumer.group_name).await? else {
                continue;
            };
            if consumer.message_model != "BROADCASTING" {
                // Clustering consumers subscribe to their retry topic; it must exist.
                let retry = format!("{RETRY_GROUP_TOPIC_PREFIX}{}", consumer.group_name);
                let queues = group.retry_queue_nums.max(1);
                processor.topic_or_create(&retry, &retry, queues).await?;
            }
        }
    }
    shard
        .connections
        .borrow_mut()
        .insert(context.id, context.outbound.clone());
    publish(processor, event).await;
    Ok(request.success().into())
}

pub async fn unregister(
    processor: &BrokerProcessor,
    context: &ConnectionContext,
    request: &RemotingCommand,
) -> Handled {
    let header: UnregisterClientRequestHeader = request.decode_header()?;
    let event = ClientEvent::Unregister {
        conn: conn_key(&processor.shard, context),
        producer_group: header.producer_group,
        consumer_group: header.consumer_group,
    };
    publish(processor, event).await;
    Ok(request.success().into())
}

pub fn consumer_list(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GetConsumerListByGroupRequestHeader = request.decode_header()?;
    let ids = processor
        .shard
        .clients
        .borrow()
        .consumer_ids(&header.consumer_group);
    if ids.is_empty() {
        return Err(Failure::system(format!(
            "no consumer for this group, {}",
            header.consumer_group
        )));
    }
    let body = body::encode(&ConsumerListBody {
        consumer_id_list: ids,
    });
    Ok(request.success().with_body(body).into())
}

/// TAG subscriptions are always fine; SQL92 needs property filtering, which is off.
pub fn check_client_config(request: &RemotingCommand) -> Handled {
    let body: CheckClientRequestBody = decode_lenient("check client config", &request.body)?;
    let expression_type = &body.subscription_data.expression_type;
    if expression_type.is_empty() || expression_type.eq_ignore_ascii_case("TAG") {
        return Ok(request.success().into());
    }
    Err(Failure::new(
        response_code::SYSTEM_ERROR,
        "The broker does not support consumer to filter message by SQL92",
    ))
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: the lock table lives on shard 0.
pub async fn lock_batch(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
    unlock: bool,
) -> Handled {
    let body: LockBatchRequestBody = decode_lenient("lock batch", &request.body)?;
    let call = Call::QueueLocks {
        group: body.consumer_group,
        client_id: body.client_id,
        queues: body.mq_set,
        unlock,
    };
    match processor.shard.call(processor, 0, call).await {
        CallReply::Locked(held) if !unlock => {
            let body = body::encode(&LockBatchResponseBody {
                lock_ok_mq_set: held,
            });
            Ok(request.success().with_body(body).into())
        }
        CallReply::Locked(_) => Ok(request.success().into()),
        _ => Err(Failure::new(
            response_code::SERVICE_NOT_AVAILABLE,
            "the lock table's shard is not available",
        )),
    }
}

/// Shard 0's side of a lock request.
pub fn queue_locks_here(
    shard: &Shard,
    group: &str,
    client_id: &str,
    queues: &BTreeSet<MessageQueue>,
    unlock: bool,
) -> CallReply {
    let mut locks = shard.queue_locks.borrow_mut();
    if unlock {
        locks.unlock(group, client_id, queues);
        CallReply::Locked(BTreeSet::new())
    } else {
        CallReply::Locked(locks.lock(group, client_id, queues, runtime::now_ms()))
    }
}
