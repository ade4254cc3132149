//! DELETE_EXPIRED_COMMITLOG (329) and CLEAN_EXPIRED_CONSUMEQUEUE (306): a retention pass now, on
//! every shard of the broker, deleting the expired CommitLog segments (`fileReservedTime`)
//! whatever `deleteWhen` says, and the ConsumeQueue and index files below the new log start,
//! as Java's `executeDeleteFilesManually` / `cleanExpiredConsumerQueue` do.
//!
//! CLEAN_UNUSED_TOPIC (316): every shard of the broker deletes its ConsumeQueues of topics
//! its copy of the topic table no longer holds, system topics aside (Java's
//! `cleanUnusedTopic`): what a crash can leave behind a deletion. A deleted topic's queues
//! (DELETE_TOPIC_IN_BROKER) go the same way, on every shard.

use thruster_protocol::{response_code, RemotingCommand};
use tracing::info;

use super::{BrokerProcessor, Handled};
use crate::meta::topic_config::is_system_topic;
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};

/// This shard's side.
pub async fn delete_expired_here(shard: &Shard) -> Result<(), Failure> {
    let before = shard.store.commit_log_min_offset();
    shard
        .store
        .delete_expired_now(runtime::now_ms())
        .await
        .map_err(|e| Failure::system(format!("deleting expired files: {e}")))?;
    info!(
        shard = shard.id,
        before,
        after = shard.store.commit_log_min_offset(),
        "expired files deleted on request"
    );
    Ok(())
}

pub async fn delete_expired(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    on_broker_shards(processor, || Call::DeleteExpiredFiles).await?;
    Ok(request.success().into())
}

/// Runs `call` on every shard of this broker, one after the other.
async fn on_broker_shards(
    processor: &BrokerProcessor,
    call: impl Fn() -> Call,
) -> Result<(), Failure> {
    let shard = &processor.shard;
    for to in shard.broker_shards() {
        match shard.call(processor, to, call()).await {
            CallReply::Done(Ok(())) => {}
            CallReply::Done(Err(failure)) => return Err(failure),
            _ => {
                return Err(Failure::new(
                    response_code::SERVICE_NOT_AVAILABLE,
                    format!("shard {to} is not available"),
                ))
            }
        }
    }
    Ok(())
}

/// This shard's ConsumeQueues of a deleted topic (and its stats items).
pub async fn delete_topic_queues_here(shard: &Shard, topic: &str) -> Result<(), Failure> {
    shard.meter.borrow_mut().forget_topic(topic);
    let queues = shard
        .store
        .delete_topic(topic)
        .await
        .map_err(|e| Failure::system(format!("deleting the queues of {topic}: {e}")))?;
    info!(
        shard = shard.id,
        topic, queues, "topic's consume queues deleted"
    );
    Ok(())
}

pub async fn clean_unused_topics(
    processor: &BrokerProcessor,
    request: &RemotingCommand,
) -> Handled {
    on_broker_shards(processor, || Call::CleanUnusedTopics).await?;
    Ok(request.success().into())
}

/// This shard's side of CLEAN_UNUSED_TOPIC.
pub async fn clean_unused_topics_here(shard: &Shard) -> Result<(), Failure> {
    let known = |topic: &str| shard.topics.borrow().get(topic).is_some();
    let removed = shard
        .store
        .delete_topics_except(|topic| known(topic) || is_system_topic(topic))
        .await
        .map_err(|e| Failure::system(format!("deleting unused topics' queues: {e}")))?;
    if !removed.is_empty() {
        info!(shard = shard.id, topics = ?removed, "unused topics' consume queues deleted");
    }
    Ok(())
}
