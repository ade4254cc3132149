//! topicList, topicRoute, topicStatus, updateTopic, deleteTopic, cleanUnusedTopic.

use serde_json::{json, Value};
use thruster_protocol::body::admin::TopicStatsTable;
use thruster_protocol::body::JsonStyle;
use thruster_protocol::header::admin::{CreateTopicRequestHeader, TopicRequestHeader};
use thruster_protocol::header::EmptyHeader;
use thruster_protocol::{request_code as rc, RemotingCommand};

use crate::namesrv::{targets, NameServers};
use crate::output::{time_text, Output, Table};
use crate::remote::Remote;
use crate::{AdminError, Target};

pub fn topic_list(ns: &NameServers) -> Result<Output, AdminError> {
    let list = ns.topic_list()?;
    let text: String = list.topic_list.iter().map(|t| format!("{t}\n")).collect();
    Ok(Output::text(text, json!(list.topic_list)))
}

pub fn topic_route(ns: &NameServers, topic: &str) -> Result<Output, AdminError> {
    let route = ns.route(topic)?;
    let standard = route.encode(JsonStyle::Standard);
    let value: Value = serde_json::from_slice(&standard)
        .map_err(|e| AdminError(format!("route of {topic} is not JSON: {e}")))?;
    let text = serde_json::to_string_pretty(&value).expect("JSON values print") + "\n";
    Ok(Output::text(text, value))
}

pub fn topic_status(ns: &NameServers, topic: &str) -> Result<Output, AdminError> {
    let mut table = Table::new(&[
        "#Broker Name",
        "#QID",
        "#Min Offset",
        "#Max Offset",
        "#Last Updated",
    ]);
    let mut rows = Vec::new();
    for (name, addr) in ns.topic_masters(topic)? {
        let request = RemotingCommand::request(
            rc::GET_TOPIC_STATS_INFO,
            &TopicRequestHeader {
                topic: topic.to_owned(),
                broker_name: None,
            },
        );
        let response = Remote::connect(&addr)?.call(request, "topic stats")?;
        let stats = TopicStatsTable::decode(&response.body)?;
        for (queue, offsets) in &stats.offset_table {
            table.row(vec![
                name.clone(),
                queue.queue_id.to_string(),
                offsets.min_offset.to_string(),
                offsets.max_offset.to_string(),
                time_text(offsets.last_update_timestamp),
            ]);
            rows.push(json!({
                "brokerName": queue.broker_name, "queueId": queue.queue_id,
                "minOffset": offsets.min_offset, "maxOffset": offsets.max_offset,
                "lastUpdateTimestamp": offsets.last_update_timestamp,
            }));
        }
    }
    Ok(Output::table(table, Value::Array(rows)))
}

pub struct TopicSettings {
    pub topic: String,
    pub read_queues: i32,
    pub write_queues: i32,
    pub perm: i32,
    pub order: bool,
}

pub fn update_topic(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
    settings: &TopicSettings,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut done = Vec::new();
    for (_, addr) in targets(ns, target)? {
        let request = RemotingCommand::request(
            rc::UPDATE_AND_CREATE_TOPIC,
            &CreateTopicRequestHeader {
                topic: settings.topic.clone(),
                default_topic: "TBW102".into(),
                read_queue_nums: settings.read_queues,
                write_queue_nums: settings.write_queues,
                perm: settings.perm,
                topic_filter_type: "SINGLE_TAG".into(),
                topic_sys_flag: Some(0),
                order: settings.order,
                attributes: None,
                force: None,
            },
        );
        Remote::connect(&addr)?.call(request, "creating the topic")?;
        text.push_str(&format!("create topic to {addr} success.\n"));
        done.push(addr);
    }
    let json = json!({
        "topic": settings.topic, "readQueueNums": settings.read_queues,
        "writeQueueNums": settings.write_queues, "perm": settings.perm, "brokers": done,
    });
    Ok(Output::text(text, json))
}

pub fn delete_topic(ns: &NameServers, cluster: &str, topic: &str) -> Result<Output, AdminError> {
    let mut brokers = Vec::new();
    for (_, addr) in ns.cluster_masters(cluster)? {
        let request = RemotingCommand::request(
            rc::DELETE_TOPIC_IN_BROKER,
            &TopicRequestHeader {
                topic: topic.to_owned(),
                broker_name: None,
            },
        );
        Remote::connect(&addr)?.call(request, "deleting the topic")?;
        brokers.push(addr);
    }
    ns.delete_topic(topic, cluster)?;
    let text = format!("delete topic [{topic}] from cluster [{cluster}] success.\n");
    Ok(Output::text(
        text,
        json!({ "topic": topic, "cluster": cluster, "brokers": brokers }),
    ))
}

/// CLEAN_UNUSED_TOPIC on each broker: the ConsumeQueues of topics a broker no longer has.
pub fn clean_unused_topic(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut brokers = Vec::new();
    for (_, addr) in targets(ns, target)? {
        let request = RemotingCommand::request(rc::CLEAN_UNUSED_TOPIC, &EmptyHeader {});
        Remote::connect(&addr)?.call(request, "cleaning unused topics")?;
        text.push_str(&format!("clean unused topics on {addr} success.\n"));
        brokers.push(addr);
    }
    Ok(Output::text(text, json!({ "brokers": brokers })))
}
