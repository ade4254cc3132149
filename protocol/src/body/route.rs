//! Route bodies: `TopicRouteData` (GET_ROUTEINFO_BY_TOPIC) and `ClusterInfo`
//! (GET_BROKER_CLUSTER_INFO), with the `brokerAddrs` key quoting rule of reference §9.9.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::codec::{decode_lenient, BodyError};
use crate::codes::version;
use crate::fastjson;

/// How maps with integer keys are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// Plain fastjson: bare keys (`{0:"addr"}`). What clients older than 4.9.4 receive.
    Fastjson,
    /// Standard JSON with quoted keys, escaped as fastjson's `BrowserCompatible` feature does.
    Standard,
}

impl JsonStyle {
    /// The route data rule: standard JSON for request version >= 401 (4.9.4) or when the client
    /// asked for it, bare keys otherwise (the Go client splits the raw text; C++ parses bare
    /// keys).
    pub fn for_route_request(request_version: i32, accept_standard_json_only: bool) -> JsonStyle {
        if request_version >= version::V4_9_4 || accept_standard_json_only {
            JsonStyle::Standard
        } else {
            JsonStyle::Fastjson
        }
    }
}

/// `QueueData`: one broker's queues of a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub perm: i32,
    pub read_queue_nums: i32,
    /// Named `topicSynFlag` up to 4.8.x; accepted under both names.
    #[serde(alias = "topicSynFlag")]
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

/// `BrokerData`: one broker group (a master and its slaves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    /// brokerId (0 = master) -> `ip:port`.
    pub broker_addrs: BTreeMap<i64, String>,
    pub broker_name: String,
    pub cluster: String,
    pub enable_acting_master: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

impl BrokerData {
    /// The master's address, if the group has one.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&0).map(String::as_str)
    }

    fn write(&self, out: &mut String, style: JsonStyle) {
        out.push_str("{\"brokerAddrs\":");
        match style {
            JsonStyle::Fastjson => fastjson::write_bare_key_map(
                out,
                self.broker_addrs.iter().map(|(k, v)| (*k, v.as_str())),
            ),
            JsonStyle::Standard => {
                // Keys sorted as strings (fastjson MapSortField sorts the quoted keys).
                let sorted: BTreeMap<String, &String> = self
                    .broker_addrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                out.push_str(&json(&sorted));
            }
        }
        out.push_str(",\"brokerName\":");
        out.push_str(&json(&self.broker_name));
        out.push_str(",\"cluster\":");
        out.push_str(&json(&self.cluster));
        out.push_str(",\"enableActingMaster\":");
        out.push_str(if self.enable_acting_master {
            "true"
        } else {
            "false"
        });
        if let Some(zone) = &self.zone_name {
            out.push_str(",\"zoneName\":");
            out.push_str(&json(zone));
        }
        out.push('}');
    }
}

/// `TopicRouteData`: GET_ROUTEINFO_BY_TOPIC response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    pub broker_datas: Vec<BrokerData>,
    /// brokerAddr -> filter server addresses (normally empty).
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
}

impl TopicRouteData {
    /// Encodes in the given style (see [`JsonStyle::for_route_request`]).
    pub fn encode(&self, style: JsonStyle) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("{\"brokerDatas\":[");
        for (i, broker) in self.broker_datas.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            broker.write(&mut out, style);
        }
        out.push_str("],\"filterServerTable\":");
        out.push_str(&json(&self.filter_server_table));
        if let Some(conf) = &self.order_topic_conf {
            out.push_str(",\"orderTopicConf\":");
            out.push_str(&json(conf));
        }
        out.push_str(",\"queueDatas\":");
        out.push_str(&json(&self.queue_datas));
        out.push('}');
        finish(out, style)
    }

    /// Decodes either style.
    pub fn decode(body: &[u8]) -> Result<TopicRouteData, BodyError> {
        decode_lenient("TopicRouteData", body)
    }
}

/// `ClusterInfo`: GET_BROKER_CLUSTER_INFO response body. Java always writes bare keys here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

impl ClusterInfo {
    pub fn encode(&self, style: JsonStyle) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("{\"brokerAddrTable\":{");
        for (i, (name, broker)) in self.broker_addr_table.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json(name));
            out.push(':');
            broker.write(&mut out, style);
        }
        out.push_str("},\"clusterAddrTable\":");
        out.push_str(&json(&self.cluster_addr_table));
        out.push('}');
        finish(out, style)
    }

    pub fn decode(body: &[u8]) -> Result<ClusterInfo, BodyError> {
        decode_lenient("ClusterInfo", body)
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("route data always serializes")
}

fn finish(out: String, style: JsonStyle) -> Vec<u8> {
    match style {
        JsonStyle::Fastjson => out.into_bytes(),
        JsonStyle::Standard => fastjson::browser_compatible(&out).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> TopicRouteData {
        TopicRouteData {
            broker_datas: vec![BrokerData {
                broker_addrs: [
                    (0, "127.0.0.1:10911".to_string()),
                    (1, "127.0.0.1:10921".into()),
                ]
                .into_iter()
                .collect(),
                broker_name: "broker-a".into(),
                cluster: "DefaultCluster".into(),
                enable_acting_master: false,
                zone_name: None,
            }],
            filter_server_table: BTreeMap::new(),
            order_topic_conf: None,
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                perm: 6,
                read_queue_nums: 4,
                topic_sys_flag: 0,
                write_queue_nums: 4,
            }],
        }
    }

    #[test]
    fn old_clients_get_bare_keys_new_ones_standard_json() {
        let bare = String::from_utf8(route().encode(JsonStyle::Fastjson)).unwrap();
        assert_eq!(
            bare,
            r#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
        );
        let standard = String::from_utf8(route().encode(JsonStyle::Standard)).unwrap();
        assert!(standard.contains(r#""brokerAddrs":{"0":"127.0.0.1:10911","1":"127.0.0.1:10921"}"#));
        serde_json::from_str::<serde_json::Value>(&standard).expect("standard form is JSON");
        for text in [bare, standard] {
            assert_eq!(TopicRouteData::decode(text.as_bytes()).unwrap(), route());
        }
    }

    #[test]
    fn go_client_raw_split_of_broker_addrs_works_on_the_bare_form() {
        // The Go client strips the braces, splits on ',' and then on the first ':'.
        let bare = String::from_utf8(route().encode(JsonStyle::Fastjson)).unwrap();
        let start = bare.find("\"brokerAddrs\":{").unwrap() + "\"brokerAddrs\":{".len();
        let end = start + bare[start..].find('}').unwrap();
        let pairs: Vec<(String, String)> = bare[start..end]
            .split(',')
            .map(|p| {
                let (k, v) = p.split_once(':').unwrap();
                (k.replace('"', ""), v.replace('"', ""))
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("0".to_string(), "127.0.0.1:10911".to_string()),
                ("1".to_string(), "127.0.0.1:10921".to_string())
            ]
        );
    }

    #[test]
    fn standard_form_sorts_keys_as_strings_and_escapes_like_browser_compatible() {
        let mut r = route();
        r.broker_datas[0].broker_addrs = [(2, "h/2".to_string()), (10, "h10".into())]
            .into_iter()
            .collect();
        r.broker_datas[0].broker_name = "bé".into();
        let text = String::from_utf8(r.encode(JsonStyle::Standard)).unwrap();
        assert!(text.contains(r#"{"10":"h10","2":"h\/2"}"#), "{text}");
        assert!(text.contains(r#""brokerName":"b\u00E9""#), "{text}");
        assert_eq!(TopicRouteData::decode(text.as_bytes()).unwrap(), r);
    }

    #[test]
    fn pre_4_9_queue_data_name_is_accepted() {
        let text = br#"{"brokerDatas":[],"queueDatas":[{"brokerName":"b","perm":6,"readQueueNums":1,"topicSynFlag":2,"writeQueueNums":1}]}"#;
        assert_eq!(
            TopicRouteData::decode(text).unwrap().queue_datas[0].topic_sys_flag,
            2
        );
    }

    #[test]
    fn cluster_info_round_trips_in_the_bare_form() {
        let mut info = ClusterInfo::default();
        let broker = route().broker_datas[0].clone();
        info.cluster_addr_table
            .entry(broker.cluster.clone())
            .or_default()
            .insert(broker.broker_name.clone());
        info.broker_addr_table
            .insert(broker.broker_name.clone(), broker);
        let text = info.encode(JsonStyle::Fastjson);
        assert!(String::from_utf8_lossy(&text).contains("{0:\"127.0.0.1:10911\""));
        assert_eq!(ClusterInfo::decode(&text).unwrap(), info);
    }
}
