//! A slave shard's copy of its master's metadata, every `haSyncMetadataInterval` (RocketMQ's
//! SlaveSynchronize, 10 s): shard 0 takes the topic table (the whole one: it computes each
//! shard's share itself) and the subscription groups, and every shard its own consumer offsets and delay-level progress
//! from its master shard (offsets belong to the shard that owns the queue). Offsets the master
//! has replace the slave's; those only the slave has (committed while the master was down) are
//! kept, as RocketMQ's `putAll` does.

use std::rc::Rc;
use std::time::Duration;

use thruster_protocol::body::{
    decode_lenient, split_topic_group, ConsumerOffsetSerializeWrapper, DelayOffsetSerializeWrapper,
    SubscriptionGroupConfig, SubscriptionGroupWrapper, TopicConfigSerializeWrapper,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{debug, warn};

use crate::meta::topic_config::SCHEDULE_TOPIC;
use crate::processor::admin::{apply_synced_topics, WHOLE_TABLE_KEY};
use crate::processor::schedule::SCHEDULE_PROGRESS_GROUP;
use crate::remoting::client::RemotingClient;
use crate::runtime;
use crate::shard::{MeshMessage, Shard};

/// The sync loop of one slave shard, until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let state = shard.ha.slave().expect("only slaves sync metadata");
    let stop = shard.tasks.stop_signal();
    let interval = Duration::from_millis(shard.config.ha_sync_metadata_interval_ms.max(100));
    let mut client: Option<RemotingClient> = None;
    loop {
        if let Some(master) = state.master().broker {
            if client.as_ref().is_none_or(|c| c.addr() != master) {
                client = None;
            }
            match sync_once(&shard, &mut client, master).await {
                Ok(()) => debug!(shard = shard.id, %master, "metadata synced"),
                Err(error) => {
                    warn!(shard = shard.id, %master, %error, "metadata sync failed");
                    client = None;
                }
            }
        }
        let (seen, wanted) = (state.master_changed.get(), state.sync_wanted.get());
        let changed = async {
            state.master_changed.wait_for(seen + 1).await;
        };
        let asked = async {
            state.sync_wanted.wait_for(wanted + 1).await;
        };
        let wake = futures_lite::future::or(changed, asked);
        runtime::timeout(interval, futures_lite::future::or(wake, stop.wait())).await;
        if stop.is_set() {
            return;
        }
    }
}

async fn sync_once(
    shard: &Shard,
    client: &mut Option<RemotingClient>,
    master: std::net::SocketAddr,
) -> Result<(), String> {
    let timeout = Duration::from_millis(shard.config.register_broker_timeout_ms);
    if client.is_none() {
        *client = Some(
            RemotingClient::connect(master, timeout)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let client = client.as_mut().expect("connected above");
    if shard.id == 0 {
        let mut request = RemotingCommand::bare_request(rc::GET_ALL_TOPIC_CONFIG);
        request.ext_fields.insert(WHOLE_TABLE_KEY, "true");
        let topics: TopicConfigSerializeWrapper = ask(client, request, timeout, "topics").await?;
        apply_synced_topics(shard, topics.topic_config_table.into_values().collect()).await;
        let request = RemotingCommand::bare_request(rc::GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
        let groups: SubscriptionGroupWrapper = ask(client, request, timeout, "groups").await?;
        apply_synced_groups(shard, groups.subscription_group_table.into_values()).await;
    }
    let request = RemotingCommand::bare_request(rc::GET_ALL_CONSUMER_OFFSET);
    let offsets: ConsumerOffsetSerializeWrapper = ask(client, request, timeout, "offsets").await?;
    let request = RemotingCommand::bare_request(rc::GET_ALL_DELAY_OFFSET);
    let delays: DelayOffsetSerializeWrapper =
        ask(client, request, timeout, "delay offsets").await?;
    let mut table = shard.offsets.borrow_mut();
    for (key, queues) in &offsets.offset_table {
        let Some((topic, group)) = split_topic_group(key) else {
            continue;
        };
        for (&queue_id, &offset) in queues {
            if let Err(full) = table.commit(group, topic, queue_id, offset) {
                warn!(shard = shard.id, %full, "synced offset not taken");
            }
        }
    }
    for (&level, &offset) in &delays.offset_table {
        table.commit_internal(SCHEDULE_PROGRESS_GROUP, SCHEDULE_TOPIC, level - 1, offset);
    }
    Ok(())
}

/// Shard 0 of a slave: takes the master's subscription groups (those that differ), tells the
/// other shards and lets the persister write them.
async fn apply_synced_groups(shard: &Shard, groups: impl Iterator<Item = SubscriptionGroupConfig>) {
    let mut changed = Vec::new();
    for config in groups {
        if shard.groups.borrow().get(&config.group_name) == Some(&config) {
            continue;
        }
        if let Err(failure) = shard.groups.borrow().room_for(&config) {
            warn!(group = %config.group_name, remark = %failure.remark, "synced group not taken");
            continue;
        }
        if shard
            .groups
            .borrow_mut()
            .upsert(config.clone(), runtime::now_ms())
        {
            changed.push(config);
        }
    }
    for config in &changed {
        shard
            .broadcast(|| MeshMessage::GroupChanged {
                name: config.group_name.clone(),
                config: Some(config.clone()),
            })
            .await;
    }
    if !changed.is_empty() {
        shard.groups_changed.advance(shard.groups_changed.get() + 1);
    }
}

async fn ask<T: serde::de::DeserializeOwned>(
    client: &mut RemotingClient,
    request: RemotingCommand,
    timeout: Duration,
    what: &'static str,
) -> Result<T, String> {
    let response = client
        .invoke(request, timeout)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if response.code != response_code::SUCCESS {
        return Err(format!(
            "{what}: code {} {}",
            response.code,
            response.remark.unwrap_or_default()
        ));
    }
    decode_lenient(what, &response.body).map_err(|e| e.to_string())
}
