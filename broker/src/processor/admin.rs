//! Topic administration (shard 0 writes the topic table and tells the others).

use std::time::Duration;

use thruster_protocol::body::{self, TopicConfig};
use thruster_protocol::header::admin::{CreateTopicRequestHeader, TopicRequestHeader};
use thruster_protocol::{response_code, RemotingCommand};
use tracing::{info, warn};

use super::{BrokerProcessor, Handled, PersistedTable};
use crate::meta::topic_config::{
    topics_path, validate_topic_name, AUTO_CREATE_TOPIC_KEY_TOPIC, QUEUE_NUMS_MAX, SCHEDULE_TOPIC,
};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, MeshMessage};

/// Shard 0: creates a topic from its template (a send to a missing topic).
pub async fn auto_create_topic(
    processor: &BrokerProcessor,
    topic: &str,
    template: &str,
    queue_nums: i32,
) -> Result<TopicConfig, Failure> {
    let shard = &processor.shard;
    assert_eq!(shard.id, 0, "shard 0 writes the topic table");
    if let Some(existing) = shard.topics.borrow().get(topic) {
        return Ok(existing.clone());
    }
    let mut config = shard
        .topics
        .borrow()
        .derive_from_template(topic, template, queue_nums)?;
    if let Some(view) = shard.view() {
        // The send that creates a topic was routed by the template's route, in which every
        // shard is a broker promising `queue_nums` queues (Java and C++ clients build the new
        // topic's first route that way), so every shard gets that many, as every broker that
        // auto-creates a topic in RocketMQ does. A topic created explicitly keeps its count in
        // all (`ShardView`).
        config = view.auto_created(config);
    }
    info!(
        topic,
        template,
        queues = config.write_queue_nums,
        "topic auto-created"
    );
    upsert_topic(processor, config).await
}

/// Shard 0: creates or replaces a topic, persists the table, tells every shard, and asks for
/// a registration with the name servers.
pub async fn upsert_topic(
    processor: &BrokerProcessor,
    config: TopicConfig,
) -> Result<TopicConfig, Failure> {
    let shard = &processor.shard;
    assert_eq!(shard.id, 0, "shard 0 writes the topic table");
    shard.topics.borrow().room_for(&config)?;
    let changed = shard
        .topics
        .borrow_mut()
        .upsert(config.clone(), runtime::now_ms());
    if !changed {
        return Ok(config);
    }
    shard.topic_deltas.borrow_mut().push(config.clone());
    let announced = config.clone();
    shard
        .broadcast_applied(processor, || MeshMessage::TopicChanged(announced.clone()))
        .await;
    let version = shard.topics_changed.get() + 1;
    shard.topics_changed.advance(version);
    // Answer once the table is on disk with the topic (`persist_topics` writes every change
    // made before its write began, so many creations share one write) ...
    shard.topics_persisted.wait_for(version).await;
    if let Err(error) = &*shard.topics_persist_result.borrow() {
        return Err(Failure::system(format!("persisting topics: {error}")));
    }
    // ... and the name servers know it (bounded: a name server that is down delays
    // the answer by the registration timeout at most, and the topic is created regardless).
    if !shard.config.namesrv_addrs.is_empty() {
        let registered = shard.topics_registered.wait_for(version);
        let bound = Duration::from_millis(shard.config.register_broker_timeout_ms);
        if runtime::timeout(bound, registered).await.is_none() {
            warn!(topic = %config.topic_name, "topic created; its registration is still pending");
        }
    }
    Ok(config)
}

/// Shard 0, for the broker's life: writes `config/topics.json` whenever the table changed,
/// one write at a time, each covering every change made before it began. Creating a thousand
/// topics at once therefore costs a few writes of the table, not a thousand. Every change is
/// made by `upsert_topic`, which waits for its write; at the stop it writes what is left and
/// ends.
pub async fn persist_topics(shard: std::rc::Rc<crate::shard::Shard>) {
    assert_eq!(shard.id, 0, "shard 0 writes the topic table");
    let table = PersistedTable {
        what: "topic table",
        path: topics_path(&shard.config),
        changed: &shard.topics_changed,
        persisted: &shard.topics_persisted,
        result: &shard.topics_persist_result,
    };
    table
        .persist_on_change(&shard, || {
            serde_json::to_vec_pretty(&shard.topics.borrow().stored_wrapper())
        })
        .await;
}

/// UPDATE_AND_CREATE_TOPIC (17).
pub async fn update_and_create_topic(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Handled {
    let header: CreateTopicRequestHeader = request.decode_header()?;
    validate_topic_name(&header.topic).map_err(|f| Failure::system(f.remark))?;
    for nums in [header.read_queue_nums, header.write_queue_nums] {
        if !(1..=QUEUE_NUMS_MAX).contains(&nums) {
            return Err(Failure::system(format!(
                "queue nums must be between 1 and {QUEUE_NUMS_MAX}, got {nums}"
            )));
        }
    }
    let config = TopicConfig {
        topic_name: header.topic.clone(),
        read_queue_nums: header.read_queue_nums,
        write_queue_nums: header.write_queue_nums,
        perm: header.perm,
        topic_filter_type: header.topic_filter_type.clone(),
        topic_sys_flag: header.topic_sys_flag.unwrap_or(0),
        order: header.order,
        ..TopicConfig::default()
    };
    let shard = &processor.shard;
    match shard.call(processor, 0, Call::UpsertTopic(config)).await {
        CallReply::Topic(Ok(config)) => {
            shard.topics.borrow_mut().upsert(config, runtime::now_ms());
            Ok(request.success().into())
        }
        CallReply::Topic(Err(failure)) => Err(failure),
        _ => Err(Failure::new(
            response_code::SERVICE_NOT_AVAILABLE,
            "the topic table's shard is not available",
        )),
    }
}

/// GET_ALL_TOPIC_CONFIG (21): this shard's copy of the table, as its clients see it.
pub fn all_topic_config(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    // A Thruster slave asks for the whole table (`wholeTable`, an extension field Java
    // brokers ignore): it computes each shard's share itself, like the master.
    let wrapper = if request.ext_fields.get(WHOLE_TABLE_KEY) == Some("true") {
        shard.topics.borrow().stored_wrapper()
    } else {
        shard.topics_wrapper()
    };
    Ok(request.success().with_body(body::encode(&wrapper)).into())
}

/// Topics the broker needs whatever an operator asks: deleting them would stop delayed
/// delivery or auto-creation.
const UNDELETABLE_TOPICS: &[&str] = &[SCHEDULE_TOPIC, AUTO_CREATE_TOPIC_KEY_TOPIC];

/// DELETE_TOPIC_IN_BROKER (215): the topic leaves the table (shard 0 writes, every shard's copy
/// follows), every shard forgets its consumer offsets and deletes its ConsumeQueues of the
/// topic (files and directories), then the answer goes. The CommitLog records stay until
/// retention removes their segments; the name servers learn of the deletion from
/// DELETE_TOPIC_IN_NAMESRV, as with RocketMQ (mqadmin deleteTopic sends both).
pub async fn delete_topic(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: TopicRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    match shard
        .call(processor, 0, Call::DeleteTopic(header.topic.clone()))
        .await
    {
        CallReply::Done(Ok(())) => Ok(request.success().into()),
        CallReply::Done(Err(failure)) => Err(failure),
        _ => Err(Failure::new(
            response_code::SERVICE_NOT_AVAILABLE,
            "the topic table's shard is not available",
        )),
    }
}

/// Shard 0's side of a topic deletion: table, every shard's copy and offsets, `topics.json`,
/// then every shard's ConsumeQueues of the topic.
pub async fn delete_topic_here(processor: &BrokerProcessor, topic: &str) -> Result<(), Failure> {
    let shard = &processor.shard;
    assert_eq!(shard.id, 0, "shard 0 writes the topic table");
    if UNDELETABLE_TOPICS.contains(&topic) {
        return Err(Failure::system(format!(
            "topic[{topic}] is the broker's own and can not be deleted"
        )));
    }
    // The name becomes a directory name below: nothing but a valid topic name goes there.
    validate_topic_name(topic)?;
    // As Java, the queues go whether or not the table still holds the topic: a cluster-wide
    // delete reaches every shard-broker, and the first one removed the topic for all.
    remove_from_table(processor, topic).await?;
    for to in 0..shard.count {
        let call = Call::DeleteTopicQueues(topic.to_owned());
        match shard.call(processor, to, call).await {
            CallReply::Done(result) => result?,
            _ => {
                return Err(Failure::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("shard {to} is not available to delete its queues of {topic}"),
                ))
            }
        }
    }
    Ok(())
}

/// Takes `topic` out of the table (every shard's copy, their offsets, `topics.json`); deleting
/// what is not there succeeds.
async fn remove_from_table(processor: &BrokerProcessor, topic: &str) -> Result<(), Failure> {
    let shard = &processor.shard;
    if !shard.topics.borrow_mut().remove(topic, runtime::now_ms()) {
        return Ok(());
    }
    shard.offsets.borrow_mut().remove_topic(topic);
    let name = topic.to_owned();
    shard
        .broadcast(|| MeshMessage::TopicDeleted(name.clone()))
        .await;
    info!(topic, "topic deleted");
    let version = shard.topics_changed.get() + 1;
    shard.topics_changed.advance(version);
    shard.topics_persisted.wait_for(version).await;
    if let Err(error) = &*shard.topics_persist_result.borrow() {
        return Err(Failure::system(format!("persisting topics: {error}")));
    }
    Ok(())
}

/// GET_ALL_TOPIC_CONFIG extension field: `true` asks for the whole table, not the shard's
/// share.
pub const WHOLE_TABLE_KEY: &str = "wholeTable";

/// Shard 0 of a slave: takes the master's topics (those that differ), tells the other shards,
/// and lets the persister and registrar cover them. Not waited for: the next sync retries.
pub async fn apply_synced_topics(shard: &crate::shard::Shard, topics: Vec<TopicConfig>) -> usize {
    assert_eq!(shard.id, 0, "shard 0 writes the topic table");
    let mut changed = Vec::new();
    for config in topics {
        if shard.topics.borrow().get(&config.topic_name) == Some(&config) {
            continue;
        }
        if let Err(failure) = shard.topics.borrow().room_for(&config) {
            warn!(topic = %config.topic_name, remark = %failure.remark, "synced topic not taken");
            continue;
        }
        if shard
            .topics
            .borrow_mut()
            .upsert(config.clone(), runtime::now_ms())
        {
            changed.push(config);
        }
    }
    for config in &changed {
        shard.topic_deltas.borrow_mut().push(config.clone());
        shard
            .broadcast(|| MeshMessage::TopicChanged(config.clone()))
            .await;
    }
    if !changed.is_empty() {
        shard.topics_changed.advance(shard.topics_changed.get() + 1);
    }
    changed.len()
}
