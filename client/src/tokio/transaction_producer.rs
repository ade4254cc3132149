//! The transaction producer (RocketMQ's `TransactionMQProducer`): sends a half message, runs
//! the local transaction, and tells the broker to commit or roll back; answers the broker's
//! checks of half messages whose decision it never got with a checker.
//!
//! It registers its group with every broker it sends to (HEART_BEAT, then every
//! `heartbeat_interval`), so a broker can reach it with CHECK_TRANSACTION_STATE, also after
//! a restart of either side.
//!
//! ```no_run
//! # async fn example() -> Result<(), thruster_client::tokio::ClientError> {
//! use thruster_client::tokio::{
//!     LocalTransactionState, Message, ProducerConfig, TransactionProducer,
//! };
//!
//! // The checker answers for a half message whose decision the broker never got.
//! let producer = TransactionProducer::start(
//!     ProducerConfig::new("tx-group", "127.0.0.1:9876")?,
//!     |_message| LocalTransactionState::Commit,
//! )
//! .await?;
//! let result = producer
//!     .send_in_transaction(Message::new("Orders", "order 42 paid"), |_message, _sent| {
//!         // Do the local work here (a database write...), then decide.
//!         LocalTransactionState::Commit
//!     })
//!     .await?;
//! println!("{} is {:?}", result.send.msg_id, result.state);
//! producer.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::instance::{expect_success, ClientInstance};
use super::producer::{Producer, ProducerConfig};
use crate::core::error::{ClientError, ClientResult};
use crate::core::message::{Message, MessageExt};
use crate::core::requests::SendResult;
pub use crate::core::transaction::LocalTransactionState;
use crate::core::transaction::{check_answer, end_request, parse_check, prepared};
use crate::protocol::body;
use crate::protocol::body::heartbeat::{HeartbeatData, ProducerData};
use crate::protocol::header::client::UnregisterClientRequestHeader;
use crate::protocol::header::EmptyHeader;
use crate::protocol::{request_code as rc, RemotingCommand};

type Checker = dyn Fn(&MessageExt) -> LocalTransactionState + Send + Sync;

/// What `send_in_transaction` did.
#[derive(Debug)]
pub struct TransactionSendResult {
    /// The half message as the broker stored it.
    pub send: SendResult,
    /// What the local transaction decided.
    pub state: LocalTransactionState,
    /// The broker's refusal of that decision, if any: the broker's check then asks the
    /// checker (as with `Unknown`).
    pub end_error: Option<ClientError>,
}

/// A transaction producer; cheap to clone.
#[derive(Clone)]
pub struct TransactionProducer {
    producer: Producer,
    inner: Arc<Inner>,
}

struct Inner {
    group: String,
    instance: Arc<ClientInstance>,
    /// Brokers this producer sent to: heartbeats go there.
    brokers: Mutex<BTreeSet<SocketAddr>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TransactionProducer {
    /// Starts answering checks with `checker` (and heartbeating the brokers it sends to).
    pub async fn start(
        config: ProducerConfig,
        checker: impl Fn(&MessageExt) -> LocalTransactionState + Send + Sync + 'static,
    ) -> ClientResult<TransactionProducer> {
        let producer = Producer::new(config.clone());
        let instance = producer.instance().clone();
        let inner = Arc::new(Inner {
            group: config.group.clone(),
            instance: instance.clone(),
            brokers: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let checker: Arc<Checker> = Arc::new(checker);
        let mut checks = instance.server_requests(&[rc::CHECK_TRANSACTION_STATE]);
        let answering = inner.clone();
        let answerer = tokio::spawn(async move {
            while let Some((addr, request)) = checks.recv().await {
                answering
                    .answer_check(addr, &request, checker.clone())
                    .await;
            }
        });
        let beating = inner.clone();
        let interval = config.client.heartbeat_interval;
        let beater = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let brokers: Vec<SocketAddr> = beating
                    .brokers
                    .lock()
                    .expect("brokers")
                    .iter()
                    .copied()
                    .collect();
                for addr in brokers {
                    if let Err(error) = beating.heartbeat(addr).await {
                        debug!(%addr, %error, "producer heartbeat failed");
                    }
                }
            }
        });
        inner
            .tasks
            .lock()
            .expect("tasks")
            .extend([answerer, beater]);
        Ok(TransactionProducer { producer, inner })
    }

    /// The plain producer underneath (same group and connections), for ordinary sends.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends `message` as a half message, runs `local` (the local transaction) once the
    /// broker stored it, and sends the decision. `Unknown` leaves it to the broker's check.
    pub async fn send_in_transaction(
        &self,
        message: Message,
        local: impl FnOnce(&Message, &SendResult) -> LocalTransactionState,
    ) -> ClientResult<TransactionSendResult> {
        let message = prepared(message, &self.inner.group);
        let targets = self.producer.instance().route(&message.topic).await;
        if let Ok(route) = targets {
            // Registered before the half message exists, so a check can always find us.
            for addr in route.masters.values().filter_map(|a| a.parse().ok()) {
                self.inner.register(addr).await;
            }
        }
        let send = self.producer.send(message.clone()).await?;
        let addr = self.broker_of(&send).await?;
        self.inner.register(addr).await;
        let state = local(&message, &send);
        let end_error = match state {
            LocalTransactionState::Unknown => None,
            decided => self.end_transaction(&send, decided).await.err(),
        };
        if let Some(error) = &end_error {
            warn!(msg_id = send.msg_id, %error, "end transaction refused; the broker's check decides");
        }
        Ok(TransactionSendResult {
            send,
            state,
            end_error,
        })
    }

    /// Tells the broker the decision about the half message `sent` (and waits for its
    /// answer; Java's producer sends it one-way).
    pub async fn end_transaction(
        &self,
        sent: &SendResult,
        state: LocalTransactionState,
    ) -> ClientResult<()> {
        let addr = self.broker_of(sent).await?;
        let request = end_request(&self.inner.group, sent, state)?;
        let timeout = self.inner.instance.config.request_timeout;
        let response = self.inner.instance.invoke(addr, request, timeout).await?;
        expect_success(addr, response).map(|_| ())
    }

    /// The address of the broker (shard) that stored `sent`.
    async fn broker_of(&self, sent: &SendResult) -> ClientResult<SocketAddr> {
        let instance = self.producer.instance();
        let broker = instance
            .broker_addr(&sent.queue.topic, &sent.queue.broker_name)
            .await?;
        Ok(instance.queue_addr(broker, &sent.queue).await)
    }

    /// Stops answering checks and leaves the group on every broker it registered with.
    pub async fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
        let brokers: Vec<SocketAddr> =
            std::mem::take(&mut *self.inner.brokers.lock().expect("brokers"))
                .into_iter()
                .collect();
        for addr in brokers {
            let request = RemotingCommand::request(
                rc::UNREGISTER_CLIENT,
                &UnregisterClientRequestHeader {
                    client_id: self.inner.instance.client_id.clone(),
                    producer_group: Some(self.inner.group.clone()),
                    consumer_group: None,
                },
            );
            let timeout = self.inner.instance.config.request_timeout;
            if let Err(error) = self.inner.instance.invoke(addr, request, timeout).await {
                debug!(%addr, %error, "unregister failed");
            }
        }
    }
}

impl Inner {
    /// Heartbeats `addr` the first time this producer uses it.
    async fn register(&self, addr: SocketAddr) {
        let new = self.brokers.lock().expect("brokers").insert(addr);
        if new {
            if let Err(error) = self.heartbeat(addr).await {
                warn!(%addr, %error, "producer heartbeat failed");
            }
        }
    }

    async fn heartbeat(&self, addr: SocketAddr) -> ClientResult<()> {
        let data = HeartbeatData {
            client_id: self.instance.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: self.group.clone(),
            }],
            ..HeartbeatData::default()
        };
        let request = RemotingCommand::request(rc::HEART_BEAT, &EmptyHeader {})
            .with_body(body::encode(&data));
        let timeout = self.instance.config.request_timeout;
        let response = self.instance.invoke(addr, request, timeout).await?;
        expect_success(addr, response).map(|_| ())
    }

    /// Runs the checker for a broker's CHECK_TRANSACTION_STATE and answers it (one-way).
    async fn answer_check(
        &self,
        addr: SocketAddr,
        request: &RemotingCommand,
        checker: Arc<Checker>,
    ) {
        let check = match parse_check(addr, request) {
            Ok(check) => check,
            Err(error) => {
                warn!(%addr, %error, "unreadable transaction check");
                return;
            }
        };
        let message = check.message.clone();
        // The checker is the application's (it may block): off the async threads.
        let state = match tokio::task::spawn_blocking(move || checker(&message)).await {
            Ok(state) => state,
            Err(error) => {
                warn!(%addr, %error, "transaction checker panicked");
                return;
            }
        };
        let answer = check_answer(&self.group, &check, state);
        if let Err(error) = self.instance.invoke_oneway(addr, answer).await {
            debug!(%addr, %error, "check answer not sent");
        }
    }
}
