//! Subscription groups: UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200), GET_ALL_SUBSCRIPTIONGROUP_CONFIG
//! (201), DELETE_SUBSCRIPTIONGROUP (207), GET_SUBSCRIPTIONGROUP_CONFIG (352), the lookup pulls,
//! heartbeats and send-backs make, and shard 0's side: the only writer, which persists
//! `config/subscriptionGroup.json` and tells every shard (`MeshMessage::GroupChanged`).

use std::rc::Rc;

use thruster_protocol::body::{self, decode_lenient, SubscriptionGroupConfig};
use thruster_protocol::header::admin::GroupRequestHeader;
use thruster_protocol::{response_code, RemotingCommand};
use tracing::info;

use super::{BrokerProcessor, Handled, PersistedTable};
use crate::meta::subscription_group::{groups_path, is_system_group};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, MeshMessage, OffsetAdmin, Shard};

/// The config that governs `group` on this shard (its copy of the table), or
/// SUBSCRIPTION_GROUP_NOT_EXIST when the group is unknown and `autoCreateSubscriptionGroup` is
/// off, as the Java broker answers a pull or send-back of such a group.
pub fn group_config(shard: &Shard, group: &str) -> Result<SubscriptionGroupConfig, Failure> {
    shard
        .groups
        .borrow()
        .effective(group, shard.live.get().auto_create_subscription_group)
        .ok_or_else(|| {
            Failure::new(
                response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group [{group}] does not exist, create it first (updateSubGroup) or set autoCreateSubscriptionGroup=true"),
            )
        })
}

/// What a heartbeat does for each consumer group (Java `findSubscriptionGroupConfig`): the
/// stored config; else, if groups are created on demand (or it is a system group), the group
/// is created with the defaults on shard 0 and stored; else `None`.
pub async fn find_or_create(
    processor: &BrokerProcessor,
    group: &str,
) -> Result<Option<SubscriptionGroupConfig>, Failure> {
    let shard = &processor.shard;
    if let Some(config) = shard.groups.borrow().get(group) {
        return Ok(Some(config.clone()));
    }
    if !shard.live.get().auto_create_subscription_group && !is_system_group(group) {
        return Ok(None);
    }
    let call = Call::UpsertGroup {
        config: SubscriptionGroupConfig::named(group),
        if_absent: true,
    };
    upsert_on_shard_zero(processor, call).await
}

async fn upsert_on_shard_zero(
    processor: &BrokerProcessor,
    call: Call,
) -> Result<Option<SubscriptionGroupConfig>, Failure> {
    let shard = &processor.shard;
    match shard.call(processor, 0, call).await {
        CallReply::Group(Ok(stored)) => {
            // This shard's copy is current at once (the broadcast may still be on its way).
            if let Some(config) = &stored {
                shard
                    .groups
                    .borrow_mut()
                    .upsert(config.clone(), runtime::now_ms());
            }
            Ok(stored)
        }
        CallReply::Group(Err(failure)) => Err(failure),
        _ => Err(Failure::new(
            response_code::SERVICE_NOT_AVAILABLE,
            "the subscription group table's shard is not available",
        )),
    }
}

fn persisted_table(shard: &Shard) -> PersistedTable<'_> {
    PersistedTable {
        what: "subscription group table",
        path: groups_path(&shard.config),
        changed: &shard.groups_changed,
        persisted: &shard.groups_persisted,
        result: &shard.groups_persist_result,
    }
}

/// Shard 0: stores `config` (or, with `if_absent`, keeps the group that exists), tells every
/// shard, and answers once the table is on disk with it.
pub async fn upsert_here(
    processor: &BrokerProcessor,
    config: SubscriptionGroupConfig,
    if_absent: bool,
) -> Result<Option<SubscriptionGroupConfig>, Failure> {
    let shard = &processor.shard;
    assert_eq!(shard.id, 0, "shard 0 writes the subscription group table");
    if if_absent {
        if let Some(existing) = shard.groups.borrow().get(&config.group_name) {
            return Ok(Some(existing.clone()));
        }
    }
    shard.groups.borrow().room_for(&config)?;
    let changed = shard
        .groups
        .borrow_mut()
        .upsert(config.clone(), runtime::now_ms());
    if !changed {
        return Ok(Some(config));
    }
    info!(group = %config.group_name, ?config, auto_created = if_absent, "subscription group stored");
    announce(processor, &config.group_name, Some(config.clone())).await;
    persisted_table(shard).changed_and_persisted().await?;
    Ok(Some(config))
}

/// Shard 0: deletes a group, tells every shard, waits for the write.
pub async fn delete_here(
    processor: &BrokerProcessor,
    group: &str,
) -> Result<Option<SubscriptionGroupConfig>, Failure> {
    let shard = &processor.shard;
    assert_eq!(shard.id, 0, "shard 0 writes the subscription group table");
    if !shard.groups.borrow_mut().remove(group, runtime::now_ms()) {
        tracing::warn!(group, "delete subscription group: no such group");
        return Ok(None);
    }
    info!(group, "subscription group deleted");
    announce(processor, group, None).await;
    persisted_table(shard).changed_and_persisted().await?;
    Ok(None)
}

/// Tells every shard, and returns once each has the change.
async fn announce(
    processor: &BrokerProcessor,
    name: &str,
    config: Option<SubscriptionGroupConfig>,
) {
    processor
        .shard
        .broadcast_applied(processor, || MeshMessage::GroupChanged {
            name: name.to_owned(),
            config: config.clone(),
        })
        .await;
}

/// Shard 0, for the broker's life: writes `config/subscriptionGroup.json` whenever the table
/// changed (one write covering every change made before it began).
pub async fn persist_groups(shard: Rc<Shard>) {
    assert_eq!(shard.id, 0, "shard 0 writes the subscription group table");
    persisted_table(&shard)
        .persist_on_change(&shard, || {
            serde_json::to_vec_pretty(&shard.groups.borrow().wrapper())
        })
        .await;
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200): the body is a `SubscriptionGroupConfig`.
pub async fn update_and_create(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let config: SubscriptionGroupConfig = decode_lenient("subscription group", &request.body)?;
    let call = Call::UpsertGroup {
        config,
        if_absent: false,
    };
    upsert_on_shard_zero(processor, call).await?;
    Ok(request.success().into())
}

/// DELETE_SUBSCRIPTIONGROUP (207): `groupName`, and with `removeOffset` (4.9) or `cleanOffset`
/// (5.x) the group's committed offsets on every shard too.
pub async fn delete(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GroupRequestHeader = request.decode_header()?;
    let shard = &processor.shard;
    match shard
        .call(processor, 0, Call::DeleteGroup(header.group_name.clone()))
        .await
    {
        CallReply::Group(Ok(_)) => {
            shard
                .groups
                .borrow_mut()
                .remove(&header.group_name, runtime::now_ms());
        }
        CallReply::Group(Err(failure)) => return Err(failure),
        _ => {
            return Err(Failure::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "the subscription group table's shard is not available",
            ))
        }
    }
    if header.remove_offset.unwrap_or(false) || header.clean_offset.unwrap_or(false) {
        for to in 0..shard.count {
            let call = Call::Offsets(OffsetAdmin::RemoveGroup(header.group_name.clone()));
            if !matches!(
                shard.call(processor, to, call).await,
                CallReply::Done(Ok(()))
            ) {
                return Err(Failure::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("shard {to} is not available to remove the group's offsets"),
                ));
            }
        }
    }
    Ok(request.success().into())
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201): the whole table (`SubscriptionGroupWrapper`), from
/// this shard's copy.
pub fn all(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let wrapper = processor.shard.groups.borrow().wrapper();
    Ok(request.success().with_body(body::encode(&wrapper)).into())
}

/// GET_SUBSCRIPTIONGROUP_CONFIG (352): one group's config, SUBSCRIPTION_GROUP_NOT_EXIST if the
/// broker has none stored.
pub fn one(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: GroupRequestHeader = request.decode_header()?;
    let config = processor
        .shard
        .groups
        .borrow()
        .get(&header.group_name)
        .cloned()
        .ok_or_else(|| {
            Failure::new(
                response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group [{}] does not exist", header.group_name),
            )
        })?;
    Ok(request.success().with_body(body::encode(&config)).into())
}
