//! PULL_MESSAGE (11) / LITE_PULL_MESSAGE (361), with long polling, on the queue's owner.
//!
//! Long polling: when nothing is there for the client and it allows suspension, the request
//! waits on the queue's head mark, woken by the send path the moment a message is stored in
//! that queue (not by a periodic scan), or by its own timeout or shutdown; then it runs once
//! more without suspension and answers.

use std::collections::BTreeSet;
use std::time::Duration;

use thruster_protocol::body::perm;
use thruster_protocol::expression::expression_tags;
use thruster_protocol::header::pull::{
    pull_sys_flag, PullMessageRequestHeader, PullMessageResponseHeader,
};
use thruster_protocol::message::tag_code;
use thruster_protocol::{response_code, RemotingCommand};

use super::{groups, BrokerProcessor, Handled};
use crate::remoting::{BodyPart, Failure, Reply};
use crate::runtime;
use crate::shard::Shard;
use crate::store::{GetResult, GetStatus};

/// Longest hold of a suspended pull: Java clients give up on a pull after 30 s, so the hold
/// must end well before, whatever the client asks.
const SUSPEND_MAX_MS: u64 = 25_000;

/// Which tag codes a pull accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Codes(BTreeSet<i64>),
}

impl TagFilter {
    /// From a subscription expression (`*`, empty, or `a || b`).
    pub fn from_expression(expression: &str) -> TagFilter {
        match expression_tags(expression) {
            None => TagFilter::All,
            Some(tags) => TagFilter::Codes(tags.iter().map(|t| tag_code(t)).collect()),
        }
    }

    pub fn accepts(&self, tags_code: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Codes(codes) => codes.contains(&tags_code),
        }
    }
}

pub async fn pull_owned(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let header: PullMessageRequestHeader = request.decode_header()?;
    check_group(shard, &header.consumer_group)?;
    check_readable(processor, &header)?;
    let filter = subscription_filter(processor, &header)?;
    commit_offset_with_pull(shard, &header);
    let offset = header.queue_offset.max(0) as u64;
    // What the client asked for, within the store's transfer limits (which the store applies
    // per message, hot or cold, as it reads).
    let max_count =
        (header.max_msg_nums.max(1) as usize).min(shard.config.transfer_limits.count_max());
    let read = || {
        shard
            .store
            .get_messages(&header.topic, header.queue_id, offset, max_count, &|code| {
                filter.accepts(code)
            })
    };
    let started = std::time::Instant::now();
    let mut result = read();
    let mut read_us = started.elapsed().as_micros() as u64;
    let suspend = header.sys_flag & pull_sys_flag::SUSPEND != 0;
    if nothing_yet(result.status, offset) && suspend && !shard.is_stopping() {
        // Nothing yields between the read and here, so no message can slip in unseen; the
        // store wakes this wait when the queue grows, and at shutdown.
        hold(shard, &header, offset).await;
        let started = std::time::Instant::now();
        result = read();
        read_us = read_us.max(started.elapsed().as_micros() as u64);
    }
    let found_bytes: u64 = result.messages.iter().map(|m| u64::from(m.size)).sum();
    shard.meter.borrow_mut().get(
        &header.topic,
        &header.consumer_group,
        result.messages.len() as u64,
        found_bytes,
        read_us,
    );
    // RocketMQ's slaveReadEnable: a consumer reading data no longer in memory is sent to the
    // slave (brokerId 1, `whichBrokerWhenConsumeSlowly`), sparing the master's disk.
    let from_slave = shard.config.slave_read_enable
        && shard.ha.master().is_some()
        && result.messages.iter().any(|m| !m.in_memory());
    let reply = respond(request, header.queue_offset, result, i64::from(from_slave));
    count_file_bytes(shard, &reply);
    Ok(reply)
}

/// Refuses a pull of a group that does not exist (with `autoCreateSubscriptionGroup=false`) or
/// may not consume, as the Java broker does before anything else.
fn check_group(shard: &Shard, group: &str) -> Result<(), Failure> {
    let config = groups::group_config(shard, group)?;
    if !config.consume_enable {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!("subscription group no permission, {group}"),
        ));
    }
    if !config.consume_broadcast_enable {
        let clients = shard.clients.borrow();
        if clients
            .consumer_group(group)
            .is_some_and(|g| g.is_broadcasting())
        {
            return Err(Failure::new(
                response_code::NO_PERMISSION,
                format!("the consumer group[{group}] can not consume by broadcast way"),
            ));
        }
    }
    Ok(())
}

/// Refuses a pull the broker's or the topic's permission forbids, or of a queue the topic
/// does not have.
fn check_readable(
    processor: &BrokerProcessor,
    header: &PullMessageRequestHeader,
) -> Result<(), Failure> {
    let shard = &processor.shard;
    if !perm::is_readable(shard.broker_permission()) {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!(
                "the broker[{}] pulling message is forbidden",
                shard.broker_name
            ),
        ));
    }
    let topic = processor.known_topic(&header.topic)?;
    if !perm::is_readable(topic.perm) {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!("the topic[{}] pulling message is forbidden", header.topic),
        ));
    }
    if header.queue_id < 0 || header.queue_id >= topic.read_queue_nums {
        return Err(Failure::system(format!(
            "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}]",
            header.queue_id, header.topic, topic.read_queue_nums
        )));
    }
    Ok(())
}

/// Commits the consumer's offset a pull carries (with `COMMIT_OFFSET`).
fn commit_offset_with_pull(shard: &Shard, header: &PullMessageRequestHeader) {
    if header.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && header.commit_offset >= 0 {
        // A full table refuses a new entry; the pull itself still goes on.
        if let Err(error) = shard.offsets.borrow_mut().commit(
            &header.consumer_group,
            &header.topic,
            header.queue_id,
            header.commit_offset,
        ) {
            tracing::warn!(%error, "offset committed with a pull not stored");
        }
    }
}

/// Whether a read from `offset` found nothing yet, so a suspended pull is held.
fn nothing_yet(status: GetStatus, offset: u64) -> bool {
    // Like Java, hold whatever would be answered PULL_NOT_FOUND: the tail of a queue, and a
    // queue that has no message yet.
    match status {
        GetStatus::OffsetOverflowOne => true,
        GetStatus::NoMessageInQueue | GetStatus::NoMatchedLogicQueue => offset == 0,
        _ => false,
    }
}

/// Holds a suspended pull until its queue grows past `offset`, shutdown, or the hold time
/// (the client's suspend timeout under long polling, capped; else the short polling time).
async fn hold(shard: &Shard, header: &PullMessageRequestHeader, offset: u64) {
    let live = shard.live.get();
    let hold_ms = if live.long_polling_enable {
        (header.suspend_timeout_millis.max(0) as u64).min(SUSPEND_MAX_MS)
    } else {
        live.short_polling_time_ms
    };
    let woken = shard
        .store
        .wait_for_message(&header.topic, header.queue_id, offset);
    runtime::timeout(Duration::from_millis(hold_ms), woken).await;
}

/// Counts the bytes a reply sends straight from the files.
fn count_file_bytes(shard: &Shard, reply: &Reply) {
    let file_bytes: usize = reply
        .tail
        .iter()
        .filter(|part| matches!(part, BodyPart::File { .. }))
        .map(BodyPart::len)
        .sum();
    shard
        .pull_file_bytes
        .set(shard.pull_file_bytes.get() + file_bytes as u64);
}

/// The pull's tag filter: from the request when it carries its subscription, else from the
/// group's heartbeat.
fn subscription_filter(
    processor: &BrokerProcessor,
    header: &PullMessageRequestHeader,
) -> Result<TagFilter, Failure> {
    if header.sys_flag & pull_sys_flag::CLASS_FILTER != 0 {
        return Ok(TagFilter::All);
    }
    let expression_type = header.expression_type.as_deref().unwrap_or("TAG");
    if !expression_type.eq_ignore_ascii_case("TAG") {
        return Err(Failure::new(
            response_code::SUBSCRIPTION_PARSE_FAILED,
            format!(
                "expression type {expression_type} is not supported (enablePropertyFilter=false)"
            ),
        ));
    }
    if header.sys_flag & pull_sys_flag::SUBSCRIPTION != 0 {
        return Ok(TagFilter::from_expression(
            header.subscription.as_deref().unwrap_or("*"),
        ));
    }
    let clients = processor.shard.clients.borrow();
    let group = clients
        .consumer_group(&header.consumer_group)
        .ok_or_else(|| {
            Failure::new(
                response_code::SUBSCRIPTION_NOT_EXIST,
                format!(
                    "the consumer's group info not exist, group: {}",
                    header.consumer_group
                ),
            )
        })?;
    let subscription = group.subscriptions.get(&header.topic).ok_or_else(|| {
        Failure::new(
            response_code::SUBSCRIPTION_NOT_EXIST,
            format!(
                "the consumer's subscription not exist, topic: {}",
                header.topic
            ),
        )
    })?;
    if subscription.sub_version < header.sub_version {
        return Err(Failure::new(
            response_code::SUBSCRIPTION_NOT_LATEST,
            "the consumer's subscription not latest",
        ));
    }
    Ok(if subscription.code_set.is_empty() {
        TagFilter::from_expression(&subscription.sub_string)
    } else {
        TagFilter::Codes(
            subscription
                .code_set
                .iter()
                .map(|&c| i64::from(c))
                .collect(),
        )
    })
}

/// Maps a store result to the response (remoting-protocol.md §9.2 table).
fn respond(
    request: &RemotingCommand,
    requested_offset: i64,
    result: GetResult,
    suggest_which_broker_id: i64,
) -> Reply {
    let not_found_or_moved = |next: u64| {
        if requested_offset != 0 {
            (response_code::PULL_OFFSET_MOVED, next)
        } else {
            (response_code::PULL_NOT_FOUND, next)
        }
    };
    let (code, next_begin_offset) = match result.status {
        GetStatus::Found => (response_code::SUCCESS, result.next_begin_offset),
        GetStatus::NoMatchedMessage | GetStatus::MessageWasRemoving => (
            response_code::PULL_RETRY_IMMEDIATELY,
            result.next_begin_offset,
        ),
        GetStatus::NoMessageInQueue | GetStatus::NoMatchedLogicQueue => not_found_or_moved(0),
        GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly => {
            (response_code::PULL_OFFSET_MOVED, result.next_begin_offset)
        }
        GetStatus::OffsetOverflowOne | GetStatus::OffsetFoundNull => {
            (response_code::PULL_NOT_FOUND, result.next_begin_offset)
        }
    };
    let header = PullMessageResponseHeader {
        suggest_which_broker_id,
        next_begin_offset: next_begin_offset as i64,
        min_offset: result.min_offset as i64,
        max_offset: result.max_offset as i64,
        offset_delta: None,
        topic_sys_flag: None,
        group_sys_flag: None,
        forbidden_type: None,
    };
    let command = request.response_to(code, None).with_header(&header);
    let tail = result
        .messages
        .into_iter()
        .flat_map(|m| m.slices)
        .map(BodyPart::from_slice)
        .collect();
    Reply { command, tail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thruster_protocol::message::java_string_hash;

    #[test]
    fn tag_expressions_become_hash_sets() {
        assert_eq!(TagFilter::from_expression("*"), TagFilter::All);
        assert_eq!(TagFilter::from_expression(""), TagFilter::All);
        let filter = TagFilter::from_expression("TagA || TagB");
        assert!(filter.accepts(i64::from(java_string_hash("TagA"))));
        assert!(filter.accepts(i64::from(java_string_hash("TagB"))));
        assert!(!filter.accepts(i64::from(java_string_hash("TagC"))));
    }
}
