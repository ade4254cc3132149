//! Registration with the name servers (shard 0): at start, whenever the topic table changes,
//! and every `registerNameServerPeriod`; UNREGISTER_BROKER at a clean shutdown. One
//! connection per name server is kept open, since a name server drops a broker whose
//! connection closes. With a broker per shard, shard 0 registers every shard as a broker of its
//! own (its name and address, the same topic table), so there is still one registrar.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use thruster_client::protocol::body::{self, RegisterBrokerBody};
use thruster_client::protocol::header::namesrv::{
    BrokerIdentityHeader, RegisterBrokerRequestHeader,
};
use thruster_client::protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{info, warn};

use crate::meta::topic_config::ShardView;
use crate::remoting::client::RemotingClient;
use crate::runtime;
use crate::shard::Shard;

pub struct Registrar {
    shard: Rc<Shard>,
    clients: Vec<(SocketAddr, Option<RemotingClient>)>,
    /// The brokers this registrar announces: (name, address).
    brokers: Vec<(String, SocketAddr)>,
}

impl Registrar {
    pub fn new(shard: Rc<Shard>) -> Registrar {
        let config = &shard.config;
        let clients = config
            .namesrv_addrs
            .iter()
            .map(|&addr| (addr, None))
            .collect();
        let brokers = match shard.shard_addrs.get() {
            Some(addrs) if config.broker_per_shard => addrs
                .iter()
                .enumerate()
                .map(|(i, &addr)| (config.shard_broker_name(i), addr))
                .collect(),
            _ => vec![(shard.broker_name.clone(), shard.broker_addr)],
        };
        Registrar {
            shard,
            clients,
            brokers,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.shard.config.register_broker_timeout_ms)
    }

    /// One REGISTER_BROKER per broker, from a snapshot of the topic table.
    fn register_requests(&self) -> Vec<RemotingCommand> {
        let config = &self.shard.config;
        let topics = self.shard.topics.borrow();
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, (name, addr))| {
                // Each shard announces its own share of the topics (one-name: all of them).
                let wrapper = if config.broker_per_shard {
                    let view = ShardView {
                        shard: i,
                        shards: self.brokers.len(),
                    };
                    topics.wrapper_for_shard(config.broker_permission, view)
                } else {
                    topics.wrapper(config.broker_permission)
                };
                let body = body::encode(&RegisterBrokerBody {
                    filter_server_list: Vec::new(),
                    topic_config_serialize_wrapper: wrapper,
                });
                let body_crc32 = (crc32fast::hash(&body) & 0x7FFF_FFFF) as i32;
                let ha_addr = SocketAddr::new(config.broker_ip1, addr.port().wrapping_add(1));
                let header = RegisterBrokerRequestHeader {
                    broker_name: name.clone(),
                    broker_addr: addr.to_string(),
                    cluster_name: config.broker_cluster_name.clone(),
                    ha_server_addr: ha_addr.to_string(),
                    broker_id: config.broker_id,
                    compressed: Some(false),
                    body_crc32: Some(body_crc32),
                    heartbeat_timeout_millis: None,
                    enable_acting_master: None,
                };
                RemotingCommand::request(rc::REGISTER_BROKER, &header).with_body(body)
            })
            .collect()
    }

    /// Registers every broker with every name server (one after the other; each request
    /// has its own timeout).
    pub async fn register_all(&mut self) {
        let requests = self.register_requests();
        for i in 0..self.clients.len() {
            let addr = self.clients[i].0;
            for request in &requests {
                match self.invoke(i, request.clone()).await {
                    Ok(response) if response.code == response_code::SUCCESS => {
                        tracing::debug!(namesrv = %addr, "registered");
                    }
                    Ok(response) => {
                        warn!(namesrv = %addr, code = response.code, remark = ?response.remark, "registration refused")
                    }
                    Err(error) => warn!(namesrv = %addr, %error, "registration failed"),
                }
            }
        }
    }

    pub async fn unregister_all(&mut self) {
        let config = &self.shard.config;
        let requests: Vec<RemotingCommand> = self
            .brokers
            .iter()
            .map(|(name, addr)| {
                let identity = BrokerIdentityHeader {
                    broker_name: name.clone(),
                    broker_addr: addr.to_string(),
                    cluster_name: config.broker_cluster_name.clone(),
                    broker_id: config.broker_id,
                };
                RemotingCommand::request(rc::UNREGISTER_BROKER, &identity)
            })
            .collect();
        for i in 0..self.clients.len() {
            let addr = self.clients[i].0;
            for request in &requests {
                match self.invoke(i, request.clone()).await {
                    Ok(_) => info!(namesrv = %addr, "unregistered"),
                    Err(error) => warn!(namesrv = %addr, %error, "unregister failed"),
                }
            }
        }
    }

    async fn invoke(
        &mut self,
        i: usize,
        request: RemotingCommand,
    ) -> std::io::Result<RemotingCommand> {
        let timeout = self.timeout();
        let (addr, slot) = &mut self.clients[i];
        if slot.is_none() {
            *slot = Some(RemotingClient::connect(*addr, timeout).await?);
        }
        let client = slot.as_mut().expect("connected above");
        let result = client.invoke(request, timeout).await;
        if result.is_err() {
            // Reconnect next time: the stream may hold half a frame.
            *slot = None;
        }
        result
    }

    /// After the first registration (which the caller makes before serving): registers
    /// every period and whenever the topic table changes; when the shard stops, unregisters.
    pub async fn run(mut self) {
        let period = Duration::from_millis(self.shard.config.register_name_server_period_ms);
        loop {
            // Past what was registered, not what was seen: a change made while the last
            // registration was on its way is registered at once, not a period later.
            let registered = self.shard.topics_registered.get();
            let shard = self.shard.clone();
            let changed = shard.topics_changed.wait_for(registered + 1);
            let stopping = shard.stopping.wait_for(1);
            runtime::timeout(period, futures_lite::future::or(changed, stopping)).await;
            if shard.is_stopping() {
                self.unregister_all().await;
                return;
            }
            // Read before `register_all` takes its snapshot of the table (no await between).
            let version = shard.topics_changed.get();
            self.register_all().await;
            shard.topics_registered.advance(version);
        }
    }
}
