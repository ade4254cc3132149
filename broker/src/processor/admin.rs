//! Topic administration (shard 0 writes the topic table and tells the others) and runtime
//! information.

use std::collections::BTreeMap;
use std::time::Duration;

use thruster_protocol::body::{self, KvTable, TopicConfig};
use thruster_protocol::header::admin::CreateTopicRequestHeader;
use thruster_protocol::{response_code, RemotingCommand};
use tracing::{info, warn};

use super::{BrokerProcessor, Handled};
use crate::meta::topic_config::{topics_path, validate_topic_name, QUEUE_NUMS_MAX};
use crate::meta::write_file_atomically;
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, MeshMessage, ShardStats};
use thruster_protocol::shard::{SHARD_ADDRS_KEY, SHARD_COUNT_KEY};

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
        .broadcast(|| MeshMessage::TopicChanged(announced.clone()))
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
    let stop = shard.tasks.stop_signal();
    loop {
        let persisted = shard.topics_persisted.get();
        futures_lite::future::or(shard.topics_changed.wait_for(persisted + 1), async {
            stop.wait().await;
            0
        })
        .await;
        if shard.topics_changed.get() == persisted {
            return; // stopped, and everything changed is on disk
        }
        let version = shard.topics_changed.get();
        let bytes = {
            let topics = shard.topics.borrow();
            serde_json::to_vec_pretty(&topics.stored_wrapper())
        };
        let path = topics_path(&shard.config);
        let result = match bytes {
            Ok(bytes) => runtime::spawn_blocking(move || write_file_atomically(&path, &bytes))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = &result {
            // The change stays in memory and goes to disk with the next one; its creator is
            // told it failed.
            warn!(%error, version, "persisting the topic table failed");
        }
        *shard.topics_persist_result.borrow_mut() = result;
        shard.topics_persisted.advance(version);
    }
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

/// GET_BROKER_RUNTIME_INFO (28): counters summed over the shards of the broker the client
/// sees (this shard alone with a broker per shard, so a cluster's sums count each once).
pub async fn runtime_info(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let mut total = ShardStats::default();
    let mut table = BTreeMap::new();
    for to in shard.broker_shards() {
        match shard.call(processor, to, Call::Stats).await {
            CallReply::Stats(stats) => {
                total.add(&stats);
                table.insert(
                    format!("commitLogMaxOffset_shard{to}"),
                    stats.commit_log_max_offset.to_string(),
                );
                table.insert(
                    format!("commitLogMinOffset_shard{to}"),
                    stats.commit_log_min_offset.to_string(),
                );
            }
            other => warn!(to, ?other, "no stats from shard"),
        }
    }
    let now_ms = runtime::now_ms();
    let mut put = |k: &str, v: String| {
        table.insert(k.to_owned(), v);
    };
    put("brokerVersionDesc", "V4_9_8".into());
    put(
        "brokerVersion",
        thruster_protocol::codes::version::CURRENT.to_string(),
    );
    put("msgPutTotalTodayNow", total.put_messages.to_string());
    put("msgGetTotalTodayNow", total.get_found.to_string());
    put("getFoundTps", "0".into());
    put("getMissTps", "0".into());
    put("crossShardHops", total.hops_out.to_string());
    put("pullSendfileBytes", total.pull_file_bytes.to_string());
    put("thrusterQueuesWaitedOn", total.queues_waited_on.to_string());
    put("shards", shard.count.to_string());
    // Replication health (brokerRole, masterSlaveDiff, ...): replication pairs shard i with
    // shard i, and each is a broker of its own, so these are this shard's.
    let ha_addr = shard.ha_addrs.get(shard.id).copied().flatten();
    for (key, value) in shard
        .ha
        .runtime_info(shard.store.commit_log_max_offset(), ha_addr)
    {
        put(key, value);
    }
    // Shard-aware clients send each queue's requests to its owner's own port (see
    // thruster_protocol::shard); other clients ignore these keys. With a broker per shard
    // there is nothing to map: every broker name is one shard already.
    if let Some(addrs) = shard
        .shard_addrs
        .get()
        .filter(|_| !shard.config.broker_per_shard)
    {
        put(SHARD_COUNT_KEY, addrs.len().to_string());
        let joined: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        put(SHARD_ADDRS_KEY, joined.join(";"));
    }
    put("bootTimestamp", shard.boot_ms.to_string());
    put("runtime", format!("{} ms", now_ms - shard.boot_ms));
    put("sendThreadPoolQueueSize", "0".into());
    put("sendThreadPoolQueueCapacity", "0".into());
    put("pullThreadPoolQueueSize", "0".into());
    put("pullThreadPoolQueueCapacity", "0".into());
    put("dispatchBehindBytes", "0".into());
    put("pageCacheLockTimeMills", "0".into());
    put("commitLogDiskRatio", "0".into());
    let body = body::encode(&KvTable { table });
    Ok(request.success().with_body(body).into())
}
