//! Broker request handling. `BrokerProcessor` runs on the shard that accepted the connection:
//! it decides where each request is served (here, the queue's owner, shard 0 for the topic
//! table, or every shard) and makes the hop (`dispatch.rs`); the handlers in the other
//! submodules run on the shard that owns what they touch. This file holds what the handlers
//! share (the processor, topic lookup, consumer notifications) and names none of them.

pub mod admin;
pub mod broker_config;
pub mod client_manage;
pub mod consumer_calls;
mod dispatch;
pub mod groups;
pub mod inspect;
pub mod maintenance;
pub mod offsets;
pub mod pull;
pub mod query;
pub mod reply;
pub mod runtime_info;
pub mod schedule;
pub mod send;
pub mod stats_data;
pub mod timer;
pub mod transaction;

use std::rc::Rc;

use thruster_protocol::body::TopicConfig;
use thruster_protocol::codes::LanguageCode;
use thruster_protocol::header::client::NotifyConsumerIdsChangedRequestHeader;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{debug, warn};

use crate::meta::clients::ConnKey;
use crate::meta::topic_config::AUTO_CREATE_TOPIC_KEY_TOPIC;
use crate::meta::write_file_atomically;
use crate::remoting::{Failure, Reply};
use crate::runtime;
use crate::runtime::watermark::Watermark;
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
        if !self.shard.live.get().auto_create_topic_enable
            && template == AUTO_CREATE_TOPIC_KEY_TOPIC
        {
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

/// A table shard 0 writes to a JSON file whenever it changed (topics, subscription groups):
/// `changed` is bumped by every change, `persisted` is the `changed` value the file was last
/// written at and `result` how that write ended. Writers wait for `persisted` to cover their
/// change, so many changes share one write.
pub struct PersistedTable<'a> {
    pub what: &'static str,
    pub path: std::path::PathBuf,
    pub changed: &'a Watermark,
    pub persisted: &'a Watermark,
    pub result: &'a std::cell::RefCell<Result<(), String>>,
}

impl PersistedTable<'_> {
    /// For the broker's life: writes the table whenever it changed, one write at a time, each
    /// covering every change made before it began; at the stop writes what is left and ends.
    pub async fn persist_on_change(
        &self,
        shard: &Shard,
        serialize: impl Fn() -> serde_json::Result<Vec<u8>>,
    ) {
        let stop = shard.tasks.stop_signal();
        loop {
            let persisted = self.persisted.get();
            futures_lite::future::or(self.changed.wait_for(persisted + 1), async {
                stop.wait().await;
                0
            })
            .await;
            if self.changed.get() == persisted {
                return; // stopped, and everything changed is on disk
            }
            let version = self.changed.get();
            let path = self.path.clone();
            let result = match serialize() {
                Ok(bytes) => runtime::spawn_blocking(move || write_file_atomically(&path, &bytes))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = &result {
                // The change stays in memory and goes to disk with the next one; its maker is
                // told it failed.
                warn!(%error, version, table = self.what, "persisting failed");
            }
            *self.result.borrow_mut() = result;
            self.persisted.advance(version);
        }
    }

    /// Marks a change and waits for the write that covers it.
    pub async fn changed_and_persisted(&self) -> Result<(), Failure> {
        let version = self.changed.get() + 1;
        self.changed.advance(version);
        self.persisted.wait_for(version).await;
        match &*self.result.borrow() {
            Ok(()) => Ok(()),
            Err(error) => Err(Failure::system(format!(
                "persisting the {}: {error}",
                self.what
            ))),
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
        // A group's config may turn the hint off (`notifyConsumerIdsChangedEnable`).
        let notify = shard
            .groups
            .borrow()
            .get(group)
            .is_none_or(|config| config.notify_consumer_ids_changed_enable);
        if !notify {
            continue;
        }
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
