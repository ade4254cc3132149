//! Registration with the name servers (shard 0): the whole topic table at start and every
//! `registerNameServerPeriod` (REGISTER_BROKER, which also keeps the broker alive there), and
//! each changed topic as it changes (REGISTER_TOPIC_IN_NAMESRV, one small request per topic
//! instead of the whole table per change; a name server that does not know the code, like
//! Apache RocketMQ's before 5.0, gets the whole table instead); UNREGISTER_BROKER at a clean
//! shutdown. One connection per name server is kept open, since a name server drops a broker
//! whose connection closes. With a broker per shard, shard 0 registers every shard as a broker
//! of its own (its name and address, its share of the topics), so there is still one registrar.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use thruster_protocol::body::{
    self, JsonStyle, QueueData, RegisterBrokerBody, TopicConfig, TopicRouteData,
};
use thruster_protocol::header::admin::TopicRequestHeader;
use thruster_protocol::header::namesrv::{
    BrokerIdentityHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{info, warn};

use crate::ha::state::MasterAddrs;
use crate::meta::topic_config::{advertised, ShardView};
use crate::remoting::client::RemotingClient;
use crate::runtime;
use crate::shard::Shard;

pub struct Registrar {
    shard: Rc<Shard>,
    clients: Vec<(SocketAddr, Option<RemotingClient>)>,
    /// Per name server: it answered REGISTER_TOPIC_IN_NAMESRV with REQUEST_CODE_NOT_SUPPORTED,
    /// so it gets the whole table for every change.
    whole_table_only: Vec<bool>,
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
            whole_table_only: vec![false; config.namesrv_addrs.len()],
            shard,
            clients,
            brokers,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.shard.config.register_broker_timeout_ms)
    }

    /// With a broker per shard, broker `i`'s share of the topics; `None` in one-name mode.
    fn view_of(&self, i: usize) -> Option<ShardView> {
        self.shard.config.broker_per_shard.then_some(ShardView {
            shard: i,
            shards: self.brokers.len(),
        })
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
                let wrapper = match self.view_of(i) {
                    Some(view) => topics.wrapper_for_shard(self.shard.broker_permission(), view),
                    None => topics.wrapper(self.shard.broker_permission()),
                };
                let body = body::encode(&RegisterBrokerBody {
                    filter_server_list: Vec::new(),
                    topic_config_serialize_wrapper: wrapper,
                });
                let body_crc32 = (crc32fast::hash(&body) & 0x7FFF_FFFF) as i32;
                // A master's bound HA port; a slave (no HA listener) names the RocketMQ default.
                let ha_addr = self
                    .shard
                    .ha_addrs
                    .get(i)
                    .copied()
                    .flatten()
                    .unwrap_or_else(|| {
                        SocketAddr::new(config.broker_ip1, addr.port().wrapping_add(1))
                    });
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
            self.register_whole_table(i, &requests).await;
        }
    }

    async fn register_whole_table(&mut self, i: usize, requests: &[RemotingCommand]) {
        let addr = self.clients[i].0;
        for (broker, request) in requests.iter().enumerate() {
            match self.invoke(i, request.clone()).await {
                Ok(response) if response.code == response_code::SUCCESS => {
                    tracing::debug!(namesrv = %addr, "registered");
                    self.learn_master(broker, &response).await;
                }
                Ok(response) => {
                    warn!(namesrv = %addr, code = response.code, remark = ?response.remark, "registration refused")
                }
                Err(error) => warn!(namesrv = %addr, %error, "registration failed"),
            }
        }
    }

    /// A slave's registration is answered with its master's addresses (RocketMQ's
    /// `masterAddr` and `haServerAddr`): the shard that copies that master is told.
    async fn learn_master(&self, broker: usize, response: &RemotingCommand) {
        if self.shard.ha.slave().is_none() {
            return;
        }
        let Ok(header) = response.decode_header::<RegisterBrokerResponseHeader>() else {
            return;
        };
        let parse = |text: Option<String>| text.and_then(|t| t.parse::<SocketAddr>().ok());
        let addrs = MasterAddrs {
            broker: parse(header.master_addr),
            ha: parse(header.ha_server_addr),
        };
        if addrs.broker.is_some() || addrs.ha.is_some() {
            self.shard.send_master_addrs(broker, addrs).await;
        }
    }

    /// REGISTER_TOPIC_IN_NAMESRV for `topic`: its queues on every broker this registrar
    /// announces (with a broker per shard, each shard's share; shards without any are left
    /// out).
    fn topic_request(&self, topic: &TopicConfig) -> RemotingCommand {
        let topic = advertised(topic.clone(), self.shard.broker_permission());
        let queue_datas = self
            .brokers
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let share = match self.view_of(i) {
                    Some(view) => view.topic(topic.clone()),
                    None => topic.clone(),
                };
                QueueData {
                    broker_name: name.clone(),
                    perm: share.perm,
                    read_queue_nums: share.read_queue_nums,
                    topic_sys_flag: share.topic_sys_flag,
                    write_queue_nums: share.write_queue_nums,
                }
            })
            .filter(|q| q.read_queue_nums > 0 || q.write_queue_nums > 0)
            .collect();
        let route = TopicRouteData {
            queue_datas,
            ..TopicRouteData::default()
        };
        let header = TopicRequestHeader {
            topic: topic.topic_name.clone(),
            broker_name: None,
        };
        RemotingCommand::request(rc::REGISTER_TOPIC_IN_NAMESRV, &header)
            .with_body(route.encode(JsonStyle::Standard))
    }

    /// Announces changed `topics` to every name server: topic by topic where the name server
    /// takes that, else the whole table.
    async fn register_topics(&mut self, topics: &[TopicConfig]) {
        let requests: Vec<RemotingCommand> = topics.iter().map(|t| self.topic_request(t)).collect();
        for i in 0..self.clients.len() {
            if !self.whole_table_only[i] && self.register_topics_with(i, &requests).await {
                continue;
            }
            let whole = self.register_requests();
            self.register_whole_table(i, &whole).await;
        }
    }

    /// `false` when name server `i` refused a request: it gets the whole table instead.
    async fn register_topics_with(&mut self, i: usize, requests: &[RemotingCommand]) -> bool {
        let addr = self.clients[i].0;
        for request in requests {
            match self.invoke(i, request.clone()).await {
                Ok(response) if response.code == response_code::SUCCESS => {}
                Ok(response) if response.code == response_code::REQUEST_CODE_NOT_SUPPORTED => {
                    info!(namesrv = %addr, "the name server takes no single-topic registration: it gets the whole table");
                    self.whole_table_only[i] = true;
                    return false;
                }
                Ok(response) => {
                    warn!(namesrv = %addr, code = response.code, remark = ?response.remark, "topic registration refused");
                    return false;
                }
                Err(error) => {
                    // Unreachable: the next whole-table registration (every period) retries.
                    warn!(namesrv = %addr, %error, "topic registration failed");
                    return true;
                }
            }
        }
        true
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

    /// After the first registration (which the caller makes before serving): the whole table
    /// every period, and each topic change as it comes; when the shard stops, unregisters.
    pub async fn run(mut self) {
        let period_ms = self.shard.config.register_name_server_period_ms;
        let mut whole_table_due_ms = runtime::now_ms() + period_ms as i64;
        loop {
            // Past what was registered, not what was seen: a change made while the last
            // registration was on its way is registered at once, not a period later.
            let registered = self.shard.topics_registered.get();
            let shard = self.shard.clone();
            let changed = shard.topics_changed.wait_for(registered + 1);
            let stop = shard.tasks.stop_signal();
            let stopping = async {
                stop.wait().await;
                0
            };
            let until_due_ms = (whole_table_due_ms - runtime::now_ms()).max(0) as u64;
            let until_due = Duration::from_millis(until_due_ms);
            runtime::timeout(until_due, futures_lite::future::or(changed, stopping)).await;
            if shard.is_stopping() {
                self.unregister_all().await;
                return;
            }
            // Read before the registration takes its snapshot of the table (no await between).
            let version = shard.topics_changed.get();
            let deltas = std::mem::take(&mut *shard.topic_deltas.borrow_mut());
            if deltas.overflowed || runtime::now_ms() >= whole_table_due_ms {
                self.register_all().await;
                whole_table_due_ms = runtime::now_ms() + period_ms as i64;
            } else if !deltas.topics.is_empty() {
                self.register_topics(&deltas.topics).await;
            }
            shard.topics_registered.advance(version);
        }
    }
}
