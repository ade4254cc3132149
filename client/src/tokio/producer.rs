//! The producer: sync (`send(..).await`), async (`send_async`, a spawned task), one-way and
//! batch sends; queues round-robin with failover to another broker on error, or chosen by a
//! selector / sharding key for ordered messages. Request-reply: `request` sends a message and
//! waits for the reply a responder makes with `reply`.
//!
//! A producer that must be reachable by brokers (for replies, or transaction checks) registers
//! its group with them (HEART_BEAT) when it first uses them, then every
//! `heartbeat_interval`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::instance::{expect_success, ClientConfig, ClientInstance};
use crate::core::error::{ClientError, ClientResult};
use crate::core::message::{Message, MessageExt};
use crate::core::reply::{pushed_reply, reply_message, request_message};
use crate::core::requests::{
    batch_request, parse_send_response, send_request, send_retryable, SendResult, AUTO_CREATE_TOPIC,
};
use crate::core::route::PublishTargets as Targets;
use crate::protocol::body;
use crate::protocol::body::heartbeat::{HeartbeatData, MessageQueue, ProducerData};
use crate::protocol::header::client::UnregisterClientRequestHeader;
use crate::protocol::header::EmptyHeader;
use crate::protocol::message::{java_string_hash, property};
use crate::protocol::{request_code as rc, RemotingCommand};

/// Requests one producer waits replies for at once; more are refused (each holds a waiter).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64 * 1024;

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
    /// Brokers the group is registered with (heartbeats go there).
    registered: Mutex<BTreeSet<SocketAddr>>,
    /// Requests waiting for their reply, by correlation id.
    waiting_replies: Mutex<HashMap<String, oneshot::Sender<MessageExt>>>,
    /// Heartbeats and the reply listener, started on first use, ended by `shutdown`.
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// Heartbeats every registered broker each `interval` while the producer exists.
async fn heartbeat_loop(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let brokers: Vec<SocketAddr> = inner
            .registered
            .lock()
            .expect("registered")
            .iter()
            .copied()
            .collect();
        for addr in brokers {
            if let Err(error) = inner.heartbeat(addr).await {
                debug!(%addr, %error, "producer heartbeat failed");
            }
        }
    }
}

impl Inner {
    async fn heartbeat(&self, addr: SocketAddr) -> ClientResult<()> {
        let data = HeartbeatData {
            client_id: self.instance.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: self.config.group.clone(),
            }],
            ..HeartbeatData::default()
        };
        let request = RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {})
            .with_body(body::encode(&data));
        let timeout = self.config.client.request_timeout;
        let response = self.instance.invoke(addr, request, timeout).await?;
        expect_success(addr, response).map(|_| ())
    }

    /// A reply the broker pushed: to the request waiting for it (late ones are dropped).
    fn reply_arrived(&self, addr: SocketAddr, request: &RemotingCommand) {
        let reply = match pushed_reply(addr, request) {
            Ok(reply) => reply,
            Err(error) => {
                warn!(%addr, %error, "unreadable reply");
                return;
            }
        };
        let Some(correlation_id) = reply.property(property::CORRELATION_ID) else {
            return;
        };
        let waiter = self
            .waiting_replies
            .lock()
            .expect("waiting replies")
            .remove(correlation_id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => debug!(correlation_id, "reply to no waiting request dropped"),
        }
    }
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
                registered: Mutex::new(BTreeSet::new()),
                waiting_replies: Mutex::new(HashMap::new()),
                tasks: Mutex::new(None),
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

    /// Sends `message` as a request and waits up to `timeout` for its reply (RocketMQ's
    /// `request`): the responder answers with [`Producer::reply`], the broker pushes the reply
    /// to this client.
    pub async fn request(&self, message: Message, timeout: Duration) -> ClientResult<MessageExt> {
        self.start_background();
        self.register_with_topic(&message.topic).await;
        let correlation_id = self.inner.instance.ids.next();
        let timeout_ms = timeout.as_millis() as u64;
        let request = request_message(
            message,
            &correlation_id,
            &self.inner.instance.client_id,
            timeout_ms,
        );
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.inner.waiting_replies.lock().expect("waiting replies");
            if waiting.len() >= REQUESTS_IN_FLIGHT_MAX {
                return Err(ClientError::InvalidArgument(format!(
                    "{REQUESTS_IN_FLIGHT_MAX} requests already wait for replies"
                )));
            }
            waiting.insert(correlation_id.clone(), tx);
        }
        let outcome = tokio::time::timeout(timeout, async {
            self.send(request).await?;
            rx.await.map_err(|_| ClientError::RequestTimeout {
                correlation_id: correlation_id.clone(),
                timeout_ms,
            })
        })
        .await;
        self.inner
            .waiting_replies
            .lock()
            .expect("waiting replies")
            .remove(&correlation_id);
        outcome.unwrap_or(Err(ClientError::RequestTimeout {
            correlation_id,
            timeout_ms,
        }))
    }

    /// Answers `request` (a message received from [`Producer::request`]'s sender) with
    /// `body`: the broker pushes it to the requester.
    pub async fn reply(
        &self,
        request: &MessageExt,
        body: impl Into<bytes::Bytes>,
    ) -> ClientResult<SendResult> {
        self.send(reply_message(request, body)?).await
    }

    /// Registers the group with every broker of `topic`'s route not registered with yet.
    pub(crate) async fn register_with_topic(&self, topic: &str) {
        let Ok(route) = self.inner.instance.route(topic).await else {
            return;
        };
        for addr in route.masters.values().filter_map(|a| a.parse().ok()) {
            self.register_with(addr).await;
        }
    }

    /// Registers the group with `addr` (HEART_BEAT) the first time; heartbeats keep it so.
    pub(crate) async fn register_with(&self, addr: SocketAddr) {
        self.start_background();
        let new = self
            .inner
            .registered
            .lock()
            .expect("registered")
            .insert(addr);
        if new {
            if let Err(error) = self.inner.heartbeat(addr).await {
                warn!(%addr, %error, "producer heartbeat failed");
            }
        }
    }

    /// Starts the heartbeats and the reply listener once (they hold the producer weakly).
    fn start_background(&self) {
        let mut tasks = self.inner.tasks.lock().expect("tasks");
        if tasks.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.client.heartbeat_interval;
        let beater = tokio::spawn(heartbeat_loop(weak.clone(), interval));
        let mut replies = self
            .inner
            .instance
            .server_requests(&[rc::PUSH_REPLY_MESSAGE_TO_CLIENT]);
        let listener = tokio::spawn(async move {
            while let Some((addr, request)) = replies.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                inner.reply_arrived(addr, &request);
            }
        });
        *tasks = Some(vec![beater, listener]);
    }

    /// Stops heartbeats and reply delivery and leaves the group on the brokers it registered
    /// with.
    pub async fn shutdown(&self) {
        let tasks = self.inner.tasks.lock().expect("tasks").take();
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
        let brokers = std::mem::take(&mut *self.inner.registered.lock().expect("registered"));
        for addr in brokers {
            let request = RemotingCommand::request(
                rc::UNREGISTER_CLIENT,
                &UnregisterClientRequestHeader {
                    client_id: self.inner.instance.client_id.clone(),
                    producer_group: Some(self.inner.config.group.clone()),
                    consumer_group: None,
                },
            );
            let timeout = self.inner.config.client.request_timeout;
            if let Err(error) = self.inner.instance.invoke(addr, request, timeout).await {
                debug!(%addr, %error, "unregister failed");
            }
        }
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
