//! The producer: sync (`send(..).await`), async (`send_async`, a spawned task), one-way and
//! batch sends; queues round-robin with failover to another broker on error, or chosen by a
//! selector / sharding key for ordered messages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::error::{ClientError, ClientResult};
use super::instance::{ClientConfig, ClientInstance};
use super::message::Message;
use crate::protocol::batch::{encode_entry, BatchEntry};
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::header::send::{SendMessageRequestHeaderV2, SendMessageResponseHeader};
use crate::protocol::message::java_string_hash;
use crate::protocol::{request_code as rc, response_code, RemotingCommand};

/// `defaultTopic` of sends: the broker's auto-create template.
pub const AUTO_CREATE_TOPIC: &str = "TBW102";
/// Queues a topic auto-created by a send gets (RocketMQ producer default).
const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;

/// How the broker stored a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    SendOk,
    /// Stored, but the sync flush did not finish in time.
    FlushDiskTimeout,
    /// Stored, but the slave did not confirm in time.
    FlushSlaveTimeout,
    /// Stored, but no slave was available.
    SlaveNotAvailable,
}

#[derive(Debug, Clone)]
pub struct SendResult {
    pub status: SendStatus,
    /// The producer's id(s) (`UNIQ_KEY`); comma-joined for a batch.
    pub msg_id: String,
    /// The broker's id(s) (store host + CommitLog offset); comma-joined for a batch.
    pub offset_msg_id: String,
    pub queue: MessageQueue,
    /// Queue offset of the (first) message.
    pub queue_offset: i64,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub group: String,
    /// Extra attempts on another queue (preferably another broker) when a send fails
    /// (`retryTimesWhenSendFailed`, 2).
    pub retry_times: u32,
    pub client: ClientConfig,
}

impl ProducerConfig {
    pub fn new(group: impl Into<String>, namesrv_addrs: &str) -> ClientResult<ProducerConfig> {
        Ok(ProducerConfig {
            group: group.into(),
            retry_times: 2,
            client: ClientConfig::new(namesrv_addrs)?,
        })
    }
}

/// A producer; cheap to clone (clones share connections and routes).
///
/// ```no_run
/// # async fn example() -> Result<(), thruster_client::tokio::ClientError> {
/// use thruster_client::tokio::{Message, Producer, ProducerConfig};
///
/// let producer = Producer::new(ProducerConfig::new("my-group", "127.0.0.1:9876")?);
/// let result = producer
///     .send(Message::new("TopicTest", "hello").with_tags("TagA").with_key("order-1"))
///     .await?;
/// println!("stored as {} at {:?}", result.msg_id, result.queue);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProducerConfig,
    instance: Arc<ClientInstance>,
    rotation: AtomicUsize,
}

/// Codes after which Java sends again to another broker (4.9 set plus SYSTEM_BUSY).
fn retryable(code: i32) -> bool {
    matches!(
        code,
        response_code::TOPIC_NOT_EXIST
            | response_code::SERVICE_NOT_AVAILABLE
            | response_code::SYSTEM_ERROR
            | response_code::NO_PERMISSION
            | response_code::NO_BUYER_ID
            | response_code::NOT_IN_CURRENT_UNIT
            | response_code::SYSTEM_BUSY
    )
}

impl Producer {
    pub fn new(config: ProducerConfig) -> Producer {
        let instance = ClientInstance::new(config.client.clone());
        Producer::with_instance(config, instance)
    }

    /// A producer sharing `instance` (its connections and routes) with other clients.
    pub fn with_instance(config: ProducerConfig, instance: Arc<ClientInstance>) -> Producer {
        Producer {
            inner: Arc::new(Inner {
                config,
                instance,
                rotation: AtomicUsize::new(0),
            }),
        }
    }

    pub fn instance(&self) -> &Arc<ClientInstance> {
        &self.inner.instance
    }

    /// Sends and waits for the broker's answer; on failure tries other queues (other brokers
    /// first) up to `retry_times` more times.
    pub async fn send(&self, message: Message) -> ClientResult<SendResult> {
        let attempts = 1 + self.inner.config.retry_times as usize;
        let mut last_error = None;
        let mut failed_broker: Option<String> = None;
        for _ in 0..attempts {
            let targets = self.publish_targets(&message.topic).await?;
            let queue = self.pick_queue(&targets.queues, failed_broker.as_deref());
            let result = match targets.addr_of(&queue) {
                Ok(broker) => {
                    let addr = self.inner.instance.queue_addr(broker, &queue).await;
                    self.send_to(message.clone(), &queue, addr).await
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(result) => return Ok(result),
                Err(error) => {
                    let retry = match &error {
                        ClientError::Broker { code, .. } => retryable(*code),
                        _ => true,
                    };
                    self.inner.instance.invalidate_route(&message.topic);
                    if !retry {
                        return Err(error);
                    }
                    failed_broker = Some(queue.broker_name.clone());
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Sends in the background; the handle resolves to what `send` returns.
    pub fn send_async(
        &self,
        message: Message,
    ) -> tokio::task::JoinHandle<ClientResult<SendResult>> {
        let producer = self.clone();
        tokio::spawn(async move { producer.send(message).await })
    }

    /// Sends without waiting for (or getting) an answer.
    pub async fn send_oneway(&self, message: Message) -> ClientResult<()> {
        let targets = self.publish_targets(&message.topic).await?;
        let queue = self.pick_queue(&targets.queues, None);
        let addr = self.shard_addr(&targets, &queue).await?;
        let (request, _) = self.single_request(&message, &queue);
        self.inner.instance.invoke_oneway(addr, request).await
    }

    /// Sends to the queue `select` picks among the topic's queues (ordered messages).
    pub async fn send_with_selector(
        &self,
        message: Message,
        select: impl FnOnce(&[MessageQueue]) -> usize,
    ) -> ClientResult<SendResult> {
        let targets = self.publish_targets(&message.topic).await?;
        let index = select(&targets.queues);
        let queue = targets.queues.get(index).cloned().ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "selector chose {index} of {} queues",
                targets.queues.len()
            ))
        })?;
        let addr = self.shard_addr(&targets, &queue).await?;
        self.send_to(message, &queue, addr).await
    }

    /// The address for `queue`: its broker, or the broker's owning shard.
    async fn shard_addr(
        &self,
        targets: &Targets,
        queue: &MessageQueue,
    ) -> ClientResult<SocketAddr> {
        let broker = targets.addr_of(queue)?;
        Ok(self.inner.instance.queue_addr(broker, queue).await)
    }

    /// Sends to the queue of `sharding_key` (Java hash of the key modulo the queue count), so
    /// all messages of a key stay in order in one queue.
    pub async fn send_orderly(
        &self,
        message: Message,
        sharding_key: &str,
    ) -> ClientResult<SendResult> {
        let hash = java_string_hash(sharding_key).unsigned_abs() as usize;
        self.send_with_selector(message, |queues| hash % queues.len())
            .await
    }

    /// Sends several messages of one topic as one batch (one request, consecutive offsets).
    pub async fn send_batch(&self, messages: Vec<Message>) -> ClientResult<SendResult> {
        let Some(first) = messages.first() else {
            return Err(ClientError::InvalidArgument("an empty batch".into()));
        };
        let topic = first.topic.clone();
        if messages
            .iter()
            .any(|m| m.topic != topic || m.delay_level > 0)
        {
            return Err(ClientError::InvalidArgument(
                "a batch is one topic, without delay levels".into(),
            ));
        }
        let targets = self.publish_targets(&topic).await?;
        let queue = self.pick_queue(&targets.queues, None);
        let addr = self.shard_addr(&targets, &queue).await?;
        let mut body = BytesMut::new();
        let mut ids = Vec::with_capacity(messages.len());
        for message in &messages {
            let id = self.inner.instance.ids.next();
            encode_entry(
                &BatchEntry {
                    flag: message.flag,
                    body: message.body.clone(),
                    properties: message.properties_string(&id),
                },
                &mut body,
            );
            ids.push(id);
        }
        let header = self.header(&topic, &queue, 0, String::new(), true);
        let request = RemotingCommand::request(rc::SEND_BATCH_MESSAGE, &header).with_body(body);
        self.finish_send(addr, request, ids.join(","), queue).await
    }

    /// Sends to one given queue, without failover.
    pub async fn send_to_queue(
        &self,
        message: Message,
        queue: &MessageQueue,
    ) -> ClientResult<SendResult> {
        let targets = self.publish_targets(&message.topic).await?;
        let addr = self.shard_addr(&targets, queue).await?;
        self.send_to(message, queue, addr).await
    }

    async fn send_to(
        &self,
        message: Message,
        queue: &MessageQueue,
        addr: SocketAddr,
    ) -> ClientResult<SendResult> {
        let (request, id) = self.single_request(&message, queue);
        self.finish_send(addr, request, id, queue.clone()).await
    }

    async fn finish_send(
        &self,
        addr: SocketAddr,
        request: RemotingCommand,
        msg_id: String,
        queue: MessageQueue,
    ) -> ClientResult<SendResult> {
        let timeout = self.inner.config.client.request_timeout;
        let response = self.inner.instance.invoke(addr, request, timeout).await?;
        let status = match response.code {
            response_code::SUCCESS => SendStatus::SendOk,
            response_code::FLUSH_DISK_TIMEOUT => SendStatus::FlushDiskTimeout,
            response_code::FLUSH_SLAVE_TIMEOUT => SendStatus::FlushSlaveTimeout,
            response_code::SLAVE_NOT_AVAILABLE => SendStatus::SlaveNotAvailable,
            code => {
                return Err(ClientError::Broker {
                    addr,
                    code,
                    remark: response.remark.unwrap_or_default(),
                })
            }
        };
        let header: SendMessageResponseHeader =
            response
                .decode_header()
                .map_err(|e| ClientError::Protocol {
                    addr,
                    reason: e.to_string(),
                })?;
        Ok(SendResult {
            status,
            msg_id,
            offset_msg_id: header.msg_id,
            queue: MessageQueue {
                queue_id: header.queue_id,
                ..queue
            },
            queue_offset: header.queue_offset,
        })
    }

    fn single_request(&self, message: &Message, queue: &MessageQueue) -> (RemotingCommand, String) {
        let id = self.inner.instance.ids.next();
        let header = self.header(
            &message.topic,
            queue,
            message.flag,
            message.properties_string(&id),
            false,
        );
        let request =
            RemotingCommand::request(rc::SEND_MESSAGE_V2, &header).with_body(message.body.clone());
        (request, id)
    }

    fn header(
        &self,
        topic: &str,
        queue: &MessageQueue,
        flag: i32,
        properties: String,
        batch: bool,
    ) -> SendMessageRequestHeaderV2 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        SendMessageRequestHeaderV2 {
            a: self.inner.config.group.clone(),
            b: topic.to_owned(),
            c: AUTO_CREATE_TOPIC.into(),
            d: DEFAULT_TOPIC_QUEUE_NUMS,
            e: queue.queue_id,
            f: 0,
            g: now_ms,
            h: flag,
            i: Some(properties),
            j: Some(0),
            k: Some(false),
            l: None,
            m: batch.then_some(true),
            n: Some(queue.broker_name.clone()),
        }
    }

    /// The topic's queues and their brokers; for a topic not created yet, queues on the
    /// brokers that allow auto-creation (the `TBW102` route): the broker creates the topic on
    /// the first send, as with Java producers.
    async fn publish_targets(&self, topic: &str) -> ClientResult<Targets> {
        if let Ok(route) = self.inner.instance.route(topic).await {
            if !route.publish_queues.is_empty() {
                return Ok(Targets {
                    topic: topic.to_owned(),
                    queues: route.publish_queues,
                    masters: route.masters,
                });
            }
        }
        let template = self.inner.instance.route(AUTO_CREATE_TOPIC).await?;
        let mut queues: Vec<MessageQueue> = Vec::new();
        for broker_name in template.masters.keys() {
            let count = template
                .publish_queues
                .iter()
                .filter(|q| &q.broker_name == broker_name)
                .count()
                .min(DEFAULT_TOPIC_QUEUE_NUMS as usize);
            queues.extend((0..count as i32).map(|queue_id| MessageQueue {
                topic: topic.to_owned(),
                broker_name: broker_name.clone(),
                queue_id,
            }));
        }
        if queues.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
                reason: "no route, and no broker allows auto-creation".into(),
            });
        }
        Ok(Targets {
            topic: topic.to_owned(),
            queues,
            masters: template.masters,
        })
    }

    /// Round-robin, skipping the broker that just failed when another one exists.
    fn pick_queue(&self, queues: &[MessageQueue], avoid_broker: Option<&str>) -> MessageQueue {
        assert!(!queues.is_empty(), "callers pass a non-empty queue list");
        let start = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        if let Some(avoid) = avoid_broker {
            for i in 0..queues.len() {
                let queue = &queues[(start + i) % queues.len()];
                if queue.broker_name != avoid {
                    return queue.clone();
                }
            }
        }
        queues[start % queues.len()].clone()
    }
}

/// Where a topic's messages can go.
struct Targets {
    topic: String,
    queues: Vec<MessageQueue>,
    /// Broker name → master address.
    masters: std::collections::BTreeMap<String, String>,
}

impl Targets {
    fn addr_of(&self, queue: &MessageQueue) -> ClientResult<SocketAddr> {
        let no_route = |reason: String| ClientError::NoRoute {
            topic: self.topic.clone(),
            reason,
        };
        let addr = self
            .masters
            .get(&queue.broker_name)
            .ok_or_else(|| no_route(format!("broker {} has no master", queue.broker_name)))?;
        addr.parse()
            .map_err(|_| no_route(format!("bad broker address {addr}")))
    }
}
