//! The native client on glommio (feature `glommio`): one `Client` per reactor, state owned by
//! it (no locks), for thruster-bench's pinned load generators. The protocol logic is the
//! tokio front end's (`crate::core`); this front end sends, sends one-way and pulls, which is
//! what a load generator needs.

mod connection;
mod shared_stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use connection::Connection;
pub use shared_stream::SharedStream;

use crate::core::config::ClientConfig;
use crate::core::error::{ClientError, ClientResult};
use crate::core::message::{Message, MessageView};
use crate::core::requests::{
    batch_request, parse_pull_response_view, parse_send_response, pull_request, send_request,
    send_retryable, PullResult, SendResult, AUTO_CREATE_TOPIC,
};
use crate::core::route::{parse_route_response, route_request, PublishTargets, TopicRoute};
use crate::core::shard::{parse_shard_map, shard_map_request, ShardMap};
use crate::core::unique_id::UniqueIdGenerator;
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::RemotingCommand;

/// Runs `future` in the background on the current reactor.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Waits on the current reactor.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
}

/// Runs `make_future()` on a new glommio reactor (pinned to `cpu` if given) and returns its
/// output. `io_memory_bytes` is what the reactor registers with io_uring (glommio's default,
/// 10 MiB, exceeds an 8 MiB memlock limit).
pub fn run_on_reactor<T, F, Fut>(
    cpu: Option<usize>,
    io_memory_bytes: usize,
    make_future: F,
) -> std::io::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = cpu.map_or(glommio::Placement::Unbound, glommio::Placement::Fixed);
    glommio::LocalExecutorBuilder::new(placement)
        .name("thruster-client")
        .io_memory(io_memory_bytes)
        .spawn(make_future)
        .map_err(|e| std::io::Error::other(format!("starting a reactor: {e}")))?
        .join()
        .map_err(|e| std::io::Error::other(format!("reactor failed: {e}")))
}

/// A producer and pull consumer for one reactor.
pub struct Client {
    config: ClientConfig,
    group: String,
    ids: UniqueIdGenerator,
    connections: RefCell<HashMap<SocketAddr, Rc<Connection>>>,
    routes: RefCell<HashMap<String, (TopicRoute, Instant)>>,
    shard_maps: RefCell<HashMap<SocketAddr, Option<ShardMap>>>,
    rotation: Cell<usize>,
    next_namesrv: Cell<usize>,
    /// Extra attempts on another queue when a send fails.
    pub retry_times: u32,
}

impl Client {
    /// A client whose producer and consumer group is `group`.
    pub fn new(config: ClientConfig, group: impl Into<String>) -> Rc<Client> {
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Rc::new(Client {
            ids: UniqueIdGenerator::new(std::net::Ipv4Addr::LOCALHOST, std::process::id(), salt),
            config,
            group: group.into(),
            connections: RefCell::new(HashMap::new()),
            routes: RefCell::new(HashMap::new()),
            shard_maps: RefCell::new(HashMap::new()),
            rotation: Cell::new(0),
            next_namesrv: Cell::new(0),
            retry_times: 2,
        })
    }

    async fn connection(&self, addr: SocketAddr) -> ClientResult<Rc<Connection>> {
        if let Some(connection) = self.connections.borrow().get(&addr) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect(addr, self.config.request_timeout).await?;
        self.connections
            .borrow_mut()
            .insert(addr, connection.clone());
        Ok(connection)
    }

    async fn invoke(
        &self,
        addr: SocketAddr,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> ClientResult<RemotingCommand> {
        self.config.sign(&mut request);
        self.connection(addr).await?.invoke(request, timeout).await
    }

    async fn route(&self, topic: &str) -> ClientResult<TopicRoute> {
        if let Some((route, fetched)) = self.routes.borrow().get(topic) {
            if fetched.elapsed() < self.config.route_refresh {
                return Ok(route.clone());
            }
        }
        let count = self.config.namesrv_addrs.len();
        let mut last_error = None;
        for i in 0..count {
            let index = (self.next_namesrv.get() + i) % count;
            let addr = self.config.namesrv_addrs[index];
            match self
                .invoke(addr, route_request(topic), self.config.request_timeout)
                .await
            {
                Ok(response) => {
                    self.next_namesrv.set(index);
                    let route = parse_route_response(topic, response)?;
                    self.routes
                        .borrow_mut()
                        .insert(topic.to_owned(), (route.clone(), Instant::now()));
                    return Ok(route);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::InvalidArgument("no name server".into())))
    }

    async fn targets(&self, topic: &str) -> ClientResult<PublishTargets> {
        if let Ok(route) = self.route(topic).await {
            if let Some(targets) = PublishTargets::from_route(topic, route) {
                return Ok(targets);
            }
        }
        PublishTargets::from_template(topic, self.route(AUTO_CREATE_TOPIC).await?)
    }

    /// The owning shard's address for `queue` (shard-aware), else the broker's.
    async fn queue_addr(&self, broker: SocketAddr, queue: &MessageQueue) -> SocketAddr {
        if !self.config.shard_aware {
            return broker;
        }
        let known = self.shard_maps.borrow().get(&broker).cloned();
        let map = match known {
            Some(map) => map,
            None => {
                let map = match self
                    .invoke(broker, shard_map_request(), self.config.request_timeout)
                    .await
                {
                    Ok(response) => parse_shard_map(&response),
                    Err(_) => None,
                };
                self.shard_maps.borrow_mut().insert(broker, map.clone());
                map
            }
        };
        map.map_or(broker, |m| m.addr_of(&queue.topic, queue.queue_id))
    }

    /// Sends and waits for the broker's answer, with failover to other queues.
    pub async fn send(&self, message: &Message) -> ClientResult<SendResult> {
        let mut last_error = None;
        let mut failed_broker: Option<String> = None;
        for _ in 0..=self.retry_times {
            let targets = self.targets(&message.topic).await?;
            let rotation = self.rotation.get();
            self.rotation.set(rotation.wrapping_add(1));
            let queue = targets.pick(rotation, failed_broker.as_deref());
            let result = match targets.addr_of(&queue) {
                Ok(broker) => self.send_to(message, &queue, broker).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(result) => return Ok(result),
                Err(error) => {
                    if matches!(&error, ClientError::Broker { code, .. } if !send_retryable(*code))
                    {
                        return Err(error);
                    }
                    self.routes.borrow_mut().remove(&message.topic);
                    failed_broker = Some(queue.broker_name.clone());
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn send_to(
        &self,
        message: &Message,
        queue: &MessageQueue,
        broker: SocketAddr,
    ) -> ClientResult<SendResult> {
        let addr = self.queue_addr(broker, queue).await;
        let id = self.ids.next();
        let request = send_request(&self.group, message, queue, &id);
        let response = self
            .invoke(addr, request, self.config.request_timeout)
            .await?;
        parse_send_response(addr, response, id, queue.clone())
    }

    /// Sends to one queue, without failover.
    pub async fn send_to_queue(
        &self,
        message: &Message,
        queue: &MessageQueue,
    ) -> ClientResult<SendResult> {
        let targets = self.targets(&message.topic).await?;
        let broker = targets.addr_of(queue)?;
        self.send_to(message, queue, broker).await
    }

    /// Sends messages of one topic as one batch.
    pub async fn send_batch(&self, messages: &[Message]) -> ClientResult<SendResult> {
        let topic = messages
            .first()
            .map(|m| m.topic.clone())
            .ok_or_else(|| ClientError::InvalidArgument("an empty batch".into()))?;
        let targets = self.targets(&topic).await?;
        let rotation = self.rotation.get();
        self.rotation.set(rotation.wrapping_add(1));
        let queue = targets.pick(rotation, None);
        let addr = self.queue_addr(targets.addr_of(&queue)?, &queue).await;
        let ids: Vec<String> = messages.iter().map(|_| self.ids.next()).collect();
        let request = batch_request(&self.group, messages, &queue, &ids)?;
        let response = self
            .invoke(addr, request, self.config.request_timeout)
            .await?;
        parse_send_response(addr, response, ids.join(","), queue)
    }

    /// Sends without waiting for an answer.
    pub async fn send_oneway(&self, message: &Message) -> ClientResult<()> {
        let targets = self.targets(&message.topic).await?;
        let rotation = self.rotation.get();
        self.rotation.set(rotation.wrapping_add(1));
        let queue = targets.pick(rotation, None);
        let addr = self.queue_addr(targets.addr_of(&queue)?, &queue).await;
        let mut request = send_request(&self.group, message, &queue, &self.ids.next());
        self.config.sign(&mut request);
        self.connection(addr).await?.invoke_oneway(request).await
    }

    /// The topic's readable queues, sorted.
    pub async fn queues(&self, topic: &str) -> ClientResult<Vec<MessageQueue>> {
        Ok(self.route(topic).await?.subscribe_queues)
    }

    /// Pulls up to `max` messages matching `expression` from `offset`.
    pub async fn pull(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
    ) -> ClientResult<PullResult> {
        self.pull_view(queue, expression, offset, max, suspend)
            .await
            .map(PullResult::into_message_ext)
    }

    /// [`Client::pull`] with the messages read in place (`MessageView`: no allocation per
    /// message, fields decoded on demand), for bulk consumers.
    pub async fn pull_view(
        &self,
        queue: &MessageQueue,
        expression: &str,
        offset: i64,
        max: i32,
        suspend: Option<Duration>,
    ) -> ClientResult<PullResult<MessageView>> {
        let route = self.route(&queue.topic).await?;
        let broker: SocketAddr = route
            .master_of(&queue.broker_name)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ClientError::NoRoute {
                topic: queue.topic.clone(),
                reason: format!("broker {} has no master", queue.broker_name),
            })?;
        let addr = self.queue_addr(broker, queue).await;
        let suspend_ms = suspend.map_or(0, |d| d.as_millis() as i64);
        let request = pull_request(
            &self.group,
            queue,
            expression,
            offset,
            max,
            suspend_ms,
            None,
        );
        let timeout = self.config.request_timeout + suspend.unwrap_or_default();
        let response = self.invoke(addr, request, timeout).await?;
        parse_pull_response_view(addr, response, expression)
    }
}
