//! Timer messages at any time (RocketMQ 5's RIP-43 properties: `TIMER_DELIVER_MS`,
//! `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`), kept in the store, not in memory.
//!
//! The timing wheel is a hierarchy of FIFO queues: queue `L` of `rmq_sys_wheel_timer` holds
//! messages with `BASE_MS·2^L ≤ remaining < BASE_MS·2^(L+1)` when they entered it (queue 0:
//! less than `2·BASE_MS`), each record carrying its due time (`TIMER_OUT_MS`) and its real
//! queue (`REAL_TOPIC`, `REAL_QID`). Entering times grow along a queue, so each queue's loop
//! only ever waits on its head: at `entered + BASE_MS·2^L` (`L ≥ 1`) the head's remaining time
//! has dropped below its level's span and it is appended to the level that fits now; queue 0's
//! head is delivered at its due time. Only queue 0 delivers (a higher level's head woken at its
//! due time goes to queue 0): a crash can leave two copies of a move in two levels, and with one
//! loop delivering, the look-up that finds a copy already delivered never races the delivery of
//! the other. A message is never delivered early; one entering queue 0
//! waits behind heads due at most `2·BASE_MS` after it entered, so it is at most that late (plus
//! the store's put). A message moves down at most once per level (`TIMER_LEVELS` appends for
//! the longest delay), and memory holds no timer at all: a million pending timers are records
//! and ConsumeQueue entries. Progress is kept like the delay levels' (consumer offsets of
//! `%TIMER_PROGRESS%`), so a crash can repeat a move, never lose one; a delivery first looks for
//! the message in its real queue (index, by UNIQ_KEY and due time) so one delivered before the
//! crash is not delivered again (needs `messageIndexEnable`, the default).
//!
//! A send due further than `timerMaxDelaySec` ahead is refused (MESSAGE_ILLEGAL, RocketMQ's
//! remark); one already due is stored in its queue at once; a delay level wins over the timer
//! properties, as in RocketMQ.

use std::time::Duration;

use thruster_protocol::message::{self, encode_properties, parse_properties, property};
use thruster_protocol::response_code;
use tracing::{debug, warn};

use super::schedule::{already_stored, entry_record, next_entries, put_anywhere, without};
use super::BrokerProcessor;
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::Shard;
use crate::store::{PutMessage, PutStatus};

pub use crate::meta::topic_config::TIMER_TOPIC;
/// Internal group whose consumer offsets are each level's progress.
pub const TIMER_PROGRESS_GROUP: &str = "%TIMER_PROGRESS%";
/// Span of level 0 is twice this: the most a delivery can be late by the wheel itself.
pub const BASE_MS: i64 = 25;
/// Levels: the last spans `BASE_MS·2^23` ≈ 58 h and rolls longer timers onto itself.
pub const TIMER_LEVELS: i32 = 24;
/// `PROPERTY_TIMER_OUT_MS`: the due time the broker computed.
const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
/// How long a level waits before retrying a move or delivery the store refused.
const RETRY_WAIT: Duration = Duration::from_millis(100);

/// When a timer send is due (ms since the epoch), from its properties and the time now.
pub fn due_ms(properties: &str, now_ms: i64) -> Result<i64, Failure> {
    let illegal = |why: String| Failure::new(response_code::MESSAGE_ILLEGAL, why);
    let number = |name: &str| -> Result<Option<i64>, Failure> {
        message::find_property(properties, name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| illegal(format!("timer message illegal: {name}={v:?}")))
            })
            .transpose()
    };
    if let Some(sec) = number(property::TIMER_DELAY_SEC)? {
        return Ok(now_ms.saturating_add(sec.saturating_mul(1000)));
    }
    if let Some(ms) = number(property::TIMER_DELAY_MS)? {
        return Ok(now_ms.saturating_add(ms));
    }
    number(property::TIMER_DELIVER_MS)?
        .ok_or_else(|| illegal("timer message illegal: no delivery time".into()))
}

/// The level whose span holds `remaining_ms`.
pub fn level_for(remaining_ms: i64) -> i32 {
    let units = (remaining_ms.max(0) / BASE_MS) as u64;
    if units < 2 {
        return 0;
    }
    (63 - units.leading_zeros() as i32).min(TIMER_LEVELS - 1)
}

/// When a record that entered level `level` at `entered_ms` needs looking at again.
fn wake_ms(level: i32, entered_ms: i64, due_ms: i64) -> i64 {
    if level == 0 {
        due_ms
    } else {
        entered_ms.saturating_add(BASE_MS << level).min(due_ms)
    }
}

/// Rewrites a timer send for the wheel, or `None` when it is due already (stored as it is).
pub fn to_timer(
    mut message: PutMessage,
    now_ms: i64,
    max_delay_sec: u64,
) -> Result<Option<PutMessage>, Failure> {
    let due = due_ms(&message.properties, now_ms)?;
    let max_delay_ms = (max_delay_sec as i64).saturating_mul(1000);
    if due - now_ms > max_delay_ms {
        return Err(Failure::new(
            response_code::MESSAGE_ILLEGAL,
            format!(
                "timer message illegal, the delay time should not be bigger than the max delay \
                 {max_delay_ms}ms; or if set del msg, the delay time should be bigger than the \
                 current time"
            ),
        ));
    }
    if due <= now_ms {
        return Ok(None);
    }
    let real_qid = message.queue_id.to_string();
    let mut properties = without(
        &message.properties,
        &[TIMER_OUT_MS, property::REAL_TOPIC, property::REAL_QID],
    );
    properties.push_str(&encode_properties([
        (TIMER_OUT_MS, due.to_string().as_str()),
        (property::REAL_TOPIC, message.topic.as_str()),
        (property::REAL_QID, real_qid.as_str()),
    ]));
    message.properties = properties;
    message.topic = TIMER_TOPIC.to_owned();
    message.queue_id = level_for(due - now_ms);
    Ok(Some(message))
}

/// Starts the loop of every level whose queue this shard owns.
pub fn spawn_wheel(processor: std::rc::Rc<BrokerProcessor>) {
    for level in 0..TIMER_LEVELS {
        if processor.shard.owner_of(TIMER_TOPIC, level) != processor.shard.id {
            continue;
        }
        let processor = processor.clone();
        let tasks = &processor.clone().shard.tasks;
        tasks.spawn(
            "timer-wheel",
            async move { run_level(&processor, level).await },
        );
    }
}

async fn run_level(processor: &BrokerProcessor, level: i32) {
    let shard = &processor.shard;
    while !shard.is_stopping() {
        let progress = (TIMER_PROGRESS_GROUP, TIMER_TOPIC, level);
        let Some(entries) = next_entries(shard, progress).await else {
            continue;
        };
        for entry in entries {
            let record = match entry_record(&entry).await {
                Ok(record) => record,
                Err(error) => {
                    warn!(level, offset = entry.queue_offset, %error, "unreadable timer record skipped");
                    set_progress(shard, level, entry.queue_offset + 1);
                    continue;
                }
            };
            let Some(due) = message::find_property(&record.properties, TIMER_OUT_MS)
                .and_then(|d| d.parse::<i64>().ok())
            else {
                warn!(
                    level,
                    offset = entry.queue_offset,
                    "timer record without TIMER_OUT_MS skipped"
                );
                set_progress(shard, level, entry.queue_offset + 1);
                continue;
            };
            let now_ms = runtime::now_ms();
            let wake = wake_ms(level, record.store_timestamp, due);
            if wake > now_ms {
                // The head of a level is the first to wake: sleep until it does.
                let wait = Duration::from_millis((wake - now_ms) as u64);
                if !shard.tasks.stop_signal().sleep(wait).await {
                    return;
                }
                break;
            }
            let next = match moved(&record, level, due, now_ms, shard.broker_addr) {
                Some(next) => next,
                None => {
                    warn!(
                        level,
                        offset = entry.queue_offset,
                        "timer record without REAL_TOPIC/REAL_QID skipped"
                    );
                    set_progress(shard, level, entry.queue_offset + 1);
                    continue;
                }
            };
            let delivering = next.topic != TIMER_TOPIC;
            if delivering
                && already_stored(processor, &next, &record, |r| {
                    message::find_property(&r.properties, TIMER_OUT_MS) == Some(&due.to_string())
                })
                .await
            {
                // Delivered before a crash took the progress that said so: not again.
                debug!(
                    level,
                    offset = entry.queue_offset,
                    "timer message delivered before"
                );
                set_progress(shard, level, entry.queue_offset + 1);
                continue;
            }
            let result = put_anywhere(processor, next).await;
            if !matches!(result.status, PutStatus::Ok | PutStatus::FlushDiskTimeout) {
                warn!(level, status = ?result.status, "timer move failed; retrying");
                if !shard.tasks.stop_signal().sleep(RETRY_WAIT).await {
                    return;
                }
                break;
            }
            debug!(
                level,
                offset = entry.queue_offset,
                due,
                "timer record moved"
            );
            set_progress(shard, level, entry.queue_offset + 1);
        }
    }
}

/// Where a woken record of `level` goes: its real queue when due and `level` is 0, else the
/// level that fits now (0 when due).
fn moved(
    record: &message::DecodedRecord,
    level: i32,
    due: i64,
    now_ms: i64,
    store_host: std::net::SocketAddr,
) -> Option<PutMessage> {
    let template = PutMessage {
        flag: record.flag,
        sys_flag: record.sys_flag,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times,
        ..PutMessage::new(TIMER_TOPIC, 0, record.body.clone(), store_host)
    };
    if due > now_ms || level != 0 {
        return Some(PutMessage {
            queue_id: level_for(due - now_ms),
            properties: record.properties.clone(),
            ..template
        });
    }
    let properties = parse_properties(&record.properties);
    let topic = properties.get(property::REAL_TOPIC)?.clone();
    let queue_id: i32 = properties.get(property::REAL_QID)?.parse().ok()?;
    Some(PutMessage {
        topic,
        queue_id,
        properties: without(
            &record.properties,
            &[property::REAL_TOPIC, property::REAL_QID],
        ),
        ..template
    })
}

fn set_progress(shard: &Shard, level: i32, offset: u64) {
    shard.offsets.borrow_mut().commit_internal(
        TIMER_PROGRESS_GROUP,
        TIMER_TOPIC,
        level,
        offset as i64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn levels_hold_their_spans_and_a_woken_head_always_moves_down() {
        assert_eq!(level_for(0), 0);
        assert_eq!(level_for(2 * BASE_MS - 1), 0);
        assert_eq!(level_for(2 * BASE_MS), 1);
        assert_eq!(level_for(4 * BASE_MS - 1), 1);
        assert_eq!(level_for(4 * BASE_MS), 2);
        assert_eq!(level_for(i64::MAX), TIMER_LEVELS - 1);
        for remaining in [50, 99, 100, 1_000, 120_000, 259_200_000] {
            let level = level_for(remaining);
            assert!(level > 0);
            // Woken at its level's span after entering, it has less than that span left.
            let left = remaining - wake_ms(level, 0, remaining);
            assert!(
                level_for(left) < level || left <= 0,
                "{remaining}: {level} -> {left}"
            );
        }
        assert_eq!(wake_ms(0, 5, 40), 40, "level 0 waits for the due time");
        assert_eq!(wake_ms(3, 1_000, 1_000_000), 1_000 + 8 * BASE_MS);
    }

    #[test]
    fn only_level_zero_delivers_a_due_record() {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let record = message::DecodedRecord {
            total_size: 0,
            magic: 0,
            body_crc: 0,
            queue_id: 3,
            flag: 0,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: addr,
            store_timestamp: 0,
            store_host: addr,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"x"),
            topic: TIMER_TOPIC.to_owned(),
            properties: encode_properties([
                (TIMER_OUT_MS, "1000"),
                (property::REAL_TOPIC, "T"),
                (property::REAL_QID, "2"),
            ]),
        };
        // Due, woken on a higher level: to level 0, not to its real queue.
        let next = moved(&record, 3, 1_000, 1_000, addr).unwrap();
        assert_eq!((next.topic.as_str(), next.queue_id), (TIMER_TOPIC, 0));
        assert_eq!(next.properties, record.properties);
        // Due on level 0: to its real queue, without the wheel's properties.
        let next = moved(&record, 0, 1_000, 1_000, addr).unwrap();
        assert_eq!((next.topic.as_str(), next.queue_id), ("T", 2));
        assert!(message::find_property(&next.properties, property::REAL_TOPIC).is_none());
        // Not due: to the level that fits what is left.
        let next = moved(&record, 0, 1_000, 1_000 - 4 * BASE_MS, addr).unwrap();
        assert_eq!((next.topic.as_str(), next.queue_id), (TIMER_TOPIC, 2));
    }

    #[test]
    fn timer_sends_are_due_refused_or_stored_at_once() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let message = |props: &[(&str, &str)]| PutMessage {
            properties: encode_properties(props.iter().copied()),
            ..PutMessage::new("T", 3, Bytes::from_static(b"x"), addr)
        };
        let now = 1_000_000;
        assert_eq!(
            due_ms("TIMER_DELAY_SEC\u{1}2\u{2}", now).unwrap(),
            now + 2_000
        );
        assert_eq!(
            due_ms("TIMER_DELAY_MS\u{1}250\u{2}", now).unwrap(),
            now + 250
        );
        assert_eq!(due_ms("TIMER_DELIVER_MS\u{1}7\u{2}", now).unwrap(), 7);
        assert!(due_ms("TIMER_DELAY_MS\u{1}soon\u{2}", now).is_err());
        let timed = to_timer(message(&[("TIMER_DELAY_MS", "1000")]), now, 60)
            .unwrap()
            .unwrap();
        assert_eq!(timed.topic, TIMER_TOPIC);
        assert_eq!(timed.queue_id, level_for(1_000));
        let props = parse_properties(&timed.properties);
        assert_eq!(props["TIMER_OUT_MS"], (now + 1_000).to_string());
        assert_eq!(props["REAL_TOPIC"], "T");
        assert_eq!(props["REAL_QID"], "3");
        let error = to_timer(message(&[("TIMER_DELAY_SEC", "61")]), now, 60).unwrap_err();
        assert_eq!(error.code, response_code::MESSAGE_ILLEGAL);
        assert!(error.remark.contains("60000ms"), "{}", error.remark);
        assert!(to_timer(message(&[("TIMER_DELIVER_MS", "5")]), now, 60)
            .unwrap()
            .is_none());
    }
}
