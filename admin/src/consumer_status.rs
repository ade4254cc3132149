//! consumerStatus: what a group's consumers say they are doing (GET_CONSUMER_RUNNING_INFO,
//! which a broker forwards to the consumer and answers with the consumer's own answer).

use serde_json::{json, Value};
use thruster_protocol::body::running_info::ConsumerRunningInfo;
use thruster_protocol::header::admin::ConsumerClientRequestHeader;
use thruster_protocol::{request_code as rc, RemotingCommand};

use crate::group::{consumer_connections, group_broker};
use crate::namesrv::NameServers;
use crate::output::{time_text, Output, Table};
use crate::remote::Remote;
use crate::AdminError;

/// consumerStatus's flags, as mqadmin's.
pub struct StatusQuery<'a> {
    pub group: &'a str,
    pub client_id: Option<&'a str>,
    /// Ask through this broker instead of the group's first.
    pub broker: Option<&'a str>,
    pub jstack: bool,
}

pub fn consumer_status(ns: &NameServers, query: &StatusQuery) -> Result<Output, AdminError> {
    let broker = match query.broker {
        Some(broker) => broker.to_owned(),
        None => group_broker(ns, query.group)?,
    };
    if let Some(client_id) = query.client_id {
        let info = running_info(&broker, query.group, client_id, query.jstack)?;
        return Ok(Output::text(format_info(&info), info_json(&info)));
    }
    let connections = consumer_connections(&broker, query.group)?;
    let mut table = Table::new(&[
        "#Index",
        "#ClientId",
        "#Version",
        "#Subscriptions",
        "#Queues",
    ]);
    let mut consumers = Vec::new();
    let mut subscriptions = Vec::new();
    let mut errors = String::new();
    // A client connected to several shard-brokers is listed once per connection: ask it once.
    let mut asked = std::collections::BTreeSet::new();
    for connection in &connections.connection_set {
        if !asked.insert(connection.client_id.clone()) {
            continue;
        }
        let info = match running_info(&broker, query.group, &connection.client_id, query.jstack) {
            Ok(info) => info,
            Err(error) => {
                errors.push_str(&format!("{}: {error}\n", connection.client_id));
                continue;
            }
        };
        table.row(vec![
            (consumers.len() + 1).to_string(),
            connection.client_id.clone(),
            connection.version.to_string(),
            info.subscription_set.len().to_string(),
            info.mq_table.len().to_string(),
        ]);
        subscriptions.push(info.subscription_set.clone());
        consumers.push(json!({
            "clientId": connection.client_id,
            "version": connection.version,
            "runningInfo": info_json(&info),
        }));
    }
    // As mqadmin: the same subscription in every member, compared without subVersion.
    let key = |set: &Vec<thruster_protocol::body::SubscriptionData>| {
        set.iter()
            .map(|s| (s.topic.clone(), s.sub_string.clone()))
            .collect::<Vec<_>>()
    };
    let same = subscriptions.windows(2).all(|w| key(&w[0]) == key(&w[1]));
    let mut text = table.render();
    if !consumers.is_empty() {
        text.push_str(if same {
            "\nSame subscription in the same group of consumer\n"
        } else {
            "\nWARN: Different subscription in the same group of consumer!!!\n"
        });
    }
    text.push_str(&errors);
    Ok(Output::text(
        text,
        json!({ "group": query.group, "sameSubscription": same, "consumers": consumers }),
    ))
}

/// GET_CONSUMER_RUNNING_INFO of `client_id` in `group`, through the broker `addr`.
fn running_info(
    addr: &str,
    group: &str,
    client_id: &str,
    jstack: bool,
) -> Result<ConsumerRunningInfo, AdminError> {
    let request = RemotingCommand::request(
        rc::GET_CONSUMER_RUNNING_INFO,
        &ConsumerClientRequestHeader {
            consumer_group: group.to_owned(),
            client_id: Some(client_id.to_owned()),
            jstack_enable: Some(jstack),
            msg_id: None,
            broker_name: None,
        },
    );
    let response = Remote::connect(addr)?.call(request, "consumer running info")?;
    Ok(ConsumerRunningInfo::decode(&response.body)?)
}

/// The running info as JSON people can read (`mqTable` as a list: its keys are objects).
fn info_json(info: &ConsumerRunningInfo) -> Value {
    let queues: Vec<Value> = info
        .mq_table
        .iter()
        .map(|(queue, process)| json!({ "messageQueue": queue, "processQueueInfo": process }))
        .collect();
    json!({
        "properties": info.properties,
        "subscriptionSet": info.subscription_set,
        "mqTable": queues,
        "statusTable": info.status_table,
        "jstack": info.jstack,
    })
}

/// Java's `ConsumerRunningInfo.formatString` sections.
fn format_info(info: &ConsumerRunningInfo) -> String {
    let mut out = String::from("#Consumer Properties#\n");
    for (key, value) in &info.properties {
        out.push_str(&format!("{key:<40}: {value}\n"));
    }
    out.push_str("\n\n#Consumer Subscription#\n");
    for (i, s) in info.subscription_set.iter().enumerate() {
        out.push_str(&format!(
            "{:03} Topic: {:<40} ClassFilter: {:<8} SubExpression: {}\n",
            i + 1,
            s.topic,
            s.class_filter_mode,
            s.sub_string
        ));
    }
    out.push_str("\n\n#Consumer Offset#\n");
    let mut offsets = Table::new(&["#Topic", "#Broker Name", "#QID", "#Consumer Offset"]);
    let mut detail = Table::new(&[
        "#Topic",
        "#Broker Name",
        "#QID",
        "#Cached",
        "#CachedMiB",
        "#Locked",
        "#LastPull",
        "#LastConsume",
    ]);
    for (queue, process) in &info.mq_table {
        let id = || {
            vec![
                queue.topic.clone(),
                queue.broker_name.clone(),
                queue.queue_id.to_string(),
            ]
        };
        let mut row = id();
        row.push(process.commit_offset.to_string());
        offsets.row(row);
        let mut row = id();
        row.extend([
            process.cached_msg_count.to_string(),
            process.cached_msg_size_in_mib.to_string(),
            process.locked.to_string(),
            time_text(process.last_pull_timestamp),
            time_text(process.last_consume_timestamp),
        ]);
        detail.row(row);
    }
    out.push_str(&offsets.render());
    out.push_str("\n\n#Consumer MQ Detail#\n");
    out.push_str(&detail.render());
    out.push_str("\n\n#Consumer RT&TPS#\n");
    let mut rates = Table::new(&[
        "#Topic",
        "#Pull RT",
        "#Pull TPS",
        "#Consume RT",
        "#ConsumeOK TPS",
        "#ConsumeFailed TPS",
        "#ConsumeFailedMsgsInHour",
    ]);
    for (topic, s) in &info.status_table {
        rates.row(vec![
            topic.clone(),
            format!("{:.2}", s.pull_rt),
            format!("{:.2}", s.pull_tps),
            format!("{:.2}", s.consume_rt),
            format!("{:.2}", s.consume_ok_tps),
            format!("{:.2}", s.consume_failed_tps),
            s.consume_failed_msgs.to_string(),
        ]);
    }
    out.push_str(&rates.render());
    if let Some(jstack) = &info.jstack {
        out.push_str("\n\n#Consumer jstack#\n");
        out.push_str(jstack);
    }
    out
}
