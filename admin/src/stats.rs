//! statsAll: per topic and consumer group, the backlog, the last minute's TPS in and out and the
//! last day's messages in and out, from each master's VIEW_BROKER_STATS_DATA (TOPIC_PUT_NUMS,
//! GROUP_GET_NUMS), QUERY_TOPIC_CONSUME_BY_WHO and GET_CONSUME_STATS, as mqadmin's statsAll.

use std::collections::BTreeSet;

use serde_json::json;
use thruster_protocol::body::admin::{BrokerStatsData, ConsumeStats, GroupList};
use thruster_protocol::body::decode_lenient;
use thruster_protocol::header::admin::{
    GetConsumeStatsRequestHeader, TopicRequestHeader, ViewBrokerStatsDataRequestHeader,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};

use crate::namesrv::NameServers;
use crate::output::{Output, Table};
use crate::remote::Remote;
use crate::AdminError;

/// One stats item of one broker; `None` when the broker has none (nothing counted yet).
fn view(addr: &str, name: &str, key: &str) -> Result<Option<BrokerStatsData>, AdminError> {
    let request = RemotingCommand::request(
        rc::VIEW_BROKER_STATS_DATA,
        &ViewBrokerStatsDataRequestHeader {
            stats_name: name.to_owned(),
            stats_key: key.to_owned(),
        },
    );
    let response = Remote::connect(addr)?.invoke(request)?;
    if response.code != response_code::SUCCESS {
        return Ok(None);
    }
    Ok(Some(decode_lenient("broker stats data", &response.body)?))
}

/// mqadmin's `compute24HourSum`: the day's sum, else the hour's, else the minute's.
fn day_sum(data: &BrokerStatsData) -> i64 {
    [
        data.stats_day.sum,
        data.stats_hour.sum,
        data.stats_minute.sum,
    ]
    .into_iter()
    .find(|sum| *sum != 0)
    .unwrap_or(0)
}

/// (minute TPS, day's messages) of one item, added over `brokers`.
fn traffic(brokers: &[String], name: &str, key: &str) -> Result<(f64, i64), AdminError> {
    let (mut tps, mut day) = (0.0, 0);
    for addr in brokers {
        if let Some(data) = view(addr, name, key)? {
            tps += data.stats_minute.tps;
            day += day_sum(&data);
        }
    }
    Ok((tps, day))
}

/// Groups that consume `topic`, by any of its brokers.
fn consumers(brokers: &[String], topic: &str) -> Result<BTreeSet<String>, AdminError> {
    let mut groups = BTreeSet::new();
    for addr in brokers {
        let request = RemotingCommand::request(
            rc::QUERY_TOPIC_CONSUME_BY_WHO,
            &TopicRequestHeader {
                topic: topic.to_owned(),
                broker_name: None,
            },
        );
        let response = Remote::connect(addr)?.invoke(request)?;
        if response.code == response_code::SUCCESS {
            let list: GroupList = decode_lenient("group list", &response.body)?;
            groups.extend(list.group_list);
        }
    }
    Ok(groups)
}

/// The group's backlog in the topic over `brokers` (negative counts as 0, as mqadmin's).
fn backlog(brokers: &[String], group: &str, topic: &str) -> Result<i64, AdminError> {
    let mut diff = 0;
    for addr in brokers {
        let request = RemotingCommand::request(
            rc::GET_CONSUME_STATS,
            &GetConsumeStatsRequestHeader {
                consumer_group: group.to_owned(),
                topic: Some(topic.to_owned()),
            },
        );
        let response = Remote::connect(addr)?.invoke(request)?;
        if response.code == response_code::SUCCESS {
            diff += ConsumeStats::decode(&response.body)?.total_diff();
        }
    }
    Ok(diff.max(0))
}

pub fn stats_all(
    ns: &NameServers,
    topic: Option<&str>,
    active_only: bool,
) -> Result<Output, AdminError> {
    let topics: Vec<String> = match topic {
        Some(topic) => vec![topic.to_owned()],
        None => ns
            .topic_list()?
            .topic_list
            .into_iter()
            .filter(|t| !t.starts_with("%RETRY%") && !t.starts_with("%DLQ%"))
            .collect(),
    };
    let mut table = Table::new(&[
        "#Topic",
        "#Consumer Group",
        "#Accumulation",
        "#InTPS",
        "#OutTPS",
        "#InMsg24Hour",
        "#OutMsg24Hour",
    ]);
    let mut rows = Vec::new();
    for topic in topics {
        let Ok(masters) = ns.topic_masters(&topic) else {
            continue; // no route (mqadmin skips what it cannot read)
        };
        let brokers: Vec<String> = masters.into_iter().map(|(_, addr)| addr).collect();
        let (in_tps, in_day) = traffic(&brokers, "TOPIC_PUT_NUMS", &topic)?;
        let groups = consumers(&brokers, &topic)?;
        if groups.is_empty() {
            if !active_only || in_day > 0 {
                table.row(vec![
                    topic.clone(),
                    String::new(),
                    "0".into(),
                    format!("{in_tps:.2}"),
                    String::new(),
                    in_day.to_string(),
                    "NO_CONSUMER".into(),
                ]);
                rows.push(json!({ "topic": topic, "inTps": in_tps, "inMsg24Hour": in_day }));
            }
            continue;
        }
        for group in groups {
            let key = format!("{topic}@{group}");
            let (out_tps, out_day) = traffic(&brokers, "GROUP_GET_NUMS", &key)?;
            let accumulation = backlog(&brokers, &group, &topic)?;
            if active_only && in_day == 0 && out_day == 0 {
                continue;
            }
            table.row(vec![
                topic.clone(),
                group.clone(),
                accumulation.to_string(),
                format!("{in_tps:.2}"),
                format!("{out_tps:.2}"),
                in_day.to_string(),
                out_day.to_string(),
            ]);
            rows.push(json!({
                "topic": topic, "group": group, "accumulation": accumulation,
                "inTps": in_tps, "outTps": out_tps,
                "inMsg24Hour": in_day, "outMsg24Hour": out_day,
            }));
        }
    }
    Ok(Output::table(table, serde_json::Value::Array(rows)))
}
