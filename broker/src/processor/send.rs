//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320).
//!
//! `route` runs where the connection lives: it resolves (or auto-creates) the topic and the
//! queue, then hands the request to the queue's owner, where `store_owned` appends it.

use std::net::SocketAddr;

use thruster_protocol::batch::decode_batch;
use thruster_protocol::body::{perm, TopicConfig};
use thruster_protocol::header::send::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use thruster_protocol::message::{self, offset_msg_id, property, PROPERTY_SEPARATOR};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};

use super::{schedule, timer, transaction, BrokerProcessor, Handled};
use crate::ha::state::SyncOutcome;
use crate::meta::topic_config::validate_topic_name;
use crate::remoting::{ConnectionContext, Failure};
use crate::runtime;
use crate::shard::Shard;
use crate::store::{PutMessage, PutResult, PutStatus};

/// Entries accepted in one batch (the frame limit bounds the bytes).
const BATCH_ENTRIES_MAX: usize = 64 * 1024;

/// The send header of a request (also SEND_REPLY_MESSAGE, long names, and _V2, short ones).
pub fn decode_header(request: &RemotingCommand) -> Result<SendMessageRequestHeader, Failure> {
    Ok(
        if matches!(request.code, rc::SEND_MESSAGE | rc::SEND_REPLY_MESSAGE) {
            request.decode_header::<SendMessageRequestHeader>()?
        } else {
            request
                .decode_header::<SendMessageRequestHeaderV2>()?
                .into()
        },
    )
}

/// Picks the queue and hands the request to its owner.
pub async fn route(
    processor: &BrokerProcessor,
    context: &ConnectionContext,
    request: &RemotingCommand,
) -> Handled {
    let shard = &processor.shard;
    let (header, topic, picked) = resolve(processor, request).await?;
    let queue_id = header.queue_id;
    let queue_nums = topic.write_queue_nums.max(topic.read_queue_nums);
    if queue_id >= queue_nums {
        return Err(Failure::system(format!(
            "request queueId[{queue_id}] is illegal, {} Producer: {}",
            topic.topic_name, context.peer
        )));
    }
    let owner = shard.owner_of(&header.topic, queue_id);
    if owner == shard.id {
        // Served here: the header decoded above is used as it is.
        return store_decoded(processor, request, header, context.peer).await;
    }
    if picked {
        // The owner decodes the request again: it must carry the queue picked here.
        let mut request = request.clone();
        let key = if request.code == rc::SEND_MESSAGE {
            "queueId"
        } else {
            "e"
        };
        request.ext_fields.insert(key, queue_id.to_string());
        return processor
            .on_shard(owner, &request, context, Some(topic))
            .await;
    }
    processor
        .on_shard(owner, request, context, Some(topic))
        .await
}

/// A send's header, its topic (auto-created if need be) as this shard sees it, and whether the
/// queue was picked here (the client left it to the broker).
pub async fn resolve(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Result<(SendMessageRequestHeader, TopicConfig, bool), Failure> {
    let shard = &processor.shard;
    let mut header = decode_header(request)?;
    validate_topic_name(&header.topic)?;
    let topic = processor
        .topic_or_create(
            &header.topic,
            &header.default_topic,
            header.default_topic_queue_nums,
        )
        .await?;
    let picked = header.queue_id < 0;
    if picked {
        let rotation = shard.queue_rotation.get();
        shard.queue_rotation.set(rotation.wrapping_add(1));
        header.queue_id = (rotation % topic.write_queue_nums.max(1) as u32) as i32;
    }
    Ok((header, topic, picked))
}

/// Appends the message(s) of a request that hopped here to this shard's store.
pub async fn store_owned(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
    peer: SocketAddr,
) -> Handled {
    let header = decode_header(request)?;
    store_decoded(processor, request, header, peer).await
}

/// Appends the message(s) to this shard's store and answers with their ids.
async fn store_decoded(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
    header: SendMessageRequestHeader,
    peer: SocketAddr,
) -> Handled {
    let shard = &processor.shard;
    let topic = processor.known_topic(&header.topic)?;
    let properties = header.properties.as_deref().unwrap_or_default();
    check_writeable(shard, &topic)?;
    let delay = schedule::delay_level(properties);
    let messages = messages_to_put(shard, request, &header, properties, delay, peer)?;
    let timed = delay.is_none()
        && messages
            .iter()
            .any(|m| schedule::timer_requested(&m.properties));
    if timed && !shard.config.timer_wheel_enable {
        return Err(Failure::new(
            response_code::SYSTEM_ERROR,
            schedule::TIMER_NOT_ENABLED,
        ));
    }
    let started = std::time::Instant::now();
    let count = messages.len() as u64;
    let reconsume_times = header.reconsume_times.unwrap_or(0);
    let result = if timed {
        // Waits in the timer wheel (possibly on another shard) until due.
        let [message] = <[PutMessage; 1]>::try_from(messages).map_err(|_| {
            Failure::new(
                response_code::MESSAGE_ILLEGAL,
                "a batch cannot carry timer messages",
            )
        })?;
        let max_delay_sec = shard.config.timer_max_delay_sec;
        match timer::to_timer(message.clone(), runtime::now_ms(), max_delay_sec)? {
            Some(timed) => schedule::put_anywhere(processor, timed).await,
            None => shard.store.put(message).await,
        }
    } else if transaction::is_prepared(properties, reconsume_times, delay.is_some()) {
        // Stored as a half message of this shard, invisible until committed.
        let [message] = <[PutMessage; 1]>::try_from(messages).map_err(|_| {
            Failure::new(
                response_code::MESSAGE_ILLEGAL,
                "a batch cannot carry transactional messages",
            )
        })?;
        transaction::prepare(processor, message, &header.producer_group).await?
    } else {
        match delay {
            // Stored in the level's schedule queue (possibly on another shard); delivered to
            // this queue when due.
            Some(level) => {
                let levels = shard.config.delay_levels_ms.len();
                let message = messages.into_iter().next().expect("one message");
                schedule::put_anywhere(processor, schedule::to_schedule(message, level, levels))
                    .await
            }
            None => shard.store.put_batch(messages).await,
        }
    };
    let stored = matches!(result.status, PutStatus::Ok | PutStatus::FlushDiskTimeout);
    let elapsed_us = started.elapsed().as_micros() as u64;
    let bytes = result.wrote_bytes as u64;
    (shard.meter.borrow_mut()).put(&header.topic, count, bytes, elapsed_us, stored);
    let replication = replicate(shard, &result).await;
    send_response(shard, request, header.queue_id, &result, replication)
}

/// SYNC_MASTER: a stored message is answered once a slave has it too (RocketMQ's
/// `handleHA`); `None` when there is nothing to wait for.
async fn replicate(shard: &Shard, result: &PutResult) -> Option<SyncOutcome> {
    let state = shard.ha.sync_master()?;
    if !matches!(result.status, PutStatus::Ok | PutStatus::FlushDiskTimeout) {
        return None;
    }
    let end = result.phys_offsets.first()? + result.wrote_bytes as u64;
    Some(state.wait_replicated(end).await)
}

/// Refuses a send the broker's or the topic's permission forbids.
fn check_writeable(shard: &Shard, topic: &TopicConfig) -> Result<(), Failure> {
    if !perm::is_writeable(shard.broker_permission()) {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!(
                "the broker[{}] sending message is forbidden",
                shard.broker_name
            ),
        ));
    }
    if !perm::is_writeable(topic.perm) {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!(
                "the topic[{}] sending message is forbidden",
                topic.topic_name
            ),
        ));
    }
    Ok(())
}

/// The message(s) a request carries, as they are to be stored (one, or a batch's entries).
pub fn messages_to_put(
    shard: &Shard,
    request: &RemotingCommand,
    header: &SendMessageRequestHeader,
    properties: &str,
    delay: Option<i32>,
    peer: SocketAddr,
) -> Result<Vec<PutMessage>, Failure> {
    let cluster = &shard.config.broker_cluster_name;
    let template = PutMessage {
        sys_flag: header.sys_flag,
        born_timestamp: header.born_timestamp,
        born_host: message::canonical_host(peer),
        reconsume_times: header.reconsume_times.unwrap_or(0),
        ..PutMessage::new(
            header.topic.clone(),
            header.queue_id,
            Default::default(),
            shard.broker_addr,
        )
    };
    // Java decides by the header's batch flag; the C++ client sends batches as
    // SEND_MESSAGE_V2 with `m=true`, Java and Go as SEND_BATCH_MESSAGE.
    let is_batch = request.code == rc::SEND_BATCH_MESSAGE || header.batch == Some(true);
    if is_batch {
        return batch_to_put(request, template, delay, cluster);
    }
    Ok(vec![PutMessage {
        flag: header.flag,
        body: request.body.clone(),
        properties: with_cluster(properties, cluster),
        ..template
    }])
}

/// A batch's entries as messages to store, each from `template`; a batch cannot be delayed.
fn batch_to_put(
    request: &RemotingCommand,
    template: PutMessage,
    delay: Option<i32>,
    cluster: &str,
) -> Result<Vec<PutMessage>, Failure> {
    let entries = decode_batch(&request.body, BATCH_ENTRIES_MAX)
        .map_err(|e| Failure::new(response_code::MESSAGE_ILLEGAL, e.to_string()))?;
    if entries.is_empty() {
        return Err(Failure::new(response_code::MESSAGE_ILLEGAL, "empty batch"));
    }
    if delay.is_some()
        || entries
            .iter()
            .any(|e| schedule::delay_level(&e.properties).is_some())
    {
        return Err(Failure::new(
            response_code::MESSAGE_ILLEGAL,
            "a batch cannot carry delayed messages",
        ));
    }
    // Each record keeps its own properties (with its own UNIQ_KEY); the batch-level ones
    // are not appended (message-store.md §5).
    Ok(entries
        .into_iter()
        .map(|entry| PutMessage {
            flag: entry.flag,
            body: entry.body,
            properties: with_cluster(&entry.properties, cluster),
            ..template.clone()
        })
        .collect())
}

/// The answer to a send: the stored messages' ids and queue offset, or the store's refusal.
pub fn send_response(
    shard: &Shard,
    request: &RemotingCommand,
    queue_id: i32,
    result: &PutResult,
    replication: Option<SyncOutcome>,
) -> Handled {
    let code = match (&result.status, replication) {
        (_, Some(SyncOutcome::SlaveNotAvailable)) => response_code::SLAVE_NOT_AVAILABLE,
        (_, Some(SyncOutcome::Timeout)) => response_code::FLUSH_SLAVE_TIMEOUT,
        (PutStatus::Ok, _) => response_code::SUCCESS,
        (PutStatus::FlushDiskTimeout, _) => response_code::FLUSH_DISK_TIMEOUT,
        (PutStatus::MessageIllegal(remark), _) => {
            return Err(Failure::new(response_code::MESSAGE_ILLEGAL, remark.clone()))
        }
        (PutStatus::ServiceNotAvailable(remark), _) => {
            return Err(Failure::new(
                response_code::SERVICE_NOT_AVAILABLE,
                remark.clone(),
            ))
        }
    };
    let msg_id = result
        .phys_offsets
        .iter()
        .map(|&offset| offset_msg_id(shard.broker_addr, offset as i64))
        .collect::<Vec<_>>()
        .join(",");
    let response = SendMessageResponseHeader {
        msg_id,
        queue_id,
        queue_offset: result.queue_offset as i64,
        transaction_id: None,
        batch_uniq_id: None,
        msg_region: Some(shard.config.region_id.clone()),
        trace_on: Some(shard.config.trace_on.to_string()),
    };
    let remark = match code {
        response_code::FLUSH_DISK_TIMEOUT => Some("flush disk timeout".to_owned()),
        response_code::SLAVE_NOT_AVAILABLE => Some("slave not available".to_owned()),
        response_code::FLUSH_SLAVE_TIMEOUT => Some("wait for slave timeout".to_owned()),
        _ => None,
    };
    Ok(request
        .response_to(code, remark)
        .with_header(&response)
        .into())
}

/// Adds `CLUSTER=<cluster>` as the Java broker does to every stored message.
fn with_cluster(properties: &str, cluster: &str) -> String {
    let mut out = String::with_capacity(properties.len() + cluster.len() + 10);
    out.push_str(properties);
    if !out.is_empty() && !out.ends_with(PROPERTY_SEPARATOR) {
        out.push(PROPERTY_SEPARATOR);
    }
    out.push_str(&message::encode_properties([(property::CLUSTER, cluster)]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_property_is_appended_after_a_separator() {
        assert_eq!(with_cluster("", "C"), "CLUSTER\u{1}C\u{2}");
        assert_eq!(
            with_cluster("TAGS\u{1}a\u{2}", "C"),
            "TAGS\u{1}a\u{2}CLUSTER\u{1}C\u{2}"
        );
        // C++ clients may omit the trailing separator.
        assert_eq!(
            with_cluster("TAGS\u{1}a", "C"),
            "TAGS\u{1}a\u{2}CLUSTER\u{1}C\u{2}"
        );
        assert_eq!(
            message::find_property(&with_cluster("TAGS\u{1}a", "C"), "TAGS"),
            Some("a")
        );
    }
}
