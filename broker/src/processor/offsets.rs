//! Consumer offsets (QUERY/UPDATE_CONSUMER_OFFSET) and queue offsets (GET_MAX/MIN_OFFSET,
//! SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME), on the queue's owner.

use thruster_protocol::header::offset::{
    GetEarliestMsgStoretimeRequestHeader, GetEarliestMsgStoretimeResponseHeader,
    GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader, OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader, SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use thruster_protocol::{response_code, RemotingCommand};

use super::schedule::SCHEDULE_PROGRESS_GROUP;
use super::{BrokerProcessor, Handled};
use crate::meta::topic_config::SCHEDULE_TOPIC;
use crate::remoting::Failure;
use thruster_protocol::body::{
    self, split_topic_group, ConsumerOffsetSerializeWrapper, DelayOffsetSerializeWrapper,
};

fn offset_reply(request: &RemotingCommand, offset: i64) -> Handled {
    Ok(request
        .success()
        .with_header(&OffsetResponseHeader { offset })
        .into())
}

/// A committed offset, or — for a group that never committed — 0 while the queue still
/// starts at offset 0 (RocketMQ 4.9: the consumer then reads from the beginning), else
/// QUERY_NOT_FOUND so the client applies its consumeFromWhere.
pub fn query_consumer_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let header: QueryConsumerOffsetRequestHeader = request.decode_header()?;
    let committed =
        shard
            .offsets
            .borrow()
            .query(&header.consumer_group, &header.topic, header.queue_id);
    if let Some(offset) = committed {
        return offset_reply(request, offset);
    }
    let min = shard
        .store
        .min_offset(&header.topic, header.queue_id)
        .unwrap_or(0);
    if min == 0 && header.set_zero_if_not_found != Some(false) {
        return offset_reply(request, 0);
    }
    Err(Failure::new(
        response_code::QUERY_NOT_FOUND,
        "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
    ))
}

/// Stores a group's offset of a queue this shard has: a topic it does not know is
/// TOPIC_NOT_EXIST and a queue id outside the topic SYSTEM_ERROR (as RocketMQ 5 answers), so
/// a client cannot fill the table with queues that do not exist; a full table is SYSTEM_ERROR.
pub fn update_consumer_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: UpdateConsumerOffsetRequestHeader = request.decode_header()?;
    let topic = processor.known_topic(&header.topic)?;
    if header.queue_id < 0 || header.queue_id >= topic.read_queue_nums.max(topic.write_queue_nums) {
        return Err(Failure::system(format!(
            "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
            header.queue_id, header.topic, topic.read_queue_nums
        )));
    }
    if header.consumer_group.is_empty() {
        return Err(Failure::system("consumerGroup is empty"));
    }
    processor
        .shard
        .offsets
        .borrow_mut()
        .commit(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        )
        .map_err(|full| Failure::system(full.to_string()))?;
    Ok(request.success().into())
}

pub fn max_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GetMaxOffsetRequestHeader = request.decode_header()?;
    let offset = processor
        .shard
        .store
        .max_offset(&header.topic, header.queue_id);
    offset_reply(request, offset as i64)
}

/// -1 for an unknown queue, as 4.9.8 answers.
pub fn min_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GetMinOffsetRequestHeader = request.decode_header()?;
    // A queue nothing was ever stored in starts at 0 (RocketMQ creates its ConsumeQueue on
    // the lookup, so it answers 0 too, not -1).
    let offset = processor
        .shard
        .store
        .min_offset(&header.topic, header.queue_id);
    offset_reply(request, offset.map_or(0, |o| o as i64))
}

pub async fn search_by_timestamp(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Handled {
    let header: SearchOffsetRequestHeader = request.decode_header()?;
    let upper = header
        .boundary_type
        .as_deref()
        .is_some_and(|b| b.eq_ignore_ascii_case("upper"));
    let offset = processor
        .shard
        .store
        .search_offset_by_timestamp(&header.topic, header.queue_id, header.timestamp, upper)
        .await?;
    offset_reply(request, offset as i64)
}

pub async fn earliest_store_time(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Handled {
    let header: GetEarliestMsgStoretimeRequestHeader = request.decode_header()?;
    let timestamp = processor
        .shard
        .store
        .earliest_store_time(&header.topic, header.queue_id)
        .await?
        .unwrap_or(-1);
    Ok(request
        .success()
        .with_header(&GetEarliestMsgStoretimeResponseHeader { timestamp })
        .into())
}

/// GET_ALL_CONSUMER_OFFSET (43): this shard's committed offsets (what a slave copies); the
/// broker's own delivery progress is not among them (GET_ALL_DELAY_OFFSET has it).
pub fn all_consumer_offsets(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let mut wrapper = ConsumerOffsetSerializeWrapper::default();
    for (key, queue_id, offset) in processor.shard.offsets.borrow().entries() {
        if split_topic_group(key).is_some_and(|(_, group)| group == SCHEDULE_PROGRESS_GROUP) {
            continue;
        }
        wrapper
            .offset_table
            .entry(key.to_owned())
            .or_default()
            .insert(queue_id, offset);
    }
    Ok(request.success().with_body(body::encode(&wrapper)).into())
}

/// GET_ALL_DELAY_OFFSET (45): delivery progress per delay level (level = queue id + 1).
pub fn all_delay_offsets(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let mut wrapper = DelayOffsetSerializeWrapper::default();
    let key = format!("{SCHEDULE_TOPIC}@{SCHEDULE_PROGRESS_GROUP}");
    for (k, queue_id, offset) in processor.shard.offsets.borrow().entries() {
        if k == key {
            wrapper.offset_table.insert(queue_id + 1, offset);
        }
    }
    Ok(request.success().with_body(body::encode(&wrapper)).into())
}
