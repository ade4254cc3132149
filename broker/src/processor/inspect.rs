//! What mqadmin, rocketmq-dashboard and rocketmq-exporter ask a broker about its queues and
//! clients: GET_TOPIC_STATS_INFO (202), GET_CONSUME_STATS (208), GET_BROKER_CONSUME_STATS
//! (317), QUERY_CONSUME_TIME_SPAN (303), GET_CONSUMER_CONNECTION_LIST (203),
//! GET_PRODUCER_CONNECTION_LIST (204), GET_ALL_PRODUCER_INFO (328), QUERY_TOPIC_CONSUME_BY_WHO
//! (300), INVOKE_BROKER_TO_RESET_OFFSET (222), CLONE_GROUP_OFFSET (314) and
//! GET_SYSTEM_TOPIC_LIST_FROM_BROKER (305).
//!
//! A shard answers for the broker its clients see (`Shard::broker_shards`): with a broker per
//! shard its own queues, in one-name mode every shard's, each asked for the queues it owns
//! (`Call::QueueStates`, `Call::ResetOffsets`, `Call::Offsets`). The client table is the same
//! on every shard, so connection lists need no hop.

use std::collections::{BTreeMap, BTreeSet};

use thruster_protocol::body::admin::{
    Connection, ConsumeQueueData, ConsumeStats, ConsumeStatsList, ConsumerConnection, GroupList,
    OffsetWrapper, ProducerConnection, ProducerInfo, ProducerTableInfo,
    QueryConsumeQueueResponseBody, QueryConsumeTimeSpanBody, QueueTimeSpan, ResetOffsetBody,
    TopicOffset, TopicStatsTable,
};
use thruster_protocol::body::{self, MessageQueue, TopicConfig, TopicList};
use thruster_protocol::header::admin::{
    CloneGroupOffsetRequestHeader, ConsumerGroupRequestHeader, GetConsumeStatsRequestHeader,
    ProducerGroupRequestHeader, QueryConsumeQueueRequestHeader, ResetOffsetRequestHeader,
    TopicGroupRequestHeader, TopicRequestHeader,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{debug, info};

use super::{BrokerProcessor, Handled};
use crate::meta::clients::Member;
use crate::meta::topic_config;
use crate::remoting::Failure;
use crate::shard::{owner_of, Call, CallReply, OffsetAdmin, QueueState, Shard};

/// The ids of `topic`'s queues this shard serves: with a broker per shard its own share,
/// renumbered from 0; in one-name mode the ids it owns.
fn own_queue_ids(shard: &Shard, whole: &TopicConfig) -> Vec<i32> {
    let queues = whole.read_queue_nums.max(whole.write_queue_nums);
    if shard.view().is_some() {
        let mine = shard.topic_view(whole.clone());
        (0..mine.read_queue_nums.max(mine.write_queue_nums)).collect()
    } else {
        (0..queues)
            .filter(|&q| owner_of(&whole.topic_name, q, shard.count) == shard.id)
            .collect()
    }
}

/// This shard's queues of `topic`, with `group`'s progress in them.
pub async fn queue_states_here(
    processor: &BrokerProcessor,
    topic: &str,
    group: Option<&str>,
) -> Vec<QueueState> {
    let shard = &processor.shard;
    let Some(whole) = shard.topics.borrow().get(topic).cloned() else {
        return Vec::new();
    };
    let store = &shard.store;
    let mut states = Vec::new();
    for queue_id in own_queue_ids(shard, &whole) {
        let min = store.min_offset(topic, queue_id).unwrap_or(0);
        let max = store.max_offset(topic, queue_id);
        let store_time = |offset: u64| async move {
            store
                .store_time_at_offset(topic, queue_id, offset)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let last_store_ms = if max > 0 {
            store_time(max - 1).await
        } else {
            0
        };
        let first_store_ms = if max > min { store_time(min).await } else { 0 };
        let consumer_offset = group.and_then(|g| shard.offsets.borrow().query(g, topic, queue_id));
        let consumed_store_ms = match consumer_offset {
            Some(offset) if offset > 0 => store_time(offset as u64 - 1).await,
            _ => 0,
        };
        states.push(QueueState {
            queue_id,
            min_offset: min as i64,
            max_offset: max as i64,
            first_store_ms,
            last_store_ms,
            consumer_offset,
            consumed_store_ms,
        });
    }
    states
}

/// The broker's queues of `topic` (every shard it spans), TOPIC_NOT_EXIST for an unknown topic.
async fn queue_states(
    processor: &BrokerProcessor,
    topic: &str,
    group: Option<&str>,
) -> Result<Vec<QueueState>, Failure> {
    let shard = &processor.shard;
    if shard.topics.borrow().get(topic).is_none() {
        return Err(Failure::new(
            response_code::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist"),
        ));
    }
    let mut all = Vec::new();
    for to in shard.broker_shards() {
        let call = Call::QueueStates {
            topic: topic.to_owned(),
            group: group.map(str::to_owned),
        };
        match shard.call(processor, to, call).await {
            CallReply::QueueStates(states) => all.extend(states),
            _ => return Err(unavailable(to)),
        }
    }
    all.sort_by_key(|s| s.queue_id);
    Ok(all)
}

fn unavailable(to: usize) -> Failure {
    Failure::new(
        response_code::SERVICE_NOT_AVAILABLE,
        format!("shard {to} is not available"),
    )
}

fn message_queue(shard: &Shard, topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        topic: topic.to_owned(),
        broker_name: shard.broker_name.clone(),
        queue_id,
    }
}

/// GET_TOPIC_STATS_INFO: each queue's min and max offsets and the last message's store time.
pub async fn topic_stats(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: TopicRequestHeader = request.decode_header()?;
    let states = queue_states(processor, &header.topic, None).await?;
    let offset_table = states
        .iter()
        .map(|s| {
            let offsets = TopicOffset {
                last_update_timestamp: s.last_store_ms,
                max_offset: s.max_offset,
                min_offset: s.min_offset,
            };
            (
                message_queue(&processor.shard, &header.topic, s.queue_id),
                offsets,
            )
        })
        .collect();
    let body = TopicStatsTable { offset_table }.encode();
    Ok(request.success().with_body(body).into())
}

/// Topics `group` has offsets for on any shard of this broker.
async fn topics_of_group(
    processor: &BrokerProcessor,
    group: &str,
) -> Result<BTreeSet<String>, Failure> {
    let shard = &processor.shard;
    let mut topics = BTreeSet::new();
    for to in shard.broker_shards() {
        let call = Call::Offsets(OffsetAdmin::TopicsOfGroup(group.to_owned()));
        match shard.call(processor, to, call).await {
            CallReply::Names(names) => topics.extend(names),
            _ => return Err(unavailable(to)),
        }
    }
    Ok(topics)
}

/// Java's `getConsumeStats` for one group: every topic it consumes here (the one asked for,
/// or those it has offsets for), each queue's broker and consumer offsets.
async fn consume_stats_of(
    processor: &BrokerProcessor,
    group: &str,
    topic: Option<&str>,
) -> Result<ConsumeStats, Failure> {
    let shard = &processor.shard;
    let topics = match topic.filter(|t| !t.is_empty()) {
        Some(topic) => [topic.to_owned()].into_iter().collect(),
        None => topics_of_group(processor, group).await?,
    };
    let subscribed: Option<BTreeSet<String>> = shard
        .clients
        .borrow()
        .consumer_group(group)
        .filter(|g| !g.subscriptions.is_empty())
        .map(|g| g.subscriptions.keys().cloned().collect());
    let mut stats = ConsumeStats::default();
    for topic in topics {
        if subscribed.as_ref().is_some_and(|s| !s.contains(&topic)) {
            continue; // as Java: the online group does not consume it
        }
        let Ok(states) = queue_states(processor, &topic, Some(group)).await else {
            continue; // as Java: a topic without config is skipped
        };
        for state in states {
            let consumer_offset = state.consumer_offset.unwrap_or(0).max(0);
            stats.offset_table.insert(
                message_queue(shard, &topic, state.queue_id),
                OffsetWrapper {
                    broker_offset: state.max_offset,
                    consumer_offset,
                    last_timestamp: state.consumed_store_ms,
                },
            );
        }
        stats.consume_tps += group_tps(shard, &topic, group);
    }
    Ok(stats)
}

/// Messages per second `group` pulled from `topic` here over the last minute.
fn group_tps(shard: &Shard, topic: &str, group: &str) -> f64 {
    shard.meter.borrow().group_tps(topic, group)
}

/// GET_CONSUME_STATS.
pub async fn consume_stats(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GetConsumeStatsRequestHeader = request.decode_header()?;
    let stats =
        consume_stats_of(processor, &header.consumer_group, header.topic.as_deref()).await?;
    Ok(request.success().with_body(stats.encode()).into())
}

/// GET_BROKER_CONSUME_STATS: every online group's stats per topic, and the total lag.
pub async fn broker_consume_stats(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Handled {
    let shard = &processor.shard;
    let groups: Vec<(String, Vec<String>)> = {
        let clients = shard.clients.borrow();
        clients
            .consumer_group_names()
            .filter_map(|g| {
                let topics = clients
                    .consumer_group(g)?
                    .subscriptions
                    .keys()
                    .cloned()
                    .collect();
                Some((g.to_owned(), topics))
            })
            .collect()
    };
    let mut list = ConsumeStatsList {
        broker_addr: shard.broker_addr.to_string(),
        ..ConsumeStatsList::default()
    };
    for (group, topics) in groups {
        let mut per_topic = Vec::new();
        for topic in topics {
            let stats = consume_stats_of(processor, &group, Some(&topic)).await?;
            if !stats.offset_table.is_empty() {
                list.total_diff += stats.total_diff();
                per_topic.push(stats);
            }
        }
        if !per_topic.is_empty() {
            list.consume_stats_list
                .push([(group, per_topic)].into_iter().collect());
        }
    }
    Ok(request.success().with_body(list.encode()).into())
}

/// QUERY_CONSUME_TIME_SPAN: per queue, the first, last and consumed-up-to store times.
pub async fn consume_time_span(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: TopicGroupRequestHeader = request.decode_header()?;
    let states = queue_states(processor, &header.topic, Some(&header.group)).await?;
    let consume_time_span_set = states
        .iter()
        .map(|s| {
            // Java: the consumed-up-to time is the last message's when all are consumed.
            let consumed = if s.consumer_offset.unwrap_or(0) >= s.max_offset {
                s.last_store_ms
            } else {
                s.consumed_store_ms
            };
            QueueTimeSpan {
                consume_time_stamp: consumed,
                delay_time: s.last_store_ms - consumed,
                max_time_stamp: s.last_store_ms,
                message_queue: message_queue(&processor.shard, &header.topic, s.queue_id),
                min_time_stamp: s.first_store_ms,
            }
        })
        .collect();
    let body = body::encode(&QueryConsumeTimeSpanBody {
        consume_time_span_set,
    });
    Ok(request.success().with_body(body).into())
}

/// The members whose connection this broker holds: with a broker per shard, the connections
/// to this shard-broker only (the client table holds every connection of the process, and a
/// client connects to each shard-broker), as a Java broker lists the connections made to it.
fn held_by_this_broker<'a>(
    shard: &Shard,
    members: &'a [Member],
) -> impl Iterator<Item = &'a Member> {
    let shards = shard.broker_shards();
    members
        .iter()
        .filter(move |m| shards.contains(&m.conn.shard))
}

fn connection(member: &Member) -> Connection {
    Connection {
        client_addr: member.info.addr.clone(),
        client_id: member.client_id.clone(),
        language: member.info.language.clone(),
        version: member.info.version,
    }
}

/// GET_CONSUMER_CONNECTION_LIST: the group's connections, subscriptions and settings;
/// CONSUMER_NOT_ONLINE when nobody is in it.
pub fn consumer_connections(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ConsumerGroupRequestHeader = request.decode_header()?;
    let clients = processor.shard.clients.borrow();
    let shard = &processor.shard;
    let Some((group, connection_set)) = clients
        .consumer_members(&header.consumer_group)
        .map(|(group, members)| {
            let held = held_by_this_broker(shard, &members).map(connection);
            (group, held.collect::<BTreeSet<_>>())
        })
        .filter(|(_, held)| !held.is_empty())
    else {
        return Err(Failure::new(
            response_code::CONSUMER_NOT_ONLINE,
            format!("the consumer group[{}] not online", header.consumer_group),
        ));
    };
    let body = body::encode(&ConsumerConnection {
        connection_set,
        consume_from_where: group.consume_from_where.clone(),
        consume_type: group.consume_type.clone(),
        message_model: group.message_model.clone(),
        subscription_table: group.subscriptions.clone(),
    });
    Ok(request.success().with_body(body).into())
}

/// GET_PRODUCER_CONNECTION_LIST.
pub fn producer_connections(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ProducerGroupRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    let members: Vec<Member> = held_by_this_broker(
        shard,
        &shard
            .clients
            .borrow()
            .producer_members(&header.producer_group),
    )
    .cloned()
    .collect();
    if members.is_empty() {
        return Err(Failure::system(format!(
            "the producer group[{}] not exist",
            header.producer_group
        )));
    }
    let body = body::encode(&ProducerConnection {
        connection_set: members.iter().map(connection).collect(),
    });
    Ok(request.success().with_body(body).into())
}

/// GET_ALL_PRODUCER_INFO: every producer group with its producers.
pub fn all_producers(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let clients = processor.shard.clients.borrow();
    let data = clients
        .producer_groups()
        .map(|(group, members)| {
            let producers = members
                .iter()
                .map(|m| ProducerInfo {
                    client_id: m.client_id.clone(),
                    language: m.info.language.clone(),
                    last_update_timestamp: m.last_update_ms,
                    remote_ip: m.info.addr.clone(),
                    version: m.info.version,
                })
                .collect();
            (group.to_owned(), producers)
        })
        .collect();
    let body = body::encode(&ProducerTableInfo { data });
    Ok(request.success().with_body(body).into())
}

/// QUERY_TOPIC_CONSUME_BY_WHO: groups subscribed to the topic, and groups with offsets in it.
pub async fn consumed_by(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: TopicRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    let mut group_list = shard.clients.borrow().groups_subscribing(&header.topic);
    for to in shard.broker_shards() {
        let call = Call::Offsets(OffsetAdmin::GroupsOfTopic(header.topic.clone()));
        match shard.call(processor, to, call).await {
            CallReply::Names(names) => group_list.extend(names),
            _ => return Err(unavailable(to)),
        }
    }
    let body = body::encode(&GroupList { group_list });
    Ok(request.success().with_body(body).into())
}

/// A shard's side of a reset: for each of its queues of `topic`, where `group`'s offset goes
/// (Java `Broker2Client.resetOffset`): the first offset stored at or after `timestamp` (the
/// end for −1), unless that is past the committed offset and the reset is not forced.
pub async fn reset_offsets_here(
    processor: &BrokerProcessor,
    topic: &str,
    group: &str,
    timestamp: i64,
    force: bool,
) -> Result<Vec<(i32, i64)>, Failure> {
    let shard = &processor.shard;
    let Some(whole) = shard.topics.borrow().get(topic).cloned() else {
        return Err(Failure::system(format!(
            "[reset-offset] reset offset failed, no topic in this broker. topic={topic}"
        )));
    };
    let queue_ids = own_queue_ids(shard, &whole);
    let committed: Vec<Option<i64>> = {
        let table = shard.offsets.borrow();
        queue_ids
            .iter()
            .map(|&q| table.query(group, topic, q))
            .collect()
    };
    // Java refuses unless every queue has a committed offset; here a group that has consumed
    // some queues only (a consumer that never got the others) is reset too, its other queues
    // to the target. A group with no offset here at all does not consume the topic.
    if committed.iter().all(Option::is_none) {
        return Err(Failure::system(format!(
            "THe consumer group <{group}> not exist"
        )));
    }
    let mut offsets = Vec::new();
    for (&queue_id, committed) in queue_ids.iter().zip(committed) {
        let target = if timestamp == -1 {
            shard.store.max_offset(topic, queue_id)
        } else {
            shard
                .store
                .search_offset_by_timestamp(topic, queue_id, timestamp, false)
                .await
                .map_err(|e| Failure::system(format!("searching {topic}:{queue_id}: {e}")))?
        } as i64;
        let offset = match committed {
            Some(committed) if !force && target >= committed => committed,
            _ => target,
        };
        offsets.push((queue_id, offset));
    }
    Ok(offsets)
}

/// INVOKE_BROKER_TO_RESET_OFFSET: computes the new offsets and tells the group's clients with
/// RESET_CONSUMER_CLIENT_OFFSET (one-way, as Java); CONSUMER_NOT_ONLINE when nobody is in the
/// group (mqadmin then falls back to committing offsets itself).
pub async fn reset_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ResetOffsetRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    let mut offset_table = BTreeMap::new();
    for to in shard.broker_shards() {
        let call = Call::ResetOffsets {
            topic: header.topic.clone(),
            group: header.group.clone(),
            timestamp: header.timestamp,
            force: header.is_force,
        };
        match shard.call(processor, to, call).await {
            CallReply::Offsets(Ok(offsets)) => {
                for (queue_id, offset) in offsets {
                    offset_table.insert(message_queue(shard, &header.topic, queue_id), offset);
                }
            }
            CallReply::Offsets(Err(failure)) => return Err(failure),
            _ => return Err(unavailable(to)),
        }
    }
    let body = ResetOffsetBody { offset_table };
    let members = shard.clients.borrow().consumers_of(&header.group);
    if members.is_empty() {
        return Err(Failure::new(
            response_code::CONSUMER_NOT_ONLINE,
            format!(
                "Consumer not online, so can not reset offset, Group: {} Topic: {} Timestamp: {}",
                header.group, header.topic, header.timestamp
            ),
        ));
    }
    let notice = RemotingCommand::request(
        rc::RESET_CONSUMER_CLIENT_OFFSET,
        &ResetOffsetRequestHeader {
            is_force: false,
            ..header.clone()
        },
    )
    .with_body(body.encode())
    .oneway();
    let clients = one_connection_per_client(shard.id, members);
    for member in &clients {
        if !super::send_to_connection(processor, member.conn, notice.clone()).await {
            debug!(client = %member.client_id, "reset notice not queued (connection gone or busy)");
        }
    }
    info!(topic = %header.topic, group = %header.group, clients = clients.len(), "offsets reset");
    Ok(request.success().with_body(body.encode()).into())
}

/// One member per client: the client table holds every connection a client has to any of
/// this process's shard-brokers, and a notice must reach each client once (a client told
/// twice resets twice, and consumes twice). The connection to this shard is preferred.
fn one_connection_per_client(shard_id: usize, members: Vec<Member>) -> Vec<Member> {
    let mut chosen: BTreeMap<String, Member> = BTreeMap::new();
    for member in members {
        let replace = chosen
            .get(&member.client_id)
            .is_none_or(|kept| kept.conn.shard != shard_id && member.conn.shard == shard_id);
        if replace {
            chosen.insert(member.client_id.clone(), member);
        }
    }
    chosen.into_values().collect()
}

/// CLONE_GROUP_OFFSET: copies a group's committed offsets (of one topic, or all) to another
/// group, on every shard of this broker.
pub async fn clone_group_offset(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: CloneGroupOffsetRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    for to in shard.broker_shards() {
        let call = Call::Offsets(OffsetAdmin::Clone {
            src: header.src_group.clone(),
            dest: header.dest_group.clone(),
            topic: header.topic.clone().filter(|t| !t.is_empty()),
        });
        match shard.call(processor, to, call).await {
            CallReply::Done(Ok(())) => {}
            CallReply::Done(Err(failure)) => return Err(failure),
            _ => return Err(unavailable(to)),
        }
    }
    Ok(request.success().into())
}

/// A shard's side of `Call::Offsets`.
pub fn offsets_here(shard: &Shard, work: OffsetAdmin) -> CallReply {
    let mut offsets = shard.offsets.borrow_mut();
    match work {
        OffsetAdmin::RemoveGroup(group) => {
            offsets.remove_group(&group);
            CallReply::Done(Ok(()))
        }
        OffsetAdmin::TopicsOfGroup(group) => CallReply::Names(offsets.topics_of_group(&group)),
        OffsetAdmin::GroupsOfTopic(topic) => CallReply::Names(offsets.groups_of_topic(&topic)),
        OffsetAdmin::Clone { src, dest, topic } => CallReply::Done(
            offsets
                .clone_group(&src, &dest, topic.as_deref())
                .map(|_| ())
                .map_err(|full| Failure::system(full.to_string())),
        ),
    }
}

/// Entries QUERY_CONSUME_QUEUE returns at most.
const QUERY_CONSUME_QUEUE_COUNT_MAX: usize = 1024;

/// QUERY_CONSUME_QUEUE (321), on the queue's owner: raw ConsumeQueue entries from `index`, and
/// with `consumerGroup` the group's subscription and whether each entry's tag passes it.
pub fn query_consume_queue(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: QueryConsumeQueueRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    let count = (header.count.max(0) as usize).min(QUERY_CONSUME_QUEUE_COUNT_MAX);
    let Some((min, max, entries)) = shard.store.queue_entries(
        &header.topic,
        header.queue_id,
        header.index.max(0) as u64,
        count,
    ) else {
        return Err(Failure::system(format!(
            "{}@{} is not exist!",
            header.queue_id, header.topic
        )));
    };
    let mut body = QueryConsumeQueueResponseBody {
        max_queue_index: max as i64,
        min_queue_index: min as i64,
        ..QueryConsumeQueueResponseBody::default()
    };
    let mut filter = None;
    if let Some(group) = &header.consumer_group {
        let subscription = shard
            .clients
            .borrow()
            .consumer_group(group)
            .and_then(|g| g.subscriptions.get(&header.topic).cloned());
        match &subscription {
            Some(data) => filter = Some(super::pull::TagFilter::from_expression(&data.sub_string)),
            None => {
                body.filter_data = Some(format!("{group}@{} is not online!", header.topic));
            }
        }
        body.subscription_data = subscription;
    }
    body.queue_data = entries
        .iter()
        .map(|entry| ConsumeQueueData {
            physic_offset: entry.phys_offset as i64,
            physic_size: entry.size as i32,
            tags_code: entry.tags_code,
            eval: filter.as_ref().is_some_and(|f| f.accepts(entry.tags_code)),
            ..ConsumeQueueData::default()
        })
        .collect();
    Ok(request.success().with_body(body::encode(&body)).into())
}

/// GET_SYSTEM_TOPIC_LIST_FROM_BROKER: the broker's own topics (`TopicList`, no address), as
/// Java's; mqadmin exportMetadata and exportMetrics ask every master for them.
pub fn system_topics(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let list = TopicList {
        broker_addr: None,
        topic_list: topic_config::system_topics(&processor.shard.config),
    };
    Ok(request.success().with_body(body::encode(&list)).into())
}
