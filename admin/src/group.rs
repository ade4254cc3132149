//! updateSubGroup, deleteSubGroup, consumerProgress, consumerConnection, producerConnection,
//! resetOffsetByTime.

use clap::Args;
use serde_json::json;
use thruster_protocol::body::admin::{ConsumeStats, ConsumerConnection, ProducerConnection};
use thruster_protocol::body::{decode_lenient, encode, SubscriptionGroupConfig};
use thruster_protocol::header::admin::{
    ConsumerGroupRequestHeader, GetConsumeStatsRequestHeader, GroupRequestHeader,
    ProducerGroupRequestHeader, ResetOffsetRequestHeader, TopicRequestHeader,
};
use thruster_protocol::header::offset::{
    OffsetResponseHeader, SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use thruster_protocol::header::EmptyHeader;
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};

use crate::namesrv::{targets, NameServers};
use crate::output::{time_text, Output, Table};
use crate::remote::Remote;
use crate::{AdminError, Target};

/// updateSubGroup's settings (mqadmin's flags; as mqadmin, broadcast and from-min default to
/// false, the rest to RocketMQ's defaults).
#[derive(Args, Debug)]
pub struct GroupSettings {
    #[arg(short = 'g', long = "groupName")]
    pub group: String,
    #[arg(short = 's', long = "consumeEnable", default_value_t = true, action = clap::ArgAction::Set)]
    pub consume_enable: bool,
    #[arg(short = 'm', long = "consumeFromMinEnable", default_value_t = false, action = clap::ArgAction::Set)]
    pub consume_from_min_enable: bool,
    #[arg(short = 'd', long = "consumeBroadcastEnable", default_value_t = false, action = clap::ArgAction::Set)]
    pub consume_broadcast_enable: bool,
    #[arg(short = 'q', long = "retryQueueNums", default_value_t = 1)]
    pub retry_queue_nums: i32,
    #[arg(short = 'r', long = "retryMaxTimes", default_value_t = 16)]
    pub retry_max_times: i32,
    #[arg(short = 'i', long = "brokerId", default_value_t = 0)]
    pub broker_id: i64,
    #[arg(
        short = 'w',
        long = "whichBrokerWhenConsumeSlowly",
        default_value_t = 1
    )]
    pub which_broker_when_consume_slowly: i64,
    #[arg(short = 'a', long = "notifyConsumerIdsChanged", default_value_t = true, action = clap::ArgAction::Set)]
    pub notify_consumer_ids_changed: bool,
}

pub fn update_sub_group(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
    settings: &GroupSettings,
) -> Result<Output, AdminError> {
    let config = SubscriptionGroupConfig {
        broker_id: settings.broker_id,
        consume_broadcast_enable: settings.consume_broadcast_enable,
        consume_enable: settings.consume_enable,
        consume_from_min_enable: settings.consume_from_min_enable,
        group_name: settings.group.clone(),
        notify_consumer_ids_changed_enable: settings.notify_consumer_ids_changed,
        retry_max_times: settings.retry_max_times,
        retry_queue_nums: settings.retry_queue_nums,
        which_broker_when_consume_slowly: settings.which_broker_when_consume_slowly,
    };
    let mut text = String::new();
    let mut brokers = Vec::new();
    for (_, addr) in targets(ns, target)? {
        let request =
            RemotingCommand::request(rc::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &EmptyHeader {})
                .with_body(encode(&config));
        Remote::connect(&addr)?.call(request, "creating the subscription group")?;
        text.push_str(&format!("create subscription group to {addr} success.\n"));
        brokers.push(addr);
    }
    let json =
        json!({ "config": serde_json::to_value(&config).expect("plain data"), "brokers": brokers });
    Ok(Output::text(text, json))
}

pub fn delete_sub_group(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
    group: &str,
    remove_offset: bool,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut brokers = Vec::new();
    for (_, addr) in targets(ns, target)? {
        let request = RemotingCommand::request(
            rc::DELETE_SUBSCRIPTIONGROUP,
            &GroupRequestHeader {
                group_name: group.to_owned(),
                remove_offset: Some(remove_offset),
                clean_offset: Some(remove_offset),
            },
        );
        Remote::connect(&addr)?.call(request, "deleting the subscription group")?;
        text.push_str(&format!(
            "delete subscription group [{group}] from broker [{addr}] success.\n"
        ));
        brokers.push(addr);
    }
    Ok(Output::text(
        text,
        json!({ "group": group, "brokers": brokers }),
    ))
}

/// The brokers a group consumes from: its retry topic's (as mqadmin finds them).
fn group_brokers(ns: &NameServers, group: &str) -> Result<Vec<(String, String)>, AdminError> {
    ns.topic_masters(&format!("%RETRY%{group}")).map_err(|_| {
        AdminError(format!(
            "consumer group {group} is not known to the name servers (no %RETRY%{group} route): \
             has any consumer of it ever connected?"
        ))
    })
}

pub fn consumer_progress(
    ns: &NameServers,
    group: &str,
    topic: Option<&str>,
) -> Result<Output, AdminError> {
    let mut table = Table::new(&[
        "#Topic",
        "#Broker Name",
        "#QID",
        "#Broker Offset",
        "#Consumer Offset",
        "#Diff",
        "#LastTime",
    ]);
    let mut rows = Vec::new();
    let (mut tps, mut total_diff) = (0.0, 0i64);
    for (_, addr) in group_brokers(ns, group)? {
        let request = RemotingCommand::request(
            rc::GET_CONSUME_STATS,
            &GetConsumeStatsRequestHeader {
                consumer_group: group.to_owned(),
                topic: topic.map(str::to_owned),
            },
        );
        let response = Remote::connect(&addr)?.call(request, "consume stats")?;
        let stats = ConsumeStats::decode(&response.body)?;
        tps += stats.consume_tps;
        total_diff += stats.total_diff();
        for (queue, offsets) in &stats.offset_table {
            let diff = offsets.broker_offset - offsets.consumer_offset;
            table.row(vec![
                queue.topic.clone(),
                queue.broker_name.clone(),
                queue.queue_id.to_string(),
                offsets.broker_offset.to_string(),
                offsets.consumer_offset.to_string(),
                diff.to_string(),
                time_text(offsets.last_timestamp),
            ]);
            rows.push(json!({
                "topic": queue.topic, "brokerName": queue.broker_name, "queueId": queue.queue_id,
                "brokerOffset": offsets.broker_offset, "consumerOffset": offsets.consumer_offset,
                "diff": diff, "lastTimestamp": offsets.last_timestamp,
            }));
        }
    }
    let text = format!(
        "{}\nConsume TPS: {tps:.2}\nDiff Total: {total_diff}\n",
        table.render()
    );
    Ok(Output::text(
        text,
        json!({ "group": group, "queues": rows, "consumeTps": tps, "diffTotal": total_diff }),
    ))
}

/// The first broker of a consumer group (its retry topic's first master), as mqadmin asks.
pub fn group_broker(ns: &NameServers, group: &str) -> Result<String, AdminError> {
    let (_, addr) = group_brokers(ns, group)?
        .into_iter()
        .next()
        .ok_or_else(|| AdminError(format!("no broker serves consumer group {group}")))?;
    Ok(addr)
}

/// GET_CONSUMER_CONNECTION_LIST of `group` at the broker `addr`.
pub fn consumer_connections(addr: &str, group: &str) -> Result<ConsumerConnection, AdminError> {
    let request = RemotingCommand::request(
        rc::GET_CONSUMER_CONNECTION_LIST,
        &ConsumerGroupRequestHeader {
            consumer_group: group.to_owned(),
        },
    );
    let response = Remote::connect(addr)?.invoke(request)?;
    if response.code == response_code::CONSUMER_NOT_ONLINE {
        return Err(AdminError(format!(
            "consumer group {group} has no consumer online (start one, or check the group name)"
        )));
    }
    if response.code != response_code::SUCCESS {
        return Err(AdminError(format!(
            "consumer connections at {addr}: code {} {}",
            response.code,
            response.remark.unwrap_or_default()
        )));
    }
    Ok(decode_lenient("consumer connection", &response.body)?)
}

pub fn consumer_connection(ns: &NameServers, group: &str) -> Result<Output, AdminError> {
    let connection = consumer_connections(&group_broker(ns, group)?, group)?;
    let mut table = Table::new(&["#ClientId", "#ClientAddr", "#Language", "#Version"]);
    for c in &connection.connection_set {
        table.row(vec![
            c.client_id.clone(),
            c.client_addr.clone(),
            c.language.clone(),
            c.version.to_string(),
        ]);
    }
    let mut subscriptions = Table::new(&["#Topic", "#SubExpression"]);
    for (topic, data) in &connection.subscription_table {
        subscriptions.row(vec![topic.clone(), data.sub_string.clone()]);
    }
    let text = format!(
        "{}\nBelow is subscription:\n{}\nConsumeType: {}\nMessageModel: {}\nConsumeFromWhere: {}\n",
        table.render(),
        subscriptions.render(),
        connection.consume_type,
        connection.message_model,
        connection.consume_from_where
    );
    let json = serde_json::to_value(&connection).expect("plain data");
    Ok(Output::text(text, json))
}

pub fn producer_connection(
    ns: &NameServers,
    group: &str,
    topic: &str,
) -> Result<Output, AdminError> {
    let mut table = Table::new(&["#ClientId", "#ClientAddr", "#Language", "#Version"]);
    let mut all = Vec::new();
    for (_, addr) in ns.topic_masters(topic)? {
        let request = RemotingCommand::request(
            rc::GET_PRODUCER_CONNECTION_LIST,
            &ProducerGroupRequestHeader {
                producer_group: group.to_owned(),
            },
        );
        let response = Remote::connect(&addr)?.invoke(request)?;
        if response.code != response_code::SUCCESS {
            continue; // this broker has no producer of the group
        }
        let connection: ProducerConnection = decode_lenient("producer connection", &response.body)?;
        for c in connection.connection_set {
            if all.contains(&c) {
                continue;
            }
            table.row(vec![
                c.client_id.clone(),
                c.client_addr.clone(),
                c.language.clone(),
                c.version.to_string(),
            ]);
            all.push(c);
        }
    }
    if all.is_empty() {
        return Err(AdminError(format!(
            "producer group {group} has no producer connected to the brokers of {topic}"
        )));
    }
    Ok(Output::table(
        table,
        serde_json::to_value(&all).expect("plain data"),
    ))
}

/// `ms`, `now`, or mqadmin's `yyyy-MM-dd#HH:mm:ss:SSS` (UTC here).
pub fn parse_timestamp(text: &str) -> Result<i64, AdminError> {
    if text == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| AdminError(e.to_string()))?;
        return Ok(now.as_millis() as i64);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        AdminError(format!(
            "timestamp {text:?}: give milliseconds, `now`, or yyyy-MM-dd#HH:mm:ss:SSS"
        ))
    };
    let (date, time) = text.split_once('#').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 4 {
        return Err(bad());
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    Ok((((days * 24 + t[0]) * 60 + t[1]) * 60 + t[2]) * 1000 + t[3])
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn reset_offset_by_time(
    ns: &NameServers,
    group: &str,
    topic: &str,
    timestamp: &str,
    force: bool,
) -> Result<Output, AdminError> {
    let timestamp = parse_timestamp(timestamp)?;
    let mut table = Table::new(&["#Broker Name", "#QID", "#Offset"]);
    let mut rows = Vec::new();
    let mut offline = false;
    for (name, addr) in ns.topic_masters(topic)? {
        let request = RemotingCommand::request(
            rc::INVOKE_BROKER_TO_RESET_OFFSET,
            &ResetOffsetRequestHeader {
                topic: topic.to_owned(),
                group: group.to_owned(),
                timestamp,
                is_force: force,
            },
        );
        let response = Remote::connect(&addr)?.invoke(request)?;
        let offsets = match response.code {
            response_code::SUCCESS => {
                thruster_protocol::body::admin::ResetOffsetBody::decode(&response.body)?
                    .offset_table
                    .into_iter()
                    .map(|(q, o)| (q.queue_id, o))
                    .collect()
            }
            // As mqadmin: nobody online to tell, so commit the offsets directly.
            response_code::CONSUMER_NOT_ONLINE => {
                offline = true;
                commit_offsets_at(&addr, group, topic, timestamp)?
            }
            code => {
                return Err(AdminError(format!(
                    "reset at {addr}: code {code} {}",
                    response.remark.unwrap_or_default()
                )))
            }
        };
        for (queue_id, offset) in offsets {
            table.row(vec![name.clone(), queue_id.to_string(), offset.to_string()]);
            rows.push(json!({ "brokerName": name, "queueId": queue_id, "offset": offset }));
        }
    }
    let mut text = table.render();
    if offline {
        text.push_str("no consumer online: offsets committed directly\n");
    }
    Ok(Output::text(
        text,
        json!({ "group": group, "topic": topic, "timestamp": timestamp, "offline": offline, "queues": rows }),
    ))
}

/// mqadmin's old reset: per queue of the broker, the offset at `timestamp`, committed.
fn commit_offsets_at(
    addr: &str,
    group: &str,
    topic: &str,
    timestamp: i64,
) -> Result<Vec<(i32, i64)>, AdminError> {
    let mut remote = Remote::connect(addr)?;
    let stats_request = RemotingCommand::request(
        rc::GET_TOPIC_STATS_INFO,
        &TopicRequestHeader {
            topic: topic.to_owned(),
            broker_name: None,
        },
    );
    let stats = thruster_protocol::body::admin::TopicStatsTable::decode(
        &remote.call(stats_request, "topic stats")?.body,
    )?;
    let mut offsets = Vec::new();
    for queue in stats.offset_table.keys() {
        let search = RemotingCommand::request(
            rc::SEARCH_OFFSET_BY_TIMESTAMP,
            &SearchOffsetRequestHeader {
                topic: topic.to_owned(),
                queue_id: queue.queue_id,
                timestamp,
                boundary_type: None,
                broker_name: None,
            },
        );
        let found = remote.call(search, "searching the offset")?;
        let offset = found.decode_header::<OffsetResponseHeader>()?.offset;
        let update = RemotingCommand::request(
            rc::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: group.to_owned(),
                topic: topic.to_owned(),
                queue_id: queue.queue_id,
                commit_offset: offset,
                broker_name: None,
            },
        );
        remote.call(update, "committing the offset")?;
        offsets.push((queue.queue_id, offset));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_mqadmin() {
        assert_eq!(parse_timestamp("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_timestamp("2023-11-14#22:13:20:000").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("now").unwrap() > 1_700_000_000_000);
    }
}
