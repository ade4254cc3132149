//! The transaction producer (RocketMQ's `TransactionMQProducer`): sends a half message, runs
//! the local transaction, and tells the broker to commit or roll back; answers the broker's
//! checks of half messages whose decision it never got with a checker.
//!
//! Its producer registers the group with every broker it sends to (HEART_BEAT, then every
//! `heartbeat_interval`), so a broker can reach it with CHECK_TRANSACTION_STATE, also after a
//! restart of either side.
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
    /// The check answerer; ended by `shutdown`.
    answerer: Mutex<Option<JoinHandle<()>>>,
}

impl TransactionProducer {
    /// Starts answering checks with `checker` (and heartbeating the brokers it sends to).
    pub async fn start(
        config: ProducerConfig,
        checker: impl Fn(&MessageExt) -> LocalTransactionState + Send + Sync + 'static,
    ) -> ClientResult<TransactionProducer> {
        let producer = Producer::new(config.clone());
        let instance = producer.instance().clone();
        let checker: Arc<Checker> = Arc::new(checker);
        let mut checks = instance.server_requests(&[rc::CHECK_TRANSACTION_STATE]);
        let group = config.group.clone();
        let answering = instance.clone();
        let answerer = tokio::spawn(async move {
            while let Some((addr, request)) = checks.recv().await {
                answer_check(&answering, &group, addr, &request, checker.clone()).await;
            }
        });
        let inner = Arc::new(Inner {
            group: config.group.clone(),
            instance,
            answerer: Mutex::new(Some(answerer)),
        });
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
        // Registered before the half message exists, so a check can always find us.
        self.producer.register_with_topic(&message.topic).await;
        let send = self.producer.send(message.clone()).await?;
        let addr = self.broker_of(&send).await?;
        self.producer.register_with(addr).await;
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
        if let Some(task) = self.inner.answerer.lock().expect("answerer").take() {
            task.abort();
        }
        self.producer.shutdown().await;
    }
}

/// Runs the checker for a broker's CHECK_TRANSACTION_STATE and answers it (one-way).
async fn answer_check(
    instance: &ClientInstance,
    group: &str,
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
    let answer = check_answer(group, &check, state);
    if let Err(error) = instance.invoke_oneway(addr, answer).await {
        debug!(%addr, %error, "check answer not sent");
    }
}
