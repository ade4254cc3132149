//! What a client needs from a topic's route: the queues it may send to (master brokers with
//! write permission) and read from, and the address of each broker.

use std::collections::BTreeMap;

use crate::protocol::body::heartbeat::MessageQueue;
use crate::protocol::body::{perm, TopicRouteData};

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
}

impl TopicRoute {
    pub fn from_route_data(topic: &str, data: &TopicRouteData) -> TopicRoute {
        let masters: BTreeMap<String, String> = data
            .broker_datas
            .iter()
            .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_owned())))
            .collect();
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
        }
    }

    pub fn master_of(&self, broker_name: &str) -> Option<&str> {
        self.masters.get(broker_name).map(String::as_str)
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
    }
}
