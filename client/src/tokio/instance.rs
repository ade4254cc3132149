//! What producers and consumers of one process share (RocketMQ's `MQClientInstance`): the
//! client id, one connection per address, the route cache, name-server failover.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::connection::{Connection, ServerRequestSink};
pub use crate::core::config::ClientConfig;
use crate::core::error::{ClientError, ClientResult};
use crate::core::route::{parse_route_response, route_request, TopicRoute};
use crate::core::shard::{parse_shard_map, shard_map_request, ShardMap};
use crate::core::unique_id::UniqueIdGenerator;
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::{response_code, RemotingCommand};

/// Requests servers send to this client: (server address, request).
pub type ServerRequests = mpsc::Receiver<(SocketAddr, RemotingCommand)>;
/// Server requests buffered per taker; past it they are dropped (NOTIFY_CONSUMER_IDS_CHANGED
/// is only a hint, a transaction check comes again next interval, a late reply is useless).
const SERVER_REQUESTS_CAPACITY: usize = 256;
/// Takers of server requests, by request code.
type ServerRoutes = Arc<Mutex<HashMap<i32, mpsc::Sender<(SocketAddr, RemotingCommand)>>>>;

pub struct ClientInstance {
    pub config: ClientConfig,
    /// `ip@instanceName`, RocketMQ's shape.
    pub client_id: String,
    pub ids: UniqueIdGenerator,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Connection>>>,
    routes: Mutex<HashMap<String, (TopicRoute, Instant)>>,
    next_namesrv: AtomicUsize,
    server_routes: ServerRoutes,
    /// Broker address → its shard map (`None`: not a sharded Thruster broker).
    shard_maps: Mutex<HashMap<SocketAddr, Option<ShardMap>>>,
}

impl ClientInstance {
    pub fn new(config: ClientConfig) -> Arc<ClientInstance> {
        let ip = Ipv4Addr::LOCALHOST;
        let salt = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()))
            ^ std::process::id().rotate_left(16);
        Arc::new(ClientInstance {
            client_id: format!("{ip}@{}", config.instance_name),
            ids: UniqueIdGenerator::new(ip, std::process::id(), salt),
            config,
            connections: tokio::sync::Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            next_namesrv: AtomicUsize::new(0),
            server_routes: ServerRoutes::default(),
            shard_maps: Mutex::new(HashMap::new()),
        })
    }

    /// Server-sent requests with one of `codes` from now on (a later taker of a code replaces
    /// an earlier one: one client of the instance serves each code).
    pub fn server_requests(&self, codes: &[i32]) -> ServerRequests {
        let (tx, rx) = mpsc::channel(SERVER_REQUESTS_CAPACITY);
        let mut routes = self.server_routes.lock().expect("server routes");
        for code in codes {
            routes.insert(*code, tx.clone());
        }
        rx
    }

    fn server_request_sink(&self) -> ServerRequestSink {
        let routes = self.server_routes.clone();
        Arc::new(move |addr, command: RemotingCommand| {
            let route = routes
                .lock()
                .expect("server routes")
                .get(&command.code)
                .cloned();
            if let Some(route) = route {
                let _ = route.try_send((addr, command));
            }
        })
    }

    /// The connection to `addr`, opened (or reopened) as needed.
    pub async fn connection(&self, addr: SocketAddr) -> ClientResult<Arc<Connection>> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&addr) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = Connection::connect(
            addr,
            self.config.request_timeout,
            Some(self.server_request_sink()),
        )
        .await?;
        connections.insert(addr, connection.clone());
        Ok(connection)
    }

    /// Sends `request` to `addr`; a non-SUCCESS response is returned as is (callers decide).
    pub async fn invoke(
        &self,
        addr: SocketAddr,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> ClientResult<RemotingCommand> {
        self.config.sign(&mut request);
        self.connection(addr).await?.invoke(request, timeout).await
    }

    pub async fn invoke_oneway(
        &self,
        addr: SocketAddr,
        mut request: RemotingCommand,
    ) -> ClientResult<()> {
        self.config.sign(&mut request);
        self.connection(addr).await?.invoke_oneway(request).await
    }

    /// Answers a request the server at `addr` sent (over the connection it came on).
    pub async fn respond(&self, addr: SocketAddr, response: RemotingCommand) -> ClientResult<()> {
        self.connection(addr).await?.respond(response).await
    }

    /// Asks the name servers in turn, starting with the last one that answered.
    async fn invoke_namesrv(&self, request: RemotingCommand) -> ClientResult<RemotingCommand> {
        let count = self.config.namesrv_addrs.len();
        let first = self.next_namesrv.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..count {
            let index = (first + i) % count;
            let addr = self.config.namesrv_addrs[index];
            match self
                .invoke(addr, request.clone(), self.config.request_timeout)
                .await
            {
                Ok(response) => {
                    self.next_namesrv.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one name server"))
    }

    /// The topic's route, from the cache while it is fresh.
    pub async fn route(&self, topic: &str) -> ClientResult<TopicRoute> {
        if let Some((route, fetched)) = self.routes.lock().expect("routes").get(topic) {
            if fetched.elapsed() < self.config.route_refresh {
                return Ok(route.clone());
            }
        }
        self.refresh_route(topic).await
    }

    pub async fn refresh_route(&self, topic: &str) -> ClientResult<TopicRoute> {
        let response = self.invoke_namesrv(route_request(topic)).await?;
        let route = parse_route_response(topic, response)?;
        self.routes
            .lock()
            .expect("routes")
            .insert(topic.to_owned(), (route.clone(), Instant::now()));
        Ok(route)
    }

    /// Forgets a cached route (after a send failure) so the next use fetches it again.
    pub fn invalidate_route(&self, topic: &str) {
        self.routes.lock().expect("routes").remove(topic);
    }

    /// Master address of `broker_name` in `topic`'s route.
    pub async fn broker_addr(&self, topic: &str, broker_name: &str) -> ClientResult<SocketAddr> {
        let route = self.route(topic).await?;
        parse_addr(topic, broker_name, route.master_of(broker_name), "master")
    }

    /// Where to read `broker_name`'s queues of `topic`: its master, or its slave while the
    /// master is gone.
    pub async fn reader_addr(&self, topic: &str, broker_name: &str) -> ClientResult<SocketAddr> {
        let route = self.route(topic).await?;
        parse_addr(topic, broker_name, route.reader_of(broker_name), "broker")
    }
}

impl ClientInstance {
    /// Where to send requests about `queue` of the broker at `broker`: the owning shard's own
    /// address when the broker advertises shards, else `broker` itself. The map is asked for
    /// once per broker address (GET_BROKER_RUNTIME_INFO).
    pub async fn queue_addr(&self, broker: SocketAddr, queue: &MessageQueue) -> SocketAddr {
        if !self.config.shard_aware {
            return broker;
        }
        let known = self
            .shard_maps
            .lock()
            .expect("shard maps")
            .get(&broker)
            .cloned();
        let map = match known {
            Some(map) => map,
            None => {
                let map = self.fetch_shard_map(broker).await;
                self.shard_maps
                    .lock()
                    .expect("shard maps")
                    .insert(broker, map.clone());
                map
            }
        };
        map.map_or(broker, |m| m.addr_of(&queue.topic, queue.queue_id))
    }

    async fn fetch_shard_map(&self, broker: SocketAddr) -> Option<ShardMap> {
        let response = self
            .invoke(broker, shard_map_request(), self.config.request_timeout)
            .await
            .ok()?;
        parse_shard_map(&response)
    }
}

/// Turns a non-SUCCESS response into an error.
pub fn expect_success(
    addr: SocketAddr,
    response: RemotingCommand,
) -> ClientResult<RemotingCommand> {
    if response.code == response_code::SUCCESS {
        Ok(response)
    } else {
        Err(crate::core::requests::refusal(addr, response))
    }
}

fn parse_addr(
    topic: &str,
    broker_name: &str,
    addr: Option<&str>,
    what: &str,
) -> ClientResult<SocketAddr> {
    let addr = addr.ok_or_else(|| ClientError::NoRoute {
        topic: topic.to_owned(),
        reason: format!("broker {broker_name} has no {what}"),
    })?;
    addr.parse().map_err(|_| ClientError::NoRoute {
        topic: topic.to_owned(),
        reason: format!("bad broker address {addr}"),
    })
}
