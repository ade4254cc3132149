//! The push consumer: subscribes, takes its share of the queues (clustering: RocketMQ's
//! averaged allocation over the group's sorted client ids; broadcasting: every queue), long-polls
//! each queue, and hands messages to the listener in queue order.
//!
//! Per queue, a puller fills a bounded buffer (`queue_buffer_messages` / `queue_buffer_bytes`:
//! the puller waits when it is full) and a consumer task drains it through the listener; the
//! consumed offset advances only past messages the listener accepted. Offsets are committed
//! every `offset_commit_interval`, when a queue is handed to another member, and at shutdown
//! (clustering: on the broker; broadcasting: in a local file).
//!
//! Orderly (`PushConsumerConfig::orderly`, RocketMQ's `MessageListenerOrderly`; clustering
//! only): a queue is consumed only while this member holds its lock on the broker
//! (LOCK_BATCH_MQ before its worker starts, renewed every `lock_renew_interval`; a worker whose
//! lock was not renewed stops). Each queue's messages go to the listener one at a time, in
//! order; `SuspendCurrentQueueAMoment` retries the same message here after
//! `suspend_current_queue_time`, and once it has been retried `max_reconsume_times` times it
//! goes to the group's dead-letter queue and the queue moves on. A queue handed to another
//! member is stopped after its current message, its offset committed, then unlocked
//! (UNLOCK_BATCH_MQ), so the next holder starts where this one ended; shutdown unlocks all.
//!
//! ```no_run
//! # async fn example() -> Result<(), thruster_client::tokio::ClientError> {
//! use thruster_client::tokio::{ConsumeResult, PushConsumer, PushConsumerConfig};
//!
//! let consumer = PushConsumer::new(PushConsumerConfig::new("my-group", "127.0.0.1:9876")?);
//! consumer.subscribe("TopicTest", "TagA || TagB");
//! consumer
//!     .start(|messages| {
//!         for message in messages {
//!             println!("{} {:?}", message.msg_id, message.body);
//!         }
//!         ConsumeResult::Success
//!     })
//!     .await?;
//! // ... later
//! consumer.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::instance::{ClientConfig, ClientInstance};
use super::pull_consumer::PullConsumer;
use crate::core::allocate::rebalance;
use crate::core::consume_stats::TopicConsumeStats;
use crate::core::error::{ClientError, ClientResult};
use crate::core::message::MessageExt;
use crate::core::requests::{expression_tags, now_ms, PullStatus, PULL_BATCH_SIZE};
use crate::protocol::body::heartbeat::{
    ConsumerData, ConsumerListBody, HeartbeatData, LockBatchRequestBody, LockBatchResponseBody,
    MessageQueue, ProducerData, SubscriptionData,
};
use crate::protocol::body::running_info::{self as running, ConsumerRunningInfo, ProcessQueueInfo};
use crate::protocol::body::{self, decode_lenient};
use crate::protocol::header::admin::ConsumerClientRequestHeader;
use crate::protocol::header::client::{
    ConsumerSendMsgBackRequestHeader, GetConsumerListByGroupRequestHeader,
    UnregisterClientRequestHeader,
};
use crate::protocol::header::EmptyHeader;
use crate::protocol::message::{java_string_hash, property};
use crate::protocol::{request_code as rc, response_code, RemotingCommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageModel {
    Clustering,
    Broadcasting,
}

/// Where a queue starts when the group has no offset for it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFromWhere {
    LastOffset,
    FirstOffset,
}

/// What the listener says of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    Success,
    /// Deliver the batch again later. Clustering: the messages go to the broker's retry topic
    /// (CONSUMER_SEND_MSG_BACK: growing delays, the dead-letter topic after
    /// `max_reconsume_times`); if the broker refuses, and in broadcasting, they are retried
    /// here after `reconsume_delay`, up to `max_reconsume_times` times.
    ReconsumeLater,
    /// Orderly: stop this queue for `suspend_current_queue_time` and deliver the same message
    /// again (RocketMQ's `SUSPEND_CURRENT_QUEUE_A_MOMENT`); a concurrent consumer treats it as
    /// `ReconsumeLater`.
    SuspendCurrentQueueAMoment,
}

#[derive(Debug, Clone)]
pub struct PushConsumerConfig {
    pub group: String,
    pub client: ClientConfig,
    pub model: MessageModel,
    pub consume_from: ConsumeFromWhere,
    /// Messages per pull.
    pub pull_batch_size: i32,
    /// Long-poll hold asked of the broker.
    pub suspend: Duration,
    /// Per-queue buffer limits (RocketMQ: 1000 messages, 100 MiB).
    pub queue_buffer_messages: u32,
    pub queue_buffer_bytes: u32,
    pub rebalance_interval: Duration,
    pub heartbeat_interval: Duration,
    pub offset_commit_interval: Duration,
    pub reconsume_delay: Duration,
    pub max_reconsume_times: u32,
    /// Broadcasting offsets: `<dir>/<clientId>/<group>/offsets.json`.
    pub local_offset_dir: PathBuf,
    /// Orderly consumption (clustering only): see the module's documentation.
    pub orderly: bool,
    /// Orderly: how long a suspended queue waits before the message is delivered again.
    pub suspend_current_queue_time: Duration,
    /// Orderly: how often the held queue locks are renewed (RocketMQ: 20 s; the broker lets a
    /// lock lapse after 60 s).
    pub lock_renew_interval: Duration,
}

impl PushConsumerConfig {
    pub fn new(group: impl Into<String>, namesrv_addrs: &str) -> ClientResult<PushConsumerConfig> {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        Ok(PushConsumerConfig {
            group: group.into(),
            client: ClientConfig::new(namesrv_addrs)?,
            model: MessageModel::Clustering,
            consume_from: ConsumeFromWhere::LastOffset,
            pull_batch_size: PULL_BATCH_SIZE,
            suspend: Duration::from_secs(15),
            queue_buffer_messages: 1000,
            queue_buffer_bytes: 100 << 20,
            rebalance_interval: Duration::from_secs(20),
            heartbeat_interval: Duration::from_secs(30),
            offset_commit_interval: Duration::from_secs(5),
            reconsume_delay: Duration::from_secs(1),
            max_reconsume_times: 16,
            local_offset_dir: home.join(".rocketmq_offsets"),
            orderly: false,
            suspend_current_queue_time: Duration::from_secs(1),
            lock_renew_interval: Duration::from_secs(20),
        })
    }
}

type Listener = dyn Fn(&[MessageExt]) -> ConsumeResult + Send + Sync;

/// A push consumer; cheap to clone.
#[derive(Clone)]
pub struct PushConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    config: PushConsumerConfig,
    instance: Arc<ClientInstance>,
    pull: PullConsumer,
    subscriptions: Mutex<BTreeMap<String, String>>,
    listener: Mutex<Option<Arc<Listener>>>,
    queues: Mutex<HashMap<MessageQueue, QueueWorker>>,
    stopped: AtomicBool,
    wake: Notify,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Serializes rebalances (the periodic one, notifications, shutdown).
    rebalancing: tokio::sync::Mutex<()>,
    /// When `start` was called, ms since the epoch (running info).
    started_ms: AtomicI64,
    /// Recent pulls and listener calls per topic held (running info's statusTable); one entry
    /// per subscribed topic and the retry topic, each of fixed size.
    stats: Mutex<HashMap<String, TopicConsumeStats>>,
}

struct QueueWorker {
    stop: Arc<AtomicBool>,
    /// Next offset to consume = what to commit.
    consumed: Arc<AtomicI64>,
    committed: i64,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<QueueState>,
}

/// What the running info reports of a queue held (Java's `ProcessQueue` figures).
struct QueueState {
    last_pull_ms: AtomicI64,
    last_consume_ms: AtomicI64,
    last_lock_ms: AtomicI64,
    /// Offset of the last message pulled into the buffer (-1: none yet).
    pulled_max: AtomicI64,
    /// The buffer's budgets: what is taken from them is buffered or being consumed.
    messages_budget: Arc<Semaphore>,
    bytes_budget: Arc<Semaphore>,
}

impl PushConsumer {
    pub fn new(config: PushConsumerConfig) -> PushConsumer {
        let instance = ClientInstance::new(config.client.clone());
        let pull = PullConsumer::with_instance(config.group.clone(), instance.clone());
        PushConsumer {
            inner: Arc::new(Inner {
                config,
                instance,
                pull,
                subscriptions: Mutex::new(BTreeMap::new()),
                listener: Mutex::new(None),
                queues: Mutex::new(HashMap::new()),
                stopped: AtomicBool::new(false),
                wake: Notify::new(),
                background: Mutex::new(Vec::new()),
                rebalancing: tokio::sync::Mutex::new(()),
                started_ms: AtomicI64::new(0),
                stats: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// Subscribes `topic` with a tag expression (`*`, `TagA || TagB`). Call before `start`.
    pub fn subscribe(&self, topic: &str, expression: &str) {
        self.inner
            .subscriptions
            .lock()
            .expect("subscriptions")
            .insert(topic.to_owned(), expression.to_owned());
    }

    /// Registers with the brokers, takes queues and starts delivering to `listener`.
    pub async fn start(
        &self,
        listener: impl Fn(&[MessageExt]) -> ConsumeResult + Send + Sync + 'static,
    ) -> ClientResult<()> {
        if self
            .inner
            .subscriptions
            .lock()
            .expect("subscriptions")
            .is_empty()
        {
            return Err(ClientError::InvalidArgument(
                "subscribe to a topic first".into(),
            ));
        }
        *self.inner.listener.lock().expect("listener") = Some(Arc::new(listener));
        let inner = &self.inner;
        inner.started_ms.store(now_ms(), Ordering::Release);
        inner.heartbeat().await?;
        inner.clone().rebalance().await;
        let mut background = Vec::new();
        // Rebalance every interval and whenever a broker says the group changed.
        let rebalancer = inner.clone();
        background.push(tokio::spawn(async move {
            while !rebalancer.stopped.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(
                    rebalancer.config.rebalance_interval,
                    rebalancer.wake.notified(),
                )
                .await;
                if rebalancer.stopped.load(Ordering::Acquire) {
                    break;
                }
                rebalancer.clone().rebalance().await;
            }
        }));
        let mut requests = inner
            .instance
            .server_requests(&[rc::NOTIFY_CONSUMER_IDS_CHANGED]);
        let notified = inner.clone();
        background.push(tokio::spawn(async move {
            while requests.recv().await.is_some() {
                notified.wake.notify_one();
            }
        }));
        // An operator's questions (mqadmin consumerStatus, getConsumerStatus), forwarded by a
        // broker.
        let mut questions = inner.instance.server_requests(&[
            rc::GET_CONSUMER_RUNNING_INFO,
            rc::GET_CONSUMER_STATUS_FROM_CLIENT,
        ]);
        let answering = inner.clone();
        background.push(tokio::spawn(async move {
            while let Some((addr, command)) = questions.recv().await {
                let response = if command.code == rc::GET_CONSUMER_RUNNING_INFO {
                    answering.answer_running_info(&command)
                } else {
                    answering.answer_consumer_status(&command)
                };
                if let Err(error) = answering.instance.respond(addr, response).await {
                    debug!(%addr, %error, "running info not answered");
                }
            }
        }));
        // An operator's offset reset (mqadmin resetOffsetByTime), told by the brokers.
        let mut resets = inner
            .instance
            .server_requests(&[rc::RESET_CONSUMER_CLIENT_OFFSET]);
        let resetting = inner.clone();
        background.push(tokio::spawn(async move {
            while let Some((_, command)) = resets.recv().await {
                resetting.clone().reset_offsets(&command).await;
            }
        }));
        background.push(
            inner.every(inner.config.heartbeat_interval, |inner| async move {
                if let Err(error) = inner.heartbeat().await {
                    warn!(%error, "heartbeat failed");
                }
            }),
        );
        if inner.is_orderly() {
            background.push(
                inner.every(inner.config.lock_renew_interval, |inner| async move {
                    inner.renew_locks().await;
                }),
            );
        }
        background.push(
            inner.every(inner.config.offset_commit_interval, |inner| async move {
                inner.commit_offsets().await;
            }),
        );
        inner
            .background
            .lock()
            .expect("background")
            .extend(background);
        Ok(())
    }

    /// Queues this consumer holds now.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        let mut queues: Vec<_> = self
            .inner
            .queues
            .lock()
            .expect("queues")
            .keys()
            .cloned()
            .collect();
        queues.sort();
        queues
    }

    /// Stops pulling, lets in-flight batches finish, commits offsets and leaves the group.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::Release);
        inner.wake.notify_one();
        let _guard = inner.rebalancing.lock().await;
        for task in inner.background.lock().expect("background").drain(..) {
            task.abort();
        }
        let workers: Vec<(MessageQueue, QueueWorker)> =
            inner.queues.lock().expect("queues").drain().collect();
        for (queue, worker) in workers {
            inner.stop_worker(&queue, worker).await;
        }
        inner.unregister().await;
    }
}

impl Inner {
    /// Runs `work` every `interval` until the consumer stops.
    fn every<F, Fut>(self: &Arc<Self>, interval: Duration, work: F) -> JoinHandle<()>
    where
        F: Fn(Arc<Inner>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let inner = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if inner.stopped.load(Ordering::Acquire) {
                    break;
                }
                work(inner.clone()).await;
            }
        })
    }

    fn subscriptions(&self) -> BTreeMap<String, String> {
        self.subscriptions.lock().expect("subscriptions").clone()
    }

    fn retry_topic(&self) -> String {
        format!("%RETRY%{}", self.config.group)
    }

    /// Broker addresses of every subscribed topic.
    async fn brokers(&self) -> Vec<std::net::SocketAddr> {
        let mut addrs = Vec::new();
        for topic in self.subscriptions().keys() {
            if let Ok(route) = self.instance.route(topic).await {
                for addr in &route.all_addrs {
                    if let Ok(addr) = addr.parse() {
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
            }
        }
        addrs
    }

    async fn heartbeat(&self) -> ClientResult<()> {
        let now_ms = now_ms();
        let mut subscriptions: Vec<SubscriptionData> = self
            .subscriptions()
            .into_iter()
            .map(|(topic, expression)| subscription(&topic, &expression, now_ms))
            .collect();
        if self.config.model == MessageModel::Clustering {
            subscriptions.push(subscription(&self.retry_topic(), "*", now_ms));
        }
        let data = HeartbeatData {
            client_id: self.instance.client_id.clone(),
            consumer_data_set: vec![ConsumerData {
                group_name: self.config.group.clone(),
                consume_type: "CONSUME_PASSIVELY".into(),
                message_model: match self.config.model {
                    MessageModel::Clustering => "CLUSTERING".into(),
                    MessageModel::Broadcasting => "BROADCASTING".into(),
                },
                consume_from_where: match self.config.consume_from {
                    ConsumeFromWhere::LastOffset => "CONSUME_FROM_LAST_OFFSET".into(),
                    ConsumeFromWhere::FirstOffset => "CONSUME_FROM_FIRST_OFFSET".into(),
                },
                subscription_data_set: subscriptions,
                unit_mode: false,
            }],
            producer_data_set: vec![ProducerData {
                group_name: "CLIENT_INNER_PRODUCER".into(),
            }],
            ..HeartbeatData::default()
        };
        let brokers = self.brokers().await;
        if brokers.is_empty() {
            return Err(ClientError::NoRoute {
                topic: self
                    .subscriptions()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
                reason: "no broker serves the subscribed topics".into(),
            });
        }
        for addr in brokers {
            let request = RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {})
                .with_body(body::encode(&data));
            let response = self
                .instance
                .invoke(addr, request, self.config.client.request_timeout)
                .await?;
            if response.code != response_code::SUCCESS {
                return Err(ClientError::Broker {
                    addr,
                    code: response.code,
                    remark: response.remark.unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    async fn consumer_ids(&self, topic: &str) -> ClientResult<Vec<String>> {
        let route = self.instance.route(topic).await?;
        let Some(addr) = route.readers.values().next().and_then(|a| a.parse().ok()) else {
            return Ok(Vec::new());
        };
        let request = RemotingCommand::request(
            rc::GET_CONSUMER_LIST_BY_GROUP,
            &GetConsumerListByGroupRequestHeader {
                consumer_group: self.config.group.clone(),
            },
        );
        let response = self
            .instance
            .invoke(addr, request, self.config.client.request_timeout)
            .await?;
        if response.code != response_code::SUCCESS {
            return Ok(Vec::new());
        }
        let list: ConsumerListBody =
            decode_lenient("consumer list", &response.body).map_err(|e| ClientError::Protocol {
                addr,
                reason: e.to_string(),
            })?;
        Ok(list.consumer_id_list)
    }

    /// Recomputes this member's queues and starts/stops queue workers to match.
    async fn rebalance(self: Arc<Self>) {
        let _guard = self.rebalancing.lock().await;
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut topics: Vec<(String, String)> = self.subscriptions().into_iter().collect();
        if self.config.model == MessageModel::Clustering {
            topics.push((self.retry_topic(), "*".into()));
        }
        let mut wanted: BTreeMap<MessageQueue, String> = BTreeMap::new();
        for (topic, expression) in topics {
            let queues = match self.instance.refresh_route(&topic).await {
                Ok(route) => route.subscribe_queues,
                Err(error) => {
                    debug!(topic, %error, "no route yet");
                    continue;
                }
            };
            let mine = match self.config.model {
                MessageModel::Broadcasting => queues,
                MessageModel::Clustering => match self.consumer_ids(&topic).await {
                    Ok(ids) => rebalance(&self.instance.client_id, queues, ids),
                    Err(error) => {
                        warn!(topic, %error, "consumer list unavailable, keeping queues");
                        self.queues
                            .lock()
                            .expect("queues")
                            .keys()
                            .filter(|q| q.topic == topic)
                            .cloned()
                            .collect()
                    }
                },
            };
            for queue in mine {
                wanted.insert(queue, expression.clone());
            }
        }
        let removed: Vec<(MessageQueue, QueueWorker)> = {
            let mut queues = self.queues.lock().expect("queues");
            let gone: Vec<MessageQueue> = queues
                .keys()
                .filter(|q| !wanted.contains_key(*q))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|q| queues.remove(&q).map(|w| (q, w)))
                .collect()
        };
        for (queue, worker) in removed {
            self.stop_worker(&queue, worker).await;
        }
        for (queue, expression) in wanted {
            if self.queues.lock().expect("queues").contains_key(&queue) {
                continue;
            }
            if self.is_orderly() && !self.lock_queues(&queue, false).await.contains(&queue) {
                // Another member still holds it (it unlocks once it has stopped): next time.
                debug!(?queue, "queue still locked by another member");
                continue;
            }
            match self.start_offset(&queue).await {
                Ok(offset) => {
                    let worker = self.clone().spawn_worker(queue.clone(), expression, offset);
                    self.queues.lock().expect("queues").insert(queue, worker);
                }
                Err(error) => warn!(?queue, %error, "no start offset; retrying at next rebalance"),
            }
        }
    }

    async fn start_offset(&self, queue: &MessageQueue) -> ClientResult<i64> {
        let stored = match self.config.model {
            MessageModel::Clustering => self.pull.fetch_offset(queue).await?,
            MessageModel::Broadcasting => self.local_offsets().get(&queue_key(queue)).copied(),
        };
        if let Some(offset) = stored.filter(|o| *o >= 0) {
            return Ok(offset);
        }
        match self.config.consume_from {
            ConsumeFromWhere::FirstOffset => Ok(0),
            ConsumeFromWhere::LastOffset if queue.topic.starts_with("%RETRY%") => Ok(0),
            ConsumeFromWhere::LastOffset => self.pull.max_offset(queue).await,
        }
    }

    fn spawn_worker(
        self: Arc<Self>,
        queue: MessageQueue,
        expression: String,
        offset: i64,
    ) -> QueueWorker {
        let stop = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicI64::new(offset));
        let messages_budget = Arc::new(Semaphore::new(self.config.queue_buffer_messages as usize));
        let bytes_budget = Arc::new(Semaphore::new(self.config.queue_buffer_bytes as usize));
        let state = Arc::new(QueueState {
            last_pull_ms: AtomicI64::new(0),
            last_consume_ms: AtomicI64::new(0),
            // An orderly worker starts only once its queue is locked.
            last_lock_ms: AtomicI64::new(if self.is_orderly() { now_ms() } else { 0 }),
            pulled_max: AtomicI64::new(-1),
            messages_budget: messages_budget.clone(),
            bytes_budget: bytes_budget.clone(),
        });
        // Batches in the buffer are bounded by the message budget (each holds at least one).
        let (tx, mut rx) = mpsc::channel::<(Vec<MessageExt>, u32, u32)>(
            self.config.queue_buffer_messages as usize,
        );

        let puller = {
            let inner = self.clone();
            let stop = stop.clone();
            let queue = queue.clone();
            let messages_budget = messages_budget.clone();
            let bytes_budget = bytes_budget.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let mut next = offset;
                while !stop.load(Ordering::Acquire) {
                    let began = Instant::now();
                    let result = inner
                        .pull
                        .pull(
                            &queue,
                            &expression,
                            next,
                            inner.config.pull_batch_size,
                            Some(inner.config.suspend),
                        )
                        .await;
                    let result = match result {
                        Ok(result) => result,
                        Err(error) => {
                            debug!(?queue, %error, "pull failed; backing off");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    };
                    next = result.next_begin_offset;
                    state.last_pull_ms.store(now_ms(), Ordering::Release);
                    if result.status != PullStatus::Found || result.messages.is_empty() {
                        continue;
                    }
                    // As Java, only pulls that found messages count for pullRT / pullTPS.
                    inner.record(&queue.topic, |stats, now| {
                        let messages = result.messages.len() as u64;
                        stats.record_pull(now, elapsed_ms(began), messages)
                    });
                    if let Some(last) = result.messages.last() {
                        state.pulled_max.store(last.queue_offset, Ordering::Release);
                    }
                    // Back-pressure: wait for room in this queue's buffer.
                    let count =
                        (result.messages.len() as u32).min(inner.config.queue_buffer_messages);
                    let bytes: usize = result.messages.iter().map(|m| m.body.len()).sum();
                    let bytes = (bytes as u32).clamp(1, inner.config.queue_buffer_bytes);
                    let (Ok(m), Ok(b)) = (
                        messages_budget.acquire_many(count).await,
                        bytes_budget.acquire_many(bytes).await,
                    ) else {
                        break;
                    };
                    m.forget();
                    b.forget();
                    if tx.send((result.messages, count, bytes)).await.is_err() {
                        break;
                    }
                }
            })
        };
        let consumer = if self.is_orderly() {
            let inner = self.clone();
            let consumed = consumed.clone();
            let stop = stop.clone();
            let queue = queue.clone();
            let state = state.clone();
            tokio::spawn(async move {
                while let Some((batch, count, bytes)) = rx.recv().await {
                    for message in batch {
                        if stop.load(Ordering::Acquire) {
                            return; // stopped after the current message: the rest is not ours
                        }
                        let next = message.queue_offset + 1;
                        inner.consume_orderly(&queue, message, &stop).await;
                        consumed.fetch_max(next, Ordering::AcqRel);
                        state.last_consume_ms.store(now_ms(), Ordering::Release);
                    }
                    messages_budget.add_permits(count as usize);
                    bytes_budget.add_permits(bytes as usize);
                }
            })
        } else {
            let inner = self.clone();
            let consumed = consumed.clone();
            let stop = stop.clone();
            let queue = queue.clone();
            let state = state.clone();
            tokio::spawn(async move {
                while let Some((mut batch, count, bytes)) = rx.recv().await {
                    let listener = inner.listener.lock().expect("listener").clone();
                    let Some(listener) = listener else { break };
                    for message in &mut batch {
                        restore_retry_topic(message);
                    }
                    let mut attempts = 0;
                    loop {
                        let messages = batch.clone();
                        let listener = listener.clone();
                        let began = Instant::now();
                        let result = tokio::task::spawn_blocking(move || listener(&messages))
                            .await
                            .unwrap_or(ConsumeResult::ReconsumeLater);
                        inner.record_consume(&queue.topic, began, batch.len(), result);
                        state.last_consume_ms.store(now_ms(), Ordering::Release);
                        if result == ConsumeResult::Success {
                            break;
                        }
                        // Clustering: hand the batch to the broker's retry topic, as Java's
                        // concurrent consumers do; if the broker refuses, retry locally.
                        if inner.config.model == MessageModel::Clustering
                            && inner.send_back_all(&queue, &batch, 0).await
                        {
                            break;
                        }
                        attempts += 1;
                        if attempts > inner.config.max_reconsume_times
                            || stop.load(Ordering::Acquire)
                        {
                            warn!(
                                first = batch[0].queue_offset,
                                attempts, "batch given up after reconsume attempts"
                            );
                            break;
                        }
                        tokio::time::sleep(inner.config.reconsume_delay).await;
                    }
                    if let Some(last) = batch.last() {
                        consumed.fetch_max(last.queue_offset + 1, Ordering::AcqRel);
                    }
                    messages_budget.add_permits(count as usize);
                    bytes_budget.add_permits(bytes as usize);
                }
            })
        };
        QueueWorker {
            stop,
            consumed,
            committed: offset,
            tasks: vec![puller, consumer],
            state,
        }
    }

    /// Delivers one message of an orderly queue until the listener accepts it, suspending the
    /// queue between attempts; past `max_reconsume_times` retries it goes to the dead-letter
    /// queue (retried here until the broker takes it, unless the queue stops).
    async fn consume_orderly(
        &self,
        queue: &MessageQueue,
        mut message: MessageExt,
        stop: &AtomicBool,
    ) {
        restore_retry_topic(&mut message);
        loop {
            let Some(listener) = self.listener.lock().expect("listener").clone() else {
                return;
            };
            let delivered = message.clone();
            let began = Instant::now();
            let result =
                tokio::task::spawn_blocking(move || listener(std::slice::from_ref(&delivered)))
                    .await
                    .unwrap_or(ConsumeResult::SuspendCurrentQueueAMoment);
            self.record_consume(&queue.topic, began, 1, result);
            if result == ConsumeResult::Success {
                return;
            }
            if message.reconsume_times >= self.config.max_reconsume_times as i32 {
                if self
                    .send_back_all(queue, std::slice::from_ref(&message), -1)
                    .await
                {
                    warn!(
                        offset = message.queue_offset,
                        ?queue,
                        "orderly message sent to the dead-letter queue"
                    );
                    return;
                }
            } else {
                message.reconsume_times += 1;
            }
            if stop.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(self.config.suspend_current_queue_time).await;
        }
    }

    /// CONSUMER_SEND_MSG_BACK for every message of a failed batch (`delay_level` 0: the
    /// broker's growing delays; negative: straight to the dead-letter queue); `true` when the
    /// broker took them all.
    async fn send_back_all(
        &self,
        queue: &MessageQueue,
        batch: &[MessageExt],
        delay_level: i32,
    ) -> bool {
        let Ok(broker) = self
            .instance
            .broker_addr(&queue.topic, &queue.broker_name)
            .await
        else {
            return false;
        };
        for message in batch {
            let request = RemotingCommand::request(
                rc::CONSUMER_SEND_MSG_BACK,
                &ConsumerSendMsgBackRequestHeader {
                    offset: message.commit_log_offset,
                    group: self.config.group.clone(),
                    delay_level,
                    origin_msg_id: Some(message.msg_id.clone()),
                    origin_topic: Some(message.topic.clone()),
                    unit_mode: None,
                    max_reconsume_times: Some(self.config.max_reconsume_times as i32),
                    broker_name: Some(queue.broker_name.clone()),
                },
            );
            match self
                .instance
                .invoke(broker, request, self.config.client.request_timeout)
                .await
            {
                Ok(response) if response.code == response_code::SUCCESS => {}
                _ => return false,
            }
        }
        true
    }

    /// Stops a queue's worker after its current batch and commits what it consumed.
    async fn stop_worker(&self, queue: &MessageQueue, worker: QueueWorker) {
        let offset = halt(worker).await;
        self.commit(queue, offset).await;
        if self.is_orderly() {
            // Only after the commit: the next holder starts where this one ended.
            self.lock_queues(queue, true).await;
        }
    }

    /// RESET_CONSUMER_CLIENT_OFFSET (Java's `resetOffset`): every queue of the table this
    /// member holds stops (what it consumed is not committed), takes the given offset, and
    /// starts again from there; the others get the offset committed for them.
    async fn reset_offsets(self: Arc<Self>, command: &RemotingCommand) {
        use crate::protocol::body::admin::ResetOffsetBody;
        use crate::protocol::header::admin::ResetOffsetRequestHeader;
        let Ok(header) = command.decode_header::<ResetOffsetRequestHeader>() else {
            warn!("offset reset with an undecodable header ignored");
            return;
        };
        if header.group != self.config.group {
            return;
        }
        let body = match ResetOffsetBody::decode(&command.body) {
            Ok(body) => body,
            Err(error) => {
                warn!(%error, "offset reset with an undecodable body ignored");
                return;
            }
        };
        // No rebalance meanwhile: it would restart a queue from its old offset.
        let _rebalancing = self.rebalancing.lock().await;
        for (queue, offset) in body.offset_table {
            if queue.topic != header.topic {
                continue;
            }
            let held = self.queues.lock().expect("queues").remove(&queue);
            let was_held = held.is_some();
            if let Some(worker) = held {
                halt(worker).await;
            }
            self.commit(&queue, offset).await;
            let expression = self.subscriptions().get(&queue.topic).cloned();
            if let (true, Some(expression)) = (was_held, expression) {
                let worker = self.clone().spawn_worker(queue.clone(), expression, offset);
                self.queues
                    .lock()
                    .expect("queues")
                    .insert(queue.clone(), worker);
            }
            debug!(?queue, offset, held = was_held, "offset reset");
        }
    }

    /// Applies `update` to `topic`'s figures at the current time.
    fn record(&self, topic: &str, update: impl FnOnce(&mut TopicConsumeStats, i64)) {
        let mut stats = self.stats.lock().expect("consume stats");
        let entry = match stats.get_mut(topic) {
            Some(entry) => entry,
            None => stats.entry(topic.to_owned()).or_default(),
        };
        update(entry, now_ms());
    }

    /// One listener call of `messages` messages that began at `began`.
    fn record_consume(&self, topic: &str, began: Instant, messages: usize, result: ConsumeResult) {
        let rt_ms = elapsed_ms(began);
        let (ok, failed) = match result {
            ConsumeResult::Success => (messages as u64, 0),
            _ => (0, messages as u64),
        };
        self.record(topic, |stats, now| {
            stats.record_consume(now, rt_ms, ok, failed)
        });
    }

    /// GET_CONSUMER_RUNNING_INFO (Java `ClientRemotingProcessor.getConsumerRunningInfo`).
    fn answer_running_info(&self, request: &RemotingCommand) -> RemotingCommand {
        let header = match request.decode_header::<ConsumerClientRequestHeader>() {
            Ok(header) => header,
            Err(error) => {
                return request.response_to(
                    response_code::SYSTEM_ERROR,
                    Some(format!("running info request header: {error}")),
                )
            }
        };
        if header.consumer_group != self.config.group {
            return request.response_to(
                response_code::SYSTEM_ERROR,
                Some(format!(
                    "The Consumer Group <{}> not exist in this consumer",
                    header.consumer_group
                )),
            );
        }
        let info = self.running_info(header.jstack_enable.unwrap_or(false));
        request
            .response_to(response_code::SUCCESS, None)
            .with_body(info.encode())
    }

    /// GET_CONSUMER_STATUS_FROM_CLIENT (Java `getConsumeStatus`): the next offset of each queue
    /// of the topic this consumer holds; nothing for another group.
    fn answer_consumer_status(&self, request: &RemotingCommand) -> RemotingCommand {
        use crate::protocol::body::admin::GetConsumerStatusBody;
        use crate::protocol::header::admin::TopicGroupRequestHeader;
        let header = match request.decode_header::<TopicGroupRequestHeader>() {
            Ok(header) => header,
            Err(error) => {
                return request.response_to(
                    response_code::SYSTEM_ERROR,
                    Some(format!("consumer status request header: {error}")),
                )
            }
        };
        let mut body = GetConsumerStatusBody::default();
        if header.group == self.config.group {
            let queues = self.queues.lock().expect("queues");
            body.message_queue_table = queues
                .iter()
                .filter(|(queue, _)| queue.topic == header.topic)
                .map(|(queue, worker)| (queue.clone(), worker.consumed.load(Ordering::Acquire)))
                .collect();
        }
        request
            .response_to(response_code::SUCCESS, None)
            .with_body(body.encode())
    }

    /// What this consumer is doing (Java `DefaultMQPushConsumerImpl.consumerRunningInfo` and
    /// `MQClientInstance.consumerRunningInfo`).
    fn running_info(&self, jstack: bool) -> ConsumerRunningInfo {
        let now = now_ms();
        let started_ms = self.started_ms.load(Ordering::Acquire);
        let mut topics: Vec<(String, String)> = self.subscriptions().into_iter().collect();
        if self.config.model == MessageModel::Clustering {
            topics.push((self.retry_topic(), "*".into()));
        }
        // Java's TreeSet orders SubscriptionData by `topic@subString`.
        let mut subscription_set: Vec<SubscriptionData> = topics
            .iter()
            .map(|(topic, expression)| subscription(topic, expression, started_ms))
            .collect();
        subscription_set.sort_by_key(|s| format!("{}@{}", s.topic, s.sub_string));
        let queues = self.queues.lock().expect("queues");
        let mq_table = queues
            .iter()
            .map(|(queue, worker)| (queue.clone(), self.process_queue_info(worker)))
            .collect();
        let mut jstack_text = None;
        if jstack {
            jstack_text = Some(task_dump(&queues));
        }
        drop(queues);
        let stats = self.stats.lock().expect("consume stats");
        let status_table = topics
            .iter()
            .map(|(topic, _)| {
                let status = stats.get(topic).map(|s| s.status(now)).unwrap_or_default();
                (topic.clone(), status)
            })
            .collect();
        drop(stats);
        ConsumerRunningInfo {
            jstack: jstack_text,
            mq_table,
            properties: self.running_properties(started_ms),
            status_table,
            subscription_set,
        }
    }

    fn process_queue_info(&self, worker: &QueueWorker) -> ProcessQueueInfo {
        let state = &worker.state;
        let buffered_messages = (self.config.queue_buffer_messages as usize)
            .saturating_sub(state.messages_budget.available_permits());
        let buffered_bytes = (self.config.queue_buffer_bytes as usize)
            .saturating_sub(state.bytes_budget.available_permits());
        let next = worker.consumed.load(Ordering::Acquire);
        let (min, max) = if buffered_messages > 0 {
            (next, state.pulled_max.load(Ordering::Acquire))
        } else {
            (0, 0)
        };
        ProcessQueueInfo {
            cached_msg_count: buffered_messages as i32,
            cached_msg_max_offset: max,
            cached_msg_min_offset: min,
            cached_msg_size_in_mib: (buffered_bytes >> 20) as i32,
            commit_offset: next,
            droped: worker.stop.load(Ordering::Acquire),
            last_consume_timestamp: state.last_consume_ms.load(Ordering::Acquire),
            last_lock_timestamp: state.last_lock_ms.load(Ordering::Acquire),
            last_pull_timestamp: state.last_pull_ms.load(Ordering::Acquire),
            locked: self.is_orderly(),
            ..ProcessQueueInfo::default()
        }
    }

    /// Java's `MixAll.object2Properties(consumer)` for the settings this consumer has, under
    /// Java's names, and the `PROP_*` keys.
    fn running_properties(&self, started_ms: i64) -> BTreeMap<String, String> {
        let config = &self.config;
        let namesrvs: String = config
            .client
            .namesrv_addrs
            .iter()
            .map(|a| format!("{a};"))
            .collect();
        let model = match config.model {
            MessageModel::Clustering => "CLUSTERING",
            MessageModel::Broadcasting => "BROADCASTING",
        };
        let from = match config.consume_from {
            ConsumeFromWhere::LastOffset => "CONSUME_FROM_LAST_OFFSET",
            ConsumeFromWhere::FirstOffset => "CONSUME_FROM_FIRST_OFFSET",
        };
        let workers = self.queues.lock().expect("queues").len();
        [
            ("consumerGroup", config.group.clone()),
            ("messageModel", model.to_owned()),
            ("consumeFromWhere", from.to_owned()),
            ("pullBatchSize", config.pull_batch_size.to_string()),
            (
                "pullThresholdForQueue",
                config.queue_buffer_messages.to_string(),
            ),
            (
                "pullThresholdSizeForQueue",
                (config.queue_buffer_bytes >> 20).to_string(),
            ),
            ("maxReconsumeTimes", config.max_reconsume_times.to_string()),
            (
                "suspendCurrentQueueTimeMillis",
                config.suspend_current_queue_time.as_millis().to_string(),
            ),
            (
                "persistConsumerOffsetInterval",
                config.offset_commit_interval.as_millis().to_string(),
            ),
            (
                "heartbeatBrokerInterval",
                config.heartbeat_interval.as_millis().to_string(),
            ),
            ("instanceName", config.client.instance_name.clone()),
            ("namesrvAddr", namesrvs.trim_end_matches(';').to_owned()),
            ("unitMode", "false".to_owned()),
            (running::PROP_NAMESERVER_ADDR, namesrvs),
            (running::PROP_CONSUME_TYPE, "CONSUME_PASSIVELY".to_owned()),
            (running::PROP_CONSUME_ORDERLY, self.is_orderly().to_string()),
            // Each held queue's listener calls run one at a time on a task of their own.
            (running::PROP_THREADPOOL_CORE_SIZE, workers.to_string()),
            (
                running::PROP_CONSUMER_START_TIMESTAMP,
                started_ms.to_string(),
            ),
            (running::PROP_CLIENT_VERSION, "V4_9_8".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn is_orderly(&self) -> bool {
        self.config.orderly && self.config.model == MessageModel::Clustering
    }

    /// LOCK_BATCH_MQ (or UNLOCK_BATCH_MQ) of one queue on its broker; the queues this member
    /// holds afterwards (empty on failure or for an unlock).
    async fn lock_queues(&self, queue: &MessageQueue, unlock: bool) -> BTreeSet<MessageQueue> {
        let Ok(addr) = self
            .instance
            .broker_addr(&queue.topic, &queue.broker_name)
            .await
        else {
            return BTreeSet::new();
        };
        let body = LockBatchRequestBody {
            client_id: self.instance.client_id.clone(),
            consumer_group: self.config.group.clone(),
            mq_set: [queue.clone()].into(),
            only_this_broker: None,
        };
        let code = if unlock {
            rc::UNLOCK_BATCH_MQ
        } else {
            rc::LOCK_BATCH_MQ
        };
        let request =
            RemotingCommand::request(code, &EmptyHeader {}).with_body(body::encode(&body));
        let response = self
            .instance
            .invoke(addr, request, self.config.client.request_timeout)
            .await;
        match response {
            Ok(response) if response.code == response_code::SUCCESS && !unlock => {
                decode_lenient::<LockBatchResponseBody>("lock batch", &response.body)
                    .map(|b| b.lock_ok_mq_set)
                    .unwrap_or_default()
            }
            Ok(_) => BTreeSet::new(),
            Err(error) => {
                warn!(?queue, unlock, %error, "queue lock request failed");
                BTreeSet::new()
            }
        }
    }

    /// Renews the lock of every queue held; a queue whose lock was not renewed stops (its
    /// worker ends after the current message) and is tried again at the next rebalance.
    async fn renew_locks(&self) {
        let _guard = self.rebalancing.lock().await;
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let held: Vec<MessageQueue> = self
            .queues
            .lock()
            .expect("queues")
            .keys()
            .cloned()
            .collect();
        for queue in held {
            if self.lock_queues(&queue, false).await.contains(&queue) {
                if let Some(worker) = self.queues.lock().expect("queues").get(&queue) {
                    worker.state.last_lock_ms.store(now_ms(), Ordering::Release);
                }
                continue;
            }
            warn!(?queue, "queue lock lost; stopping its consumption");
            let worker = self.queues.lock().expect("queues").remove(&queue);
            if let Some(worker) = worker {
                self.stop_worker(&queue, worker).await;
            }
        }
    }

    async fn commit(&self, queue: &MessageQueue, offset: i64) {
        match self.config.model {
            MessageModel::Clustering => {
                if let Err(error) = self.pull.commit_offset(queue, offset).await {
                    warn!(?queue, offset, %error, "offset commit failed");
                }
            }
            MessageModel::Broadcasting => {
                let mut offsets = self.local_offsets();
                offsets.insert(queue_key(queue), offset);
                self.store_local_offsets(&offsets);
            }
        }
    }

    async fn commit_offsets(&self) {
        let changed: Vec<(MessageQueue, i64)> = {
            let mut queues = self.queues.lock().expect("queues");
            queues
                .iter_mut()
                .filter_map(|(queue, worker)| {
                    let consumed = worker.consumed.load(Ordering::Acquire);
                    (consumed != worker.committed).then(|| {
                        worker.committed = consumed;
                        (queue.clone(), consumed)
                    })
                })
                .collect()
        };
        for (queue, offset) in changed {
            self.commit(&queue, offset).await;
        }
    }

    fn local_offsets_path(&self) -> PathBuf {
        self.config
            .local_offset_dir
            .join(self.instance.client_id.replace(['@', ':', '/'], "_"))
            .join(&self.config.group)
            .join("offsets.json")
    }

    fn local_offsets(&self) -> BTreeMap<String, i64> {
        std::fs::read(self.local_offsets_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn store_local_offsets(&self, offsets: &BTreeMap<String, i64>) {
        let path = self.local_offsets_path();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, serde_json::to_vec(offsets).unwrap_or_default())?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(error) = written {
            warn!(path = %path.display(), %error, "local offsets not written");
        }
    }

    async fn unregister(&self) {
        let request = RemotingCommand::request(
            rc::UNREGISTER_CLIENT,
            &UnregisterClientRequestHeader {
                client_id: self.instance.client_id.clone(),
                producer_group: None,
                consumer_group: Some(self.config.group.clone()),
            },
        );
        for addr in self.brokers().await {
            if let Err(error) = self
                .instance
                .invoke(addr, request.clone(), self.config.client.request_timeout)
                .await
            {
                warn!(%addr, %error, "unregister failed");
            }
        }
    }
}

/// A message redelivered from the group's retry topic shows its original topic (the broker
/// keeps it in `RETRY_TOPIC`), as Java consumers do.
fn restore_retry_topic(message: &mut MessageExt) {
    if message.topic.starts_with("%RETRY%") {
        if let Some(original) = message.properties.get(property::RETRY_TOPIC) {
            message.topic = original.clone();
        }
    }
}

fn elapsed_ms(began: Instant) -> u64 {
    began.elapsed().as_millis() as u64
}

/// The `jstack` of the running info: Rust has no dump of other threads' stacks, so this lists
/// the consumer's tasks (per queue: its puller and consumer, running or ended) and the
/// answering thread's own backtrace.
fn task_dump(queues: &HashMap<MessageQueue, QueueWorker>) -> String {
    let mut held: Vec<_> = queues.iter().collect();
    held.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (queue, worker) in held {
        for (role, task) in ["puller", "consumer"].iter().zip(&worker.tasks) {
            let status = if task.is_finished() {
                "ENDED"
            } else {
                "RUNNABLE"
            };
            out.push_str(&format!(
                "\"{role} {}@{}@{}\" {status}\n",
                queue.topic, queue.broker_name, queue.queue_id
            ));
        }
    }
    let thread = std::thread::current();
    out.push_str(&format!(
        "\n\"{}\" answering thread:\n{}\n",
        thread.name().unwrap_or("unnamed"),
        std::backtrace::Backtrace::force_capture()
    ));
    out
}

fn queue_key(queue: &MessageQueue) -> String {
    format!("{}@{}@{}", queue.topic, queue.broker_name, queue.queue_id)
}

fn subscription(topic: &str, expression: &str, now_ms: i64) -> SubscriptionData {
    let tags = expression_tags(expression).unwrap_or_default();
    SubscriptionData {
        class_filter_mode: false,
        code_set: tags.iter().map(|t| java_string_hash(t)).collect(),
        expression_type: "TAG".into(),
        sub_string: if tags.is_empty() {
            "*".into()
        } else {
            expression.trim().to_owned()
        },
        sub_version: now_ms,
        tags_set: tags.into_iter().collect(),
        topic: topic.to_owned(),
    }
}

/// Stops a queue's worker and waits for its tasks; returns its next offset to consume.
async fn halt(worker: QueueWorker) -> i64 {
    worker.stop.store(true, Ordering::Release);
    let mut tasks = worker.tasks.into_iter();
    if let Some(puller) = tasks.next() {
        // A parked pull would hold us up to `suspend`: abort it (nothing is lost: only
        // consumed offsets are committed).
        puller.abort();
        let _ = puller.await;
    }
    for task in tasks {
        // The puller's end closed the buffer: the consumer drains it and ends.
        let _ = task.await;
    }
    worker.consumed.load(Ordering::Acquire)
}
