//! Broker request handling. `BrokerProcessor` runs on the shard that accepted the connection:
//! it decides where each request is served (here, the queue's owner, shard 0 for the topic
//! table, or every shard) and makes the hop (`dispatch.rs`); the handlers in the other
//! submodules run on the shard that owns what they touch. This file holds what the handlers
//! share (the processor, topic lookup, consumer notifications) and names none of them.

pub mod admin;
pub mod client_manage;
mod dispatch;
pub mod offsets;
pub mod pull;
pub mod query;
pub mod schedule;
pub mod send;
pub mod transaction;

use std::rc::Rc;

use thruster_protocol::body::TopicConfig;
use thruster_protocol::codes::LanguageCode;
use thruster_protocol::header::client::NotifyConsumerIdsChangedRequestHeader;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::debug;

use crate::meta::clients::ConnKey;
use crate::meta::topic_config::AUTO_CREATE_TOPIC_KEY_TOPIC;
use crate::remoting::{Failure, Reply};
use crate::runtime;
use crate::shard::{Call, CallReply, Shard};

pub type Handled = Result<Reply, Failure>;

pub struct BrokerProcessor {
    pub shard: Rc<Shard>,
}

impl BrokerProcessor {
    /// The topic's config from this shard's copy, as this shard's clients see it (its own
    /// queue counts with a broker per shard); TOPIC_NOT_EXIST when it has none.
    pub fn known_topic(&self, topic: &str) -> Result<TopicConfig, Failure> {
        let config = self.shard.topics.borrow().get(topic).cloned();
        config
            .map(|config| self.shard.topic_view(config))
            .ok_or_else(|| {
                Failure::new(
                    response_code::TOPIC_NOT_EXIST,
                    format!("topic[{topic}] not exist, apply first please!"),
                )
            })
    }

    /// The topic's config as this shard's clients see it, auto-creating it from `template`
    /// (shard 0 writes; the reply also updates this shard's copy at once).
    pub async fn topic_or_create(
        &self,
        topic: &str,
        template: &str,
        queue_nums: i32,
    ) -> Result<TopicConfig, Failure> {
        let config = self
            .whole_topic_or_create(topic, template, queue_nums)
            .await?;
        Ok(self.shard.topic_view(config))
    }

    async fn whole_topic_or_create(
        &self,
        topic: &str,
        template: &str,
        queue_nums: i32,
    ) -> Result<TopicConfig, Failure> {
        if let Some(config) = self.shard.topics.borrow().get(topic) {
            return Ok(config.clone());
        }
        if !self.shard.config.auto_create_topic_enable && template == AUTO_CREATE_TOPIC_KEY_TOPIC {
            return Err(Failure::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            ));
        }
        let call = Call::AutoCreateTopic {
            topic: topic.to_owned(),
            template: template.to_owned(),
            queue_nums,
        };
        match self.shard.call(self, 0, call).await {
            CallReply::Topic(Ok(config)) => {
                self.shard
                    .topics
                    .borrow_mut()
                    .upsert(config.clone(), runtime::now_ms());
                Ok(config)
            }
            CallReply::Topic(Err(failure)) => Err(failure),
            _ => Err(Failure::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "the topic table's shard is not available",
            )),
        }
    }
}

/// Queues a request (one-way) on one of this shard's client connections; `false` when the
/// connection is gone or its queue is full.
pub fn send_to_local_connection(shard: &Shard, id: u64, mut command: RemotingCommand) -> bool {
    let Some(outbound) = shard.connections.borrow().get(&id).cloned() else {
        return false;
    };
    command.language = LanguageCode::Java;
    outbound.try_send(command.into()).is_ok()
}

/// Sends a request (one-way) to the client connection `conn`, wherever it is served: here,
/// or through its shard (one hop). `false` when it could not be queued.
pub async fn send_to_connection(
    processor: &BrokerProcessor,
    conn: ConnKey,
    command: RemotingCommand,
) -> bool {
    let shard = &processor.shard;
    if conn.shard == shard.id {
        return send_to_local_connection(shard, conn.id, command);
    }
    let call = Call::ToConnection {
        id: conn.id,
        command,
    };
    matches!(
        shard.call(processor, conn.shard, call).await,
        CallReply::Delivered(true)
    )
}

/// Sends NOTIFY_CONSUMER_IDS_CHANGED (one-way) to this shard's connections in `groups`.
pub fn notify_consumer_ids_changed(shard: &Shard, groups: &[String]) {
    for group in groups {
        let connections = shard.clients.borrow().local_connections(group, shard.id);
        for id in connections {
            let Some(outbound) = shard.connections.borrow().get(&id).cloned() else {
                continue;
            };
            let mut notify = RemotingCommand::request(
                rc::NOTIFY_CONSUMER_IDS_CHANGED,
                &NotifyConsumerIdsChangedRequestHeader {
                    consumer_group: group.clone(),
                },
            )
            .oneway();
            notify.language = LanguageCode::Java;
            if outbound.try_send(notify.into()).is_err() {
                // The connection's queue is full or closed: the client's periodic rebalance
                // (every 20 s) catches up without the hint.
                debug!(group, connection = id, "consumer-ids notification dropped");
            }
        }
    }
}
