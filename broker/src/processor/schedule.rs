//! Delay levels and retries (RocketMQ's ScheduleMessageService and CONSUMER_SEND_MSG_BACK).
//!
//! A message with `DELAY = level` is stored in `SCHEDULE_TOPIC_XXXX`, queue `level − 1`, with
//! `REAL_TOPIC`/`REAL_QID` naming where it belongs. The shard that owns a level's queue runs
//! that level's delivery loop: it reads the queue in order, waits until each record's store
//! time + the level's delay, and stores a copy (without `DELAY`) in the real topic and queue,
//! on whichever shard owns that. Progress is kept like a consumer offset of the internal group
//! `SCHEDULE_PROGRESS_GROUP` (persisted with the shard's offsets), so a crash can only repeat a
//! delivery, never lose one.
//!
//! Choice: the schedule queue's ConsumeQueue tag code is the message's tag hash, not its
//! delivery time as in RocketMQ; the delivery loop reads each record's store time instead.

use std::time::Duration;

use bytes::Bytes;
use thruster_protocol::codes::version;
use thruster_protocol::header::client::ConsumerSendMsgBackRequestHeader;
use thruster_protocol::message::{
    self, decode_record, encode_properties, parse_properties, property,
};
use thruster_protocol::{response_code, RemotingCommand};
use tracing::{debug, warn};

use super::{groups, BrokerProcessor, Handled};
use crate::meta::topic_config::{DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX, SCHEDULE_TOPIC};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};
use crate::store::{FoundMessage, PutMessage, PutResult, PutStatus};

/// Stored records a "was it stored already" look-up reads (copies of one message share its
/// UNIQ_KEY, and so may other messages with the same key).
const ALREADY_STORED_LOOKUP_MAX: usize = 64;
/// Internal group whose "consumer offsets" are the delivery progress of each level's queue.
pub const SCHEDULE_PROGRESS_GROUP: &str = "%SCHEDULE_PROGRESS%";
/// How long a level's loop waits before retrying a delivery the store refused.
const RETRY_WAIT: Duration = Duration::from_millis(100);
/// Records looked at per read of a level's queue.
const READ_BATCH: usize = 32;

/// The delay level a properties string asks for (`None` for 0 or absent).
pub fn delay_level(properties: &str) -> Option<i32> {
    message::find_property(properties, property::DELAY)
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|l| *l > 0)
}

/// Whether a message asks for RocketMQ 5's timer (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`,
/// `TIMER_DELAY_MS`). Thruster has no timer wheel: such a send is refused as a 5.x broker with
/// `timerWheelEnable=false` refuses it, rather than delivered at once. A delay level wins over
/// them, as in RocketMQ.
pub fn timer_requested(properties: &str) -> bool {
    [
        property::TIMER_DELIVER_MS,
        property::TIMER_DELAY_SEC,
        property::TIMER_DELAY_MS,
    ]
    .iter()
    .any(|name| message::find_property(properties, name).is_some())
}

/// RocketMQ's answer to a timer message when the timer wheel is off.
pub const TIMER_NOT_ENABLED: &str =
    "accurate timer message is not enabled, timerWheelEnable is false";

/// Removes `names` from a properties string.
pub fn without(properties: &str, names: &[&str]) -> String {
    let map = parse_properties(properties);
    encode_properties(
        map.iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Rewrites `message` for its delay: into the level's schedule queue, remembering where it
/// belongs.
pub fn to_schedule(mut message: PutMessage, level: i32, levels: usize) -> PutMessage {
    let level = level.clamp(1, levels as i32);
    let real_qid = message.queue_id.to_string();
    let mut properties = without(&message.properties, &[property::DELAY]);
    properties.push_str(&encode_properties([
        (property::DELAY, level.to_string().as_str()),
        (property::REAL_TOPIC, message.topic.as_str()),
        (property::REAL_QID, real_qid.as_str()),
    ]));
    message.properties = properties;
    message.topic = SCHEDULE_TOPIC.to_owned();
    message.queue_id = level - 1;
    message
}

/// Stores `message` on the shard that owns its queue (here, or one hop there and back).
pub async fn put_anywhere(processor: &BrokerProcessor, message: PutMessage) -> PutResult {
    let shard = &processor.shard;
    let owner = shard.owner_of(&message.topic, message.queue_id);
    if owner == shard.id {
        return shard.store.put(message).await;
    }
    match shard.call(processor, owner, Call::Put(message)).await {
        CallReply::Put(result) => result,
        _ => PutResult {
            status: PutStatus::ServiceNotAvailable(format!("shard {owner} is not available")),
            phys_offsets: Vec::new(),
            queue_offset: 0,
            store_timestamp: 0,
            wrote_bytes: 0,
        },
    }
}

/// Delivery progress of the levels this shard delivers: (level, offset delivered up to, the
/// level queue's max offset), as RocketMQ reports `scheduleMessageOffset_<level>`.
pub fn progress(shard: &Shard) -> Vec<(i32, i64, u64)> {
    let levels = shard.config.delay_levels_ms.len() as i32;
    let offsets = shard.offsets.borrow();
    (1..=levels)
        .filter(|level| shard.owner_of(SCHEDULE_TOPIC, level - 1) == shard.id)
        .filter_map(|level| {
            let delivered = offsets.query(SCHEDULE_PROGRESS_GROUP, SCHEDULE_TOPIC, level - 1)?;
            Some((
                level,
                delivered,
                shard.store.max_offset(SCHEDULE_TOPIC, level - 1),
            ))
        })
        .collect()
}

/// Whether `message` (made from the stored record `source`) is stored already in its queue: a
/// record there with `source`'s UNIQ_KEY that `matches`, stored since `source` was born. Asked
/// of the queue's owner's index (a crash may have kept a move without its progress).
pub async fn already_stored(
    processor: &BrokerProcessor,
    message: &PutMessage,
    source: &message::DecodedRecord,
    matches: impl Fn(&message::DecodedRecord) -> bool,
) -> bool {
    let Some(key) =
        message::find_property(&source.properties, property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
    else {
        return false;
    };
    let shard = &processor.shard;
    let owner = shard.owner_of(&message.topic, message.queue_id);
    // The index keeps store times in whole seconds from its file's start: a second earlier.
    let begin_ms = source.born_timestamp.min(source.store_timestamp) - 1_000;
    let records = if owner == shard.id {
        shard
            .store
            .query_by_key(
                &message.topic,
                key,
                ALREADY_STORED_LOOKUP_MAX,
                begin_ms,
                i64::MAX,
            )
            .await
            .map(|(records, _, _)| records)
            .unwrap_or_default()
    } else {
        let call = Call::QueryByKey {
            topic: message.topic.clone(),
            key: key.to_owned(),
            max_num: ALREADY_STORED_LOOKUP_MAX,
            begin_ms,
            end_ms: i64::MAX,
        };
        match shard.call(processor, owner, call).await {
            CallReply::Records { records, .. } => records,
            _ => Vec::new(),
        }
    };
    records
        .iter()
        .filter_map(|bytes| decode_record(bytes, false).ok())
        .any(|r| {
            r.topic == message.topic
                && message::find_property(&r.properties, property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
                    == Some(key)
                && matches(&r)
        })
}

/// Starts the delivery loop of every level whose schedule queue this shard owns.
pub fn spawn_delivery(processor: std::rc::Rc<BrokerProcessor>) {
    let levels = processor.shard.config.delay_levels_ms.len();
    for level in 1..=levels as i32 {
        if processor.shard.owner_of(SCHEDULE_TOPIC, level - 1) != processor.shard.id {
            continue;
        }
        let processor = processor.clone();
        let tasks = &processor.clone().shard.tasks;
        tasks.spawn("delayed-delivery", async move {
            deliver_level(&processor, level).await
        });
    }
}

async fn deliver_level(processor: &BrokerProcessor, level: i32) {
    let shard = &processor.shard;
    let queue_id = level - 1;
    let delay_ms = shard.config.delay_levels_ms[(level - 1) as usize] as i64;
    while !shard.is_stopping() {
        let progress = (SCHEDULE_PROGRESS_GROUP, SCHEDULE_TOPIC, queue_id);
        let Some(entries) = next_entries(shard, progress).await else {
            continue;
        };
        for entry in entries {
            let record = match entry_record(&entry).await {
                Ok(record) => record,
                Err(error) => {
                    warn!(level, offset = entry.queue_offset, %error, "unreadable scheduled record skipped");
                    set_progress(shard, queue_id, entry.queue_offset + 1);
                    continue;
                }
            };
            let now_ms = runtime::now_ms();
            // A delivery time further ahead than one delay means the clock moved back: due now.
            let due_ms = (record.store_timestamp + delay_ms).min(now_ms + delay_ms);
            if due_ms > now_ms {
                // One level's messages fall due in the order they were stored: the first not
                // due is the next thing to do.
                sleep_unless_stopped(shard, Duration::from_millis((due_ms - now_ms) as u64)).await;
                break;
            }
            let Some(message) = delivered(&record, shard) else {
                warn!(
                    level,
                    offset = entry.queue_offset,
                    "scheduled record without REAL_TOPIC/REAL_QID skipped"
                );
                set_progress(shard, queue_id, entry.queue_offset + 1);
                continue;
            };
            let result = put_anywhere(processor, message).await;
            match result.status {
                PutStatus::Ok | PutStatus::FlushDiskTimeout => {
                    debug!(
                        level,
                        offset = entry.queue_offset,
                        "delayed message delivered"
                    );
                    set_progress(shard, queue_id, entry.queue_offset + 1);
                }
                status => {
                    warn!(level, ?status, "delayed delivery failed; retrying");
                    sleep_unless_stopped(shard, RETRY_WAIT).await;
                    break;
                }
            }
        }
    }
}

/// Sleeps for `duration`, or until the shard stops.
async fn sleep_unless_stopped(shard: &Shard, duration: Duration) {
    shard.tasks.stop_signal().sleep(duration).await;
}

/// A delivery loop's next read of its own internal queue, whose progress is kept as the
/// consumer offset of `(group, topic, queue_id)`: the entries from there on, or `None` after
/// moving past entries the store skipped (removed files) or waiting for the queue to grow (woken
/// by the put that grows it, or at shutdown); the caller then reads again.
pub(super) async fn next_entries(
    shard: &Shard,
    (group, topic, queue_id): (&str, &str, i32),
) -> Option<Vec<FoundMessage>> {
    let offset = shard
        .offsets
        .borrow()
        .query(group, topic, queue_id)
        .unwrap_or(0)
        .max(0) as u64;
    let found = shard
        .store
        .get_messages(topic, queue_id, offset, READ_BATCH, &|_| true);
    if !found.messages.is_empty() {
        return Some(found.messages);
    }
    if found.next_begin_offset > offset {
        let next = found.next_begin_offset as i64;
        shard
            .offsets
            .borrow_mut()
            .commit_internal(group, topic, queue_id, next);
    } else {
        shard.store.wait_for_message(topic, queue_id, offset).await;
    }
    None
}

/// The stored record of a ConsumeQueue entry, decoded (no CRC check: the store's own data).
pub(super) async fn entry_record(entry: &FoundMessage) -> Result<message::DecodedRecord, String> {
    let bytes = entry.bytes().await.map_err(|e| e.to_string())?;
    decode_record(&bytes, false).map_err(|e| e.to_string())
}

fn set_progress(shard: &Shard, queue_id: i32, offset: u64) {
    shard.offsets.borrow_mut().commit_internal(
        SCHEDULE_PROGRESS_GROUP,
        SCHEDULE_TOPIC,
        queue_id,
        offset as i64,
    );
}

/// The message a scheduled record turns into when due.
fn delivered(record: &message::DecodedRecord, shard: &Shard) -> Option<PutMessage> {
    let properties = parse_properties(&record.properties);
    let topic = properties.get(property::REAL_TOPIC)?.clone();
    let queue_id: i32 = properties.get(property::REAL_QID)?.parse().ok()?;
    Some(PutMessage {
        flag: record.flag,
        properties: without(
            &record.properties,
            &[property::DELAY, property::REAL_TOPIC, property::REAL_QID],
        ),
        sys_flag: record.sys_flag,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times,
        ..PutMessage::new(topic, queue_id, record.body.clone(), shard.broker_addr)
    })
}

/// CONSUMER_SEND_MSG_BACK (36), on the shard whose CommitLog holds the failed record: the
/// message goes to the group's retry topic after a growing delay, or to its dead-letter topic
/// once it has been retried `maxReconsumeTimes` times (or when asked with a negative level).
pub async fn send_back(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let header: ConsumerSendMsgBackRequestHeader = request.decode_header()?;
    let group = groups::group_config(shard, &header.group)?;
    if group.retry_queue_nums <= 0 {
        // Java: a group without retry queues drops what its consumers send back.
        return Ok(request.success().into());
    }
    let bytes: Bytes = shard
        .store
        .read_record(header.offset.max(0) as u64)
        .await?
        .ok_or_else(|| {
            Failure::system(format!("look message by offset failed, {}", header.offset))
        })?;
    let record = decode_record(&bytes, false).map_err(|e| Failure::system(e.to_string()))?;
    let mut properties = parse_properties(&record.properties);
    properties
        .entry(property::RETRY_TOPIC.to_owned())
        .or_insert_with(|| record.topic.clone());
    properties
        .entry(property::ORIGIN_MESSAGE_ID.to_owned())
        .or_insert_with(|| message::offset_msg_id(record.store_host, record.physical_offset));
    properties.remove(property::DELAY);
    // The group's retryMaxTimes, unless the client says otherwise (from V3_4_9 on).
    let max_times = match header.max_reconsume_times {
        Some(times) if request.version >= version::V3_4_9 => times,
        _ => group.retry_max_times,
    };
    let dead = record.reconsume_times >= max_times || header.delay_level < 0;
    let topic = if dead {
        format!("{DLQ_GROUP_TOPIC_PREFIX}{}", header.group)
    } else {
        format!("{RETRY_GROUP_TOPIC_PREFIX}{}", header.group)
    };
    let queue_id = if dead {
        0
    } else {
        // Java picks one at random; a rotation spreads as well.
        let turn = shard.queue_rotation.get();
        shard.queue_rotation.set(turn.wrapping_add(1));
        (turn % group.retry_queue_nums as u32) as i32
    };
    let created = processor
        .topic_or_create(&topic, &topic, group.retry_queue_nums)
        .await?;
    let queue_id = queue_id.min(created.write_queue_nums.max(1) - 1);
    let message = PutMessage {
        flag: record.flag,
        properties: encode_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        sys_flag: record.sys_flag,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times + 1,
        ..PutMessage::new(
            topic.clone(),
            queue_id,
            record.body.clone(),
            shard.broker_addr,
        )
    };
    let message = if dead {
        message
    } else {
        let level = if header.delay_level == 0 {
            3 + record.reconsume_times
        } else {
            header.delay_level
        };
        to_schedule(message, level, shard.config.delay_levels_ms.len())
    };
    let result = put_anywhere(processor, message).await;
    match result.status {
        PutStatus::Ok | PutStatus::FlushDiskTimeout => {
            (shard.meter.borrow_mut()).send_back(&topic, &header.group);
            Ok(request.success().into())
        }
        PutStatus::MessageIllegal(remark) | PutStatus::ServiceNotAvailable(remark) => {
            Err(Failure::new(response_code::SYSTEM_ERROR, remark))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_messages_remember_where_they_belong() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let message = PutMessage {
            properties: encode_properties([("TAGS", "a"), ("DELAY", "2")]),
            ..PutMessage::new("T", 3, Bytes::from_static(b"x"), addr)
        };
        assert_eq!(delay_level(&message.properties), Some(2));
        let scheduled = to_schedule(message, 99, 18);
        assert_eq!(
            (scheduled.topic.as_str(), scheduled.queue_id),
            (SCHEDULE_TOPIC, 17)
        );
        let props = parse_properties(&scheduled.properties);
        assert_eq!(props["REAL_TOPIC"], "T");
        assert_eq!(props["REAL_QID"], "3");
        assert_eq!(props["DELAY"], "18", "clamped to the last level");
        assert_eq!(props["TAGS"], "a");
        assert_eq!(delay_level("DELAY\u{1}0\u{2}"), None);
        assert!(timer_requested("TIMER_DELAY_SEC\u{1}5\u{2}"));
        assert!(timer_requested("A\u{1}b\u{2}TIMER_DELIVER_MS\u{1}1\u{2}"));
        assert!(!timer_requested("TAGS\u{1}a\u{2}"));
    }
}
