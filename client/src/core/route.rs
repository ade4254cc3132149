//! What a client needs from a topic's route: the queues it may send to (master brokers with
//! write permission) and read from, and the address of each broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::error::{ClientError, ClientResult};
use super::requests::{AUTO_CREATE_TOPIC, DEFAULT_TOPIC_QUEUE_NUMS};
use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::body::{decode_lenient, perm, TopicRouteData};
use crate::protocol::header::namesrv::GetRouteInfoRequestHeader;
use crate::protocol::{request_code as rc, response_code, RemotingCommand};

/// Broker id of a master.
pub const MASTER_ID: i64 = 0;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRoute {
    /// Queues to send to, in RocketMQ's order: by broker name, then queue id.
    pub publish_queues: Vec<MessageQueue>,
    /// Queues to read, sorted as rebalance sorts them.
    pub subscribe_queues: Vec<MessageQueue>,
    /// Broker name → master address.
    pub masters: BTreeMap<String, String>,
    /// Broker name → where to read and commit offsets: the master, or while it is gone its
    /// first slave (RocketMQ's `findBrokerAddressInSubscribe`).
    pub readers: BTreeMap<String, String>,
    /// Every broker address of the route, masters and slaves (heartbeats go to all).
    pub all_addrs: Vec<String>,
}

impl TopicRoute {
    pub fn from_route_data(topic: &str, data: &TopicRouteData) -> TopicRoute {
        let masters: BTreeMap<String, String> = data
            .broker_datas
            .iter()
            .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_owned())))
            .collect();
        let readers = data
            .broker_datas
            .iter()
            .filter_map(|b| {
                let (_, addr) = b.broker_addrs.iter().next()?; // the lowest id: master first
                Some((b.broker_name.clone(), addr.clone()))
            })
            .collect();
        let mut all_addrs: Vec<String> = data
            .broker_datas
            .iter()
            .flat_map(|b| b.broker_addrs.values().cloned())
            .collect();
        all_addrs.sort();
        all_addrs.dedup();
        let mut queue_datas = data.queue_datas.clone();
        queue_datas.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
        let mut publish_queues = Vec::new();
        let mut subscribe_queues = Vec::new();
        for queue_data in &queue_datas {
            let queue = |queue_id| MessageQueue {
                topic: topic.to_owned(),
                broker_name: queue_data.broker_name.clone(),
                queue_id,
            };
            if perm::is_writeable(queue_data.perm) && masters.contains_key(&queue_data.broker_name)
            {
                publish_queues.extend((0..queue_data.write_queue_nums).map(queue));
            }
            if perm::is_readable(queue_data.perm) {
                subscribe_queues.extend((0..queue_data.read_queue_nums).map(queue));
            }
        }
        subscribe_queues.sort();
        TopicRoute {
            publish_queues,
            subscribe_queues,
            masters,
            readers,
            all_addrs,
        }
    }

    pub fn master_of(&self, broker_name: &str) -> Option<&str> {
        self.masters.get(broker_name).map(String::as_str)
    }

    /// Where to read `broker_name`'s queues (and commit offsets): its master, or its slave
    /// while the master is gone.
    pub fn reader_of(&self, broker_name: &str) -> Option<&str> {
        self.readers.get(broker_name).map(String::as_str)
    }
}

/// GET_ROUTEINFO_BY_TOPIC, asking for standard JSON.
pub fn route_request(topic: &str) -> RemotingCommand {
    RemotingCommand::request(
        rc::GET_ROUTEINFO_BY_TOPIC,
        &GetRouteInfoRequestHeader {
            topic: topic.to_owned(),
            accept_standard_json_only: Some(true),
        },
    )
}

/// The route a name server answered with.
pub fn parse_route_response(topic: &str, response: RemotingCommand) -> ClientResult<TopicRoute> {
    let no_route = |reason: String| ClientError::NoRoute {
        topic: topic.to_owned(),
        reason,
    };
    if response.code != response_code::SUCCESS {
        return Err(no_route(
            response
                .remark
                .unwrap_or_else(|| format!("code {}", response.code)),
        ));
    }
    let data: TopicRouteData =
        decode_lenient("route", &response.body).map_err(|e| no_route(e.to_string()))?;
    Ok(TopicRoute::from_route_data(topic, &data))
}

/// Where a topic's messages can go: its queues and their brokers' masters.
#[derive(Debug, Clone)]
pub struct PublishTargets {
    pub topic: String,
    pub queues: Vec<MessageQueue>,
    /// Broker name → master address.
    pub masters: BTreeMap<String, String>,
}

impl PublishTargets {
    /// The topic's own queues, when its route has any.
    pub fn from_route(topic: &str, route: TopicRoute) -> Option<PublishTargets> {
        (!route.publish_queues.is_empty()).then(|| PublishTargets {
            topic: topic.to_owned(),
            queues: route.publish_queues,
            masters: route.masters,
        })
    }

    /// For a topic not created yet: queues on the brokers that allow auto-creation (the
    /// `TBW102` route), as many as a Java producer asks for; the broker creates the topic on
    /// the first send.
    pub fn from_template(topic: &str, template: TopicRoute) -> ClientResult<PublishTargets> {
        let mut queues: Vec<MessageQueue> = Vec::new();
        for broker_name in template.masters.keys() {
            let count = template
                .publish_queues
                .iter()
                .filter(|q| &q.broker_name == broker_name)
                .count()
                .min(DEFAULT_TOPIC_QUEUE_NUMS as usize);
            queues.extend((0..count as i32).map(|queue_id| MessageQueue {
                topic: topic.to_owned(),
                broker_name: broker_name.clone(),
                queue_id,
            }));
        }
        if queues.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
                reason: format!("no route, and no broker offers {AUTO_CREATE_TOPIC}"),
            });
        }
        Ok(PublishTargets {
            topic: topic.to_owned(),
            queues,
            masters: template.masters,
        })
    }

    /// The master address of `queue`'s broker.
    pub fn addr_of(&self, queue: &MessageQueue) -> ClientResult<SocketAddr> {
        let no_route = |reason: String| ClientError::NoRoute {
            topic: self.topic.clone(),
            reason,
        };
        let addr = self
            .masters
            .get(&queue.broker_name)
            .ok_or_else(|| no_route(format!("broker {} has no master", queue.broker_name)))?;
        addr.parse()
            .map_err(|_| no_route(format!("bad broker address {addr}")))
    }

    /// Round-robin from `rotation`, skipping `avoid_broker` when another broker exists.
    pub fn pick(&self, rotation: usize, avoid_broker: Option<&str>) -> MessageQueue {
        assert!(!self.queues.is_empty(), "targets always have queues");
        let n = self.queues.len();
        if let Some(avoid) = avoid_broker {
            for i in 0..n {
                let queue = &self.queues[(rotation + i) % n];
                if queue.broker_name != avoid {
                    return queue.clone();
                }
            }
        }
        self.queues[rotation % n].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::body::{BrokerData, QueueData};

    #[test]
    fn only_writable_masters_take_sends_and_readable_queues_are_read() {
        let data = TopicRouteData {
            broker_datas: vec![
                BrokerData {
                    broker_name: "b".into(),
                    broker_addrs: [(0, "127.0.0.1:2".to_string())].into_iter().collect(),
                    ..BrokerData::default()
                },
                BrokerData {
                    broker_name: "a".into(),
                    broker_addrs: [(0, "127.0.0.1:1".to_string())].into_iter().collect(),
                    ..BrokerData::default()
                },
                BrokerData {
                    broker_name: "slave-only".into(),
                    broker_addrs: [(1, "127.0.0.1:3".to_string())].into_iter().collect(),
                    ..BrokerData::default()
                },
            ],
            queue_datas: vec![
                QueueData {
                    broker_name: "b".into(),
                    read_queue_nums: 2,
                    write_queue_nums: 2,
                    perm: 6,
                    ..QueueData::default()
                },
                QueueData {
                    broker_name: "a".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: 4,
                    ..QueueData::default()
                },
                QueueData {
                    broker_name: "slave-only".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: 6,
                    ..QueueData::default()
                },
            ],
            ..TopicRouteData::default()
        };
        let route = TopicRoute::from_route_data("T", &data);
        let names = |qs: &[MessageQueue]| -> Vec<(String, i32)> {
            qs.iter()
                .map(|q| (q.broker_name.clone(), q.queue_id))
                .collect()
        };
        assert_eq!(
            names(&route.publish_queues),
            vec![("b".into(), 0), ("b".into(), 1)]
        );
        assert_eq!(
            names(&route.subscribe_queues),
            vec![
                ("a".into(), 0),
                ("b".into(), 0),
                ("b".into(), 1),
                ("slave-only".into(), 0)
            ]
        );
        assert_eq!(route.master_of("a"), Some("127.0.0.1:1"));
        assert_eq!(route.master_of("slave-only"), None);
        assert_eq!(
            route.reader_of("a"),
            Some("127.0.0.1:1"),
            "the master reads"
        );
        assert_eq!(
            route.reader_of("slave-only"),
            Some("127.0.0.1:3"),
            "a slave reads while its master is gone"
        );
        assert_eq!(
            route.all_addrs,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
        let targets = PublishTargets::from_route("T", route.clone()).unwrap();
        assert_eq!(targets.pick(0, None).queue_id, 0);
        assert_eq!(targets.pick(1, None).queue_id, 1);
        assert_eq!(targets.addr_of(&targets.pick(0, None)).unwrap().port(), 2);
        // From the template: the topic's name, at most 4 queues per inheriting broker.
        let template = PublishTargets::from_template("New", route).unwrap();
        assert!(template.queues.iter().all(|q| q.topic == "New"));
        assert_eq!(template.queues.len(), 2);
        assert!(PublishTargets::from_template("New", TopicRoute::default()).is_err());
    }
}
