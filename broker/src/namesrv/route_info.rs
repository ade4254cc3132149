//! The name server's route table, built only from broker registrations.
//!
//! Pure state: no I/O, no clock (callers pass `now_ms`), so every rule is unit-testable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thruster_protocol::body::{
    perm, BrokerData, ClusterInfo, DataVersion, QueueData, TopicConfig,
    TopicConfigSerializeWrapper, TopicList, TopicRouteData,
};

/// RocketMQ's broker channel expiry: 120 s without a registration.
pub const BROKER_EXPIRE_MS_DEFAULT: u64 = 120_000;

/// Topic sys flag bits (`TopicSysFlag`).
const FLAG_UNIT: i32 = 0x1;
const FLAG_UNIT_SUB: i32 = 0x2;

/// A broker process: its cluster and address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerAddrKey {
    pub cluster: String,
    pub addr: String,
}

#[derive(Debug, Clone)]
struct BrokerLive {
    last_update_ms: u64,
    timeout_ms: u64,
    data_version: DataVersion,
    ha_server_addr: String,
    /// The connection the broker last registered over (RocketMQ's channel): when it closes,
    /// the broker is gone at once, not after its timeout.
    channel: Option<u64>,
}

/// One REGISTER_BROKER call.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub cluster: String,
    pub addr: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub ha_server_addr: String,
    /// Topic configs; `None` for a registration without a body.
    pub topics: Option<TopicConfigSerializeWrapper>,
    pub filter_servers: Vec<String>,
    /// Per-broker expiry (5.x `heartbeatTimeoutMillis`); `None` = the default.
    pub timeout_ms: Option<u64>,
    /// The connection it came over (`channel_closed`).
    pub channel: Option<u64>,
}

/// What a registering broker is told: for slaves, where their master is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterResult {
    pub master_addr: Option<String>,
    pub ha_server_addr: Option<String>,
}

#[derive(Debug)]
pub struct RouteInfo {
    /// topic -> brokerName -> queues.
    topic_queues: HashMap<String, BTreeMap<String, QueueData>>,
    broker_addrs: BTreeMap<String, BrokerData>,
    cluster_brokers: BTreeMap<String, BTreeSet<String>>,
    live: HashMap<BrokerAddrKey, BrokerLive>,
    filter_servers: HashMap<String, Vec<String>>,
    expire_ms_default: u64,
}

impl RouteInfo {
    pub fn new(expire_ms_default: u64) -> RouteInfo {
        assert!(expire_ms_default > 0);
        RouteInfo {
            topic_queues: HashMap::new(),
            broker_addrs: BTreeMap::new(),
            cluster_brokers: BTreeMap::new(),
            live: HashMap::new(),
            filter_servers: HashMap::new(),
            expire_ms_default,
        }
    }

    pub fn set_expire_ms_default(&mut self, expire_ms: u64) {
        assert!(expire_ms > 0);
        self.expire_ms_default = expire_ms;
    }

    /// REGISTER_BROKER.
    pub fn register(&mut self, registration: Registration, now_ms: u64) -> RegisterResult {
        let Registration {
            cluster,
            addr,
            broker_name,
            broker_id,
            ha_server_addr,
            topics,
            filter_servers,
            timeout_ms,
            channel,
        } = registration;
        self.cluster_brokers
            .entry(cluster.clone())
            .or_default()
            .insert(broker_name.clone());

        let broker = self
            .broker_addrs
            .entry(broker_name.clone())
            .or_insert_with(|| BrokerData {
                broker_name: broker_name.clone(),
                cluster: cluster.clone(),
                ..BrokerData::default()
            });
        broker.cluster = cluster.clone();
        // One address has one role: a slave promoted to master (or the reverse) re-registers
        // under its new id, and the old id must go.
        broker
            .broker_addrs
            .retain(|id, a| *a != addr || *id == broker_id);
        let first_registration = broker
            .broker_addrs
            .insert(broker_id, addr.clone())
            .is_none();

        let key = BrokerAddrKey {
            cluster: cluster.clone(),
            addr: addr.clone(),
        };
        if let Some(wrapper) = topics {
            let changed = self
                .live
                .get(&key)
                .is_none_or(|live| live.data_version != wrapper.data_version);
            if broker_id == 0 && (changed || first_registration) {
                self.replace_broker_topics(&broker_name, &wrapper.topic_config_table);
            }
            self.live.insert(
                key.clone(),
                BrokerLive {
                    last_update_ms: now_ms,
                    timeout_ms: timeout_ms.unwrap_or(self.expire_ms_default),
                    data_version: wrapper.data_version,
                    ha_server_addr,
                    channel,
                },
            );
        } else {
            let live = self.live.entry(key.clone()).or_insert_with(|| BrokerLive {
                last_update_ms: now_ms,
                timeout_ms: 0,
                data_version: DataVersion::default(),
                ha_server_addr: String::new(),
                channel,
            });
            live.last_update_ms = now_ms;
            live.timeout_ms = timeout_ms.unwrap_or(self.expire_ms_default);
            live.ha_server_addr = ha_server_addr;
            live.channel = channel;
        }
        if filter_servers.is_empty() {
            self.filter_servers.remove(&addr);
        } else {
            self.filter_servers.insert(addr.clone(), filter_servers);
        }

        let mut result = RegisterResult::default();
        if broker_id != 0 {
            if let Some(master_addr) = self.broker_addrs[&broker_name].master_addr() {
                let master_key = BrokerAddrKey {
                    cluster,
                    addr: master_addr.to_owned(),
                };
                result.ha_server_addr =
                    self.live.get(&master_key).map(|l| l.ha_server_addr.clone());
                result.master_addr = Some(master_addr.to_owned());
            }
        }
        result
    }

    /// A master's full topic table replaces what the name server had for that broker name:
    /// topics it no longer has (deleted on the broker) disappear from the routes.
    fn replace_broker_topics(&mut self, broker_name: &str, topics: &BTreeMap<String, TopicConfig>) {
        self.topic_queues.retain(|topic, queues| {
            if !topics.contains_key(topic) {
                queues.remove(broker_name);
            }
            !queues.is_empty()
        });
        for config in topics.values() {
            self.put_queue_data(broker_name, config);
        }
    }

    fn put_queue_data(&mut self, broker_name: &str, config: &TopicConfig) {
        self.topic_queues
            .entry(config.topic_name.clone())
            .or_default()
            .insert(
                broker_name.to_owned(),
                QueueData {
                    broker_name: broker_name.to_owned(),
                    perm: config.perm,
                    read_queue_nums: config.read_queue_nums,
                    topic_sys_flag: config.topic_sys_flag,
                    write_queue_nums: config.write_queue_nums,
                },
            );
    }

    /// REGISTER_TOPIC_IN_NAMESRV: queue data given directly.
    pub fn register_topic(&mut self, topic: &str, queue_datas: &[QueueData]) {
        for queue_data in queue_datas {
            if self.broker_addrs.contains_key(&queue_data.broker_name) {
                self.topic_queues
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(queue_data.broker_name.clone(), queue_data.clone());
            }
        }
    }

    /// UNREGISTER_BROKER.
    pub fn unregister(&mut self, cluster: &str, addr: &str, broker_name: &str, broker_id: i64) {
        self.live.remove(&BrokerAddrKey {
            cluster: cluster.to_owned(),
            addr: addr.to_owned(),
        });
        self.filter_servers.remove(addr);
        let emptied = match self.broker_addrs.get_mut(broker_name) {
            Some(broker) => {
                broker.broker_addrs.remove(&broker_id);
                broker.broker_addrs.is_empty()
            }
            None => false,
        };
        if emptied {
            self.remove_broker_name(cluster, broker_name);
        }
    }

    fn remove_broker_name(&mut self, cluster: &str, broker_name: &str) {
        self.broker_addrs.remove(broker_name);
        if let Some(names) = self.cluster_brokers.get_mut(cluster) {
            names.remove(broker_name);
            if names.is_empty() {
                self.cluster_brokers.remove(cluster);
            }
        }
        self.topic_queues.retain(|_, queues| {
            queues.remove(broker_name);
            !queues.is_empty()
        });
    }

    /// Removes brokers silent for longer than their timeout; returns the removed addresses.
    pub fn scan_not_active(&mut self, now_ms: u64) -> Vec<BrokerAddrKey> {
        let expired: Vec<BrokerAddrKey> = self
            .live
            .iter()
            .filter(|(_, live)| live.last_update_ms.saturating_add(live.timeout_ms) < now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        self.remove_live(&expired);
        expired
    }

    /// The connection `channel` closed: every broker that registered over it is removed at
    /// once (RocketMQ's `onChannelDestroy`), so clients stop routing to a dead master within a
    /// route refresh, and find its slave.
    pub fn channel_closed(&mut self, channel: u64) -> Vec<BrokerAddrKey> {
        let gone: Vec<BrokerAddrKey> = self
            .live
            .iter()
            .filter(|(_, live)| live.channel == Some(channel))
            .map(|(key, _)| key.clone())
            .collect();
        self.remove_live(&gone);
        gone
    }

    fn remove_live(&mut self, keys: &[BrokerAddrKey]) {
        for key in keys {
            self.live.remove(key);
            self.filter_servers.remove(&key.addr);
            let mut emptied = Vec::new();
            for broker in self.broker_addrs.values_mut() {
                if broker.cluster == key.cluster {
                    broker.broker_addrs.retain(|_, a| *a != key.addr);
                    if broker.broker_addrs.is_empty() {
                        emptied.push(broker.broker_name.clone());
                    }
                }
            }
            for broker_name in emptied {
                self.remove_broker_name(&key.cluster, &broker_name);
            }
        }
    }

    /// QUERY_DATA_VERSION: whether `version` differs from the stored one (refreshing liveness),
    /// and the stored one.
    pub fn query_data_version(
        &mut self,
        key: &BrokerAddrKey,
        version: &DataVersion,
        now_ms: u64,
    ) -> (bool, Option<DataVersion>) {
        match self.live.get_mut(key) {
            Some(live) => {
                live.last_update_ms = now_ms;
                (
                    live.data_version != *version,
                    Some(live.data_version.clone()),
                )
            }
            None => (true, None),
        }
    }

    /// GET_ROUTEINFO_BY_TOPIC: `None` unless the topic has queues on a known broker.
    pub fn topic_route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topic_queues.get(topic)?;
        let mut route = TopicRouteData::default();
        for (broker_name, queue_data) in queues {
            route.queue_datas.push(queue_data.clone());
            if let Some(broker) = self.broker_addrs.get(broker_name) {
                for addr in broker.broker_addrs.values() {
                    if let Some(servers) = self.filter_servers.get(addr) {
                        route
                            .filter_server_table
                            .insert(addr.clone(), servers.clone());
                    }
                }
                route.broker_datas.push(broker.clone());
            }
        }
        (!route.queue_datas.is_empty() && !route.broker_datas.is_empty()).then_some(route)
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.broker_addrs.clone(),
            cluster_addr_table: self.cluster_brokers.clone(),
        }
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub fn all_topics(&self) -> TopicList {
        TopicList {
            broker_addr: None,
            topic_list: self.topic_queues.keys().cloned().collect(),
        }
    }

    /// GET_TOPICS_BY_CLUSTER.
    pub fn topics_by_cluster(&self, cluster: &str) -> TopicList {
        let names = self.cluster_brokers.get(cluster);
        let topic_list = self
            .topic_queues
            .iter()
            .filter(|(_, queues)| names.is_some_and(|n| queues.keys().any(|b| n.contains(b))))
            .map(|(topic, _)| topic.clone())
            .collect();
        TopicList {
            broker_addr: None,
            topic_list,
        }
    }

    /// GET_SYSTEM_TOPIC_LIST_FROM_NS: Java lists cluster and broker names (each is also a
    /// topic) and one master address.
    pub fn system_topics(&self) -> TopicList {
        let mut list = TopicList::default();
        for (cluster, names) in &self.cluster_brokers {
            list.topic_list.insert(cluster.clone());
            list.topic_list.extend(names.iter().cloned());
        }
        list.broker_addr = self
            .broker_addrs
            .values()
            .find_map(|b| b.master_addr().map(str::to_owned));
        list
    }

    /// GET_UNIT_TOPIC_LIST / GET_HAS_UNIT_SUB_TOPIC_LIST / GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST.
    pub fn topics_by_flag(&self, want: impl Fn(i32) -> bool) -> TopicList {
        let topic_list = self
            .topic_queues
            .iter()
            .filter(|(_, queues)| {
                queues
                    .values()
                    .next()
                    .is_some_and(|q| want(q.topic_sys_flag))
            })
            .map(|(topic, _)| topic.clone())
            .collect();
        TopicList {
            broker_addr: None,
            topic_list,
        }
    }

    pub fn unit_topics(&self) -> TopicList {
        self.topics_by_flag(|f| f & FLAG_UNIT != 0)
    }

    pub fn has_unit_sub_topics(&self) -> TopicList {
        self.topics_by_flag(|f| f & FLAG_UNIT_SUB != 0)
    }

    pub fn has_unit_sub_ununit_topics(&self) -> TopicList {
        self.topics_by_flag(|f| f & FLAG_UNIT == 0 && f & FLAG_UNIT_SUB != 0)
    }

    /// WIPE_WRITE_PERM_OF_BROKER (`writable = false`) / ADD_WRITE_PERM_OF_BROKER (`true`);
    /// returns the number of topics changed.
    pub fn set_write_perm(&mut self, broker_name: &str, writable: bool) -> i32 {
        let mut count = 0;
        for queues in self.topic_queues.values_mut() {
            if let Some(q) = queues.get_mut(broker_name) {
                q.perm = if writable {
                    q.perm | perm::WRITE
                } else {
                    q.perm & !perm::WRITE
                };
                count += 1;
            }
        }
        count
    }

    /// DELETE_TOPIC_IN_NAMESRV: the whole topic, or only its queues in `cluster`.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) {
        match cluster.filter(|c| !c.is_empty()) {
            None => {
                self.topic_queues.remove(topic);
            }
            Some(cluster) => {
                let names = self
                    .cluster_brokers
                    .get(cluster)
                    .cloned()
                    .unwrap_or_default();
                if let Some(queues) = self.topic_queues.get_mut(topic) {
                    queues.retain(|b, _| !names.contains(b));
                    if queues.is_empty() {
                        self.topic_queues.remove(topic);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(
        name: &str,
        id: i64,
        addr: &str,
        topics: &[(&str, i32)],
        counter: i64,
    ) -> Registration {
        let mut wrapper = TopicConfigSerializeWrapper::default();
        wrapper.data_version.counter = counter;
        for (topic, queues) in topics {
            wrapper.topic_config_table.insert(
                topic.to_string(),
                TopicConfig::new(*topic, *queues, perm::READ_WRITE),
            );
        }
        Registration {
            cluster: "c".into(),
            addr: addr.into(),
            broker_name: name.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            topics: Some(wrapper),
            filter_servers: vec![],
            timeout_ms: None,
            channel: Some(7),
        }
    }

    #[test]
    fn master_and_slave_share_a_route_and_the_slave_learns_its_master() {
        let mut routes = RouteInfo::new(BROKER_EXPIRE_MS_DEFAULT);
        assert_eq!(
            routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 0),
            RegisterResult::default()
        );
        let slave = routes.register(registration("a", 1, "s:1", &[("T", 4)], 1), 0);
        assert_eq!(slave.master_addr.as_deref(), Some("m:1"));
        assert_eq!(slave.ha_server_addr.as_deref(), Some("m:1-ha"));
        let route = routes.topic_route("T").unwrap();
        assert_eq!(route.queue_datas.len(), 1);
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert!(routes.topic_route("U").is_none());
    }

    #[test]
    fn topic_table_follows_the_master_data_version() {
        let mut routes = RouteInfo::new(BROKER_EXPIRE_MS_DEFAULT);
        routes.register(registration("a", 0, "m:1", &[("T", 4), ("U", 2)], 1), 0);
        // Same version: the table is not re-read (Java semantics).
        routes.register(registration("a", 0, "m:1", &[("T", 8)], 1), 1);
        assert_eq!(
            routes.topic_route("T").unwrap().queue_datas[0].write_queue_nums,
            4
        );
        assert!(routes.topic_route("U").is_some());
        // New version: updated, and the dropped topic leaves the routes.
        routes.register(registration("a", 0, "m:1", &[("T", 8)], 2), 2);
        assert_eq!(
            routes.topic_route("T").unwrap().queue_datas[0].write_queue_nums,
            8
        );
        assert!(routes.topic_route("U").is_none());
        // A slave's table never changes routes.
        routes.register(registration("a", 1, "s:1", &[("V", 1)], 9), 3);
        assert!(routes.topic_route("V").is_none());
    }

    #[test]
    fn silent_brokers_expire_and_take_their_topics_with_them() {
        let mut routes = RouteInfo::new(1_000);
        routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 0);
        let mut short = registration("b", 0, "m:2", &[("T", 4)], 1);
        short.timeout_ms = Some(100);
        routes.register(short, 0);
        assert_eq!(routes.topic_route("T").unwrap().broker_datas.len(), 2);
        assert!(
            routes.scan_not_active(100).is_empty(),
            "at the limit is still alive"
        );
        let expired = routes.scan_not_active(101);
        assert_eq!(
            expired,
            vec![BrokerAddrKey {
                cluster: "c".into(),
                addr: "m:2".into()
            }]
        );
        assert_eq!(routes.topic_route("T").unwrap().broker_datas.len(), 1);
        routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 900);
        assert!(
            routes.scan_not_active(1_500).is_empty(),
            "re-registration refreshed it"
        );
        routes.scan_not_active(1_901);
        assert!(routes.topic_route("T").is_none());
        assert!(routes.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn a_closed_connection_removes_the_brokers_registered_over_it_at_once() {
        let mut routes = RouteInfo::new(BROKER_EXPIRE_MS_DEFAULT);
        routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 0);
        let mut slave = registration("a", 1, "s:1", &[("T", 4)], 1);
        slave.channel = Some(8);
        routes.register(slave, 0);
        assert_eq!(routes.channel_closed(99), vec![], "another connection");
        let gone = routes.channel_closed(7);
        assert_eq!(
            gone.iter().map(|k| k.addr.as_str()).collect::<Vec<_>>(),
            ["m:1"]
        );
        let route = routes.topic_route("T").expect("the slave keeps the route");
        assert_eq!(
            route.broker_datas[0].broker_addrs,
            BTreeMap::from([(1, "s:1".to_string())]),
            "only the slave is left"
        );
        routes.channel_closed(8);
        assert!(routes.topic_route("T").is_none());
    }

    #[test]
    fn unregister_and_role_switch() {
        let mut routes = RouteInfo::new(BROKER_EXPIRE_MS_DEFAULT);
        routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 0);
        routes.register(registration("a", 1, "s:1", &[("T", 4)], 1), 0);
        // The slave is promoted: same address, id 0; the old master left.
        routes.unregister("c", "m:1", "a", 0);
        routes.register(registration("a", 0, "s:1", &[("T", 4)], 1), 1);
        let broker = &routes.topic_route("T").unwrap().broker_datas[0];
        assert_eq!(
            broker.broker_addrs.iter().collect::<Vec<_>>(),
            vec![(&0, &"s:1".to_string())]
        );
        routes.unregister("c", "s:1", "a", 0);
        assert!(routes.topic_route("T").is_none());
        assert!(routes.all_topics().topic_list.is_empty());
    }

    #[test]
    fn write_perm_and_topic_deletion_and_listing() {
        let mut routes = RouteInfo::new(BROKER_EXPIRE_MS_DEFAULT);
        routes.register(registration("a", 0, "m:1", &[("T", 4), ("U", 1)], 1), 0);
        assert_eq!(routes.set_write_perm("a", false), 2);
        assert_eq!(
            routes.topic_route("T").unwrap().queue_datas[0].perm,
            perm::READ
        );
        assert_eq!(routes.set_write_perm("a", true), 2);
        assert_eq!(
            routes.topic_route("T").unwrap().queue_datas[0].perm,
            perm::READ_WRITE
        );
        assert_eq!(routes.topics_by_cluster("c").topic_list.len(), 2);
        assert!(routes.topics_by_cluster("x").topic_list.is_empty());
        routes.delete_topic("U", Some("c"));
        routes.delete_topic("T", None);
        assert!(routes.all_topics().topic_list.is_empty());
        let system = routes.system_topics();
        assert!(system.topic_list.contains("c") && system.topic_list.contains("a"));
        assert_eq!(system.broker_addr.as_deref(), Some("m:1"));
    }

    #[test]
    fn data_version_query_refreshes_liveness() {
        let mut routes = RouteInfo::new(1_000);
        routes.register(registration("a", 0, "m:1", &[("T", 4)], 1), 0);
        let key = BrokerAddrKey {
            cluster: "c".into(),
            addr: "m:1".into(),
        };
        let same = DataVersion {
            counter: 1,
            ..DataVersion::default()
        };
        assert!(!routes.query_data_version(&key, &same, 900).0);
        assert!(routes.scan_not_active(1_500).is_empty());
        let other = DataVersion {
            counter: 2,
            ..DataVersion::default()
        };
        assert!(routes.query_data_version(&key, &other, 1_000).0);
    }
}
