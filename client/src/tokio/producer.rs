//! The producer: sync (`send(..).await`), async (`send_async`, a spawned task), one-way and
//! batch sends; queues round-robin with failover to another broker on error, or chosen by a
//! selector / sharding key for ordered messages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::instance::{ClientConfig, ClientInstance};
use crate::core::error::{ClientError, ClientResult};
use crate::core::message::Message;
use crate::core::requests::{
    batch_request, parse_send_response, send_request, send_retryable, SendResult, AUTO_CREATE_TOPIC,
};
use crate::core::route::PublishTargets as Targets;
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::message::java_string_hash;
use crate::protocol::RemotingCommand;

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
            let queue = self.pick_queue(&targets, failed_broker.as_deref());
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
                        ClientError::Broker { code, .. } => send_retryable(*code),
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
        let queue = self.pick_queue(&targets, None);
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
        let targets = self.publish_targets(&topic).await?;
        let queue = self.pick_queue(&targets, None);
        let addr = self.shard_addr(&targets, &queue).await?;
        let ids: Vec<String> = messages
            .iter()
            .map(|_| self.inner.instance.ids.next())
            .collect();
        let request = batch_request(&self.inner.config.group, &messages, &queue, &ids)?;
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
        parse_send_response(addr, response, msg_id, queue)
    }

    fn single_request(&self, message: &Message, queue: &MessageQueue) -> (RemotingCommand, String) {
        let id = self.inner.instance.ids.next();
        let request = send_request(&self.inner.config.group, message, queue, &id);
        (request, id)
    }

    /// The topic's queues and their brokers (or the auto-create template's, for a topic not
    /// created yet).
    async fn publish_targets(&self, topic: &str) -> ClientResult<Targets> {
        if let Ok(route) = self.inner.instance.route(topic).await {
            if let Some(targets) = Targets::from_route(topic, route) {
                return Ok(targets);
            }
        }
        let template = self.inner.instance.route(AUTO_CREATE_TOPIC).await?;
        Targets::from_template(topic, template)
    }

    /// Round-robin, skipping the broker that just failed when another one exists.
    fn pick_queue(&self, targets: &Targets, avoid_broker: Option<&str>) -> MessageQueue {
        targets.pick(
            self.inner.rotation.fetch_add(1, Ordering::Relaxed),
            avoid_broker,
        )
    }
}
