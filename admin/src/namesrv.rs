//! Asking the name servers: cluster info, routes, topic lists, and which brokers a `-b`/`-c`
//! target means.

use thruster_protocol::body::{decode_lenient, ClusterInfo, TopicList, TopicRouteData};
use thruster_protocol::header::namesrv::{
    DeleteTopicFromNamesrvRequestHeader, GetRouteInfoRequestHeader,
};
use thruster_protocol::header::EmptyHeader;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};

use crate::remote::Remote;
use crate::{AdminError, Target};

pub struct NameServers {
    addrs: Vec<String>,
}

/// The master's address of a broker (id 0).
pub fn master(broker: &thruster_protocol::body::BrokerData) -> Option<&String> {
    broker.broker_addrs.get(&0)
}

impl NameServers {
    pub fn new(addrs: Option<&str>) -> Result<NameServers, AdminError> {
        let addrs: Vec<String> = addrs
            .unwrap_or_default()
            .split([';', ','])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(AdminError(
                "no name server address: pass -n host:port (or set NAMESRV_ADDR)".into(),
            ));
        }
        Ok(NameServers { addrs })
    }

    /// Sends `request` to the first name server that answers.
    fn ask(&self, request: &RemotingCommand) -> Result<RemotingCommand, AdminError> {
        let mut last = None;
        for addr in &self.addrs {
            match Remote::connect(addr).and_then(|mut r| r.invoke(request.clone())) {
                Ok(response) => return Ok(response),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("at least one name server"))
    }

    pub fn cluster_info(&self) -> Result<ClusterInfo, AdminError> {
        let request = RemotingCommand::request(rc::GET_BROKER_CLUSTER_INFO, &EmptyHeader {});
        let response = self.ask(&request)?;
        if response.code != response_code::SUCCESS {
            return Err(AdminError(format!(
                "cluster info refused: {}",
                response.remark.unwrap_or_default()
            )));
        }
        Ok(ClusterInfo::decode(&response.body)?)
    }

    /// `topic`'s route; an error that says so when the name servers have none.
    pub fn route(&self, topic: &str) -> Result<TopicRouteData, AdminError> {
        let request = RemotingCommand::request(
            rc::GET_ROUTEINFO_BY_TOPIC,
            &GetRouteInfoRequestHeader {
                topic: topic.to_owned(),
                accept_standard_json_only: Some(true),
            },
        );
        let response = self.ask(&request)?;
        if response.code != response_code::SUCCESS {
            return Err(AdminError(format!(
                "no route for topic {topic}: {} (does the topic exist? see topicList)",
                response.remark.unwrap_or_default()
            )));
        }
        Ok(TopicRouteData::decode(&response.body)?)
    }

    /// The master addresses of `topic`'s brokers, with their names.
    pub fn topic_masters(&self, topic: &str) -> Result<Vec<(String, String)>, AdminError> {
        let route = self.route(topic)?;
        Ok(route
            .broker_datas
            .iter()
            .filter_map(|b| master(b).map(|addr| (b.broker_name.clone(), addr.clone())))
            .collect())
    }

    pub fn topic_list(&self) -> Result<TopicList, AdminError> {
        let request =
            RemotingCommand::request(rc::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, &EmptyHeader {});
        let response = self.ask(&request)?;
        if response.code != response_code::SUCCESS {
            return Err(AdminError(format!(
                "topic list refused: {}",
                response.remark.unwrap_or_default()
            )));
        }
        Ok(decode_lenient("topic list", &response.body)?)
    }

    /// DELETE_TOPIC_IN_NAMESRV on every name server.
    pub fn delete_topic(&self, topic: &str, cluster: &str) -> Result<(), AdminError> {
        for addr in &self.addrs {
            let request = RemotingCommand::request(
                rc::DELETE_TOPIC_IN_NAMESRV,
                &DeleteTopicFromNamesrvRequestHeader {
                    topic: topic.to_owned(),
                    cluster_name: Some(cluster.to_owned()),
                },
            );
            Remote::connect(addr)?.call(request, "deleting the topic from the name server")?;
        }
        Ok(())
    }

    /// The master brokers of `cluster`: (name, address).
    pub fn cluster_masters(&self, cluster: &str) -> Result<Vec<(String, String)>, AdminError> {
        let info = self.cluster_info()?;
        let names = info.cluster_addr_table.get(cluster).ok_or_else(|| {
            let known: Vec<&String> = info.cluster_addr_table.keys().collect();
            AdminError(format!(
                "no cluster named {cluster}; the name servers know {known:?}"
            ))
        })?;
        Ok(names
            .iter()
            .filter_map(|name| {
                let broker = info.broker_addr_table.get(name)?;
                master(broker).map(|addr| (name.clone(), addr.clone()))
            })
            .collect())
    }
}

/// The brokers a `-b`/`-c` target names: (name or address, address).
pub fn targets(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
) -> Result<Vec<(String, String)>, AdminError> {
    match (&target.broker, &target.cluster) {
        (Some(addr), _) => Ok(vec![(addr.clone(), addr.clone())]),
        (None, Some(cluster)) => match ns {
            Ok(ns) => ns.cluster_masters(cluster),
            Err(error) => Err(AdminError(format!("-c needs the name servers: {error}"))),
        },
        (None, None) => Err(AdminError(
            "say which broker: -b host:port, or -c clusterName for all its masters".into(),
        )),
    }
}
