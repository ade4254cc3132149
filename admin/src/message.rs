//! queryMsgById (VIEW_MESSAGE_BY_ID at the broker the id names), queryMsgByKey and
//! queryMsgByUniqueKey (QUERY_MESSAGE on every broker of the topic).

use serde_json::{json, Value};
use thruster_protocol::header::query::{
    QueryMessageRequestHeader, ViewMessageRequestHeader, UNIQUE_KEY_QUERY,
};
use thruster_protocol::message::{
    decode_offset_msg_id, decode_records, offset_msg_id, parse_properties, DecodedRecord,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};

use crate::namesrv::NameServers;
use crate::output::{time_text, Output, Table};
use crate::remote::Remote;
use crate::AdminError;

fn record_json(record: &DecodedRecord) -> Value {
    json!({
        "offsetMsgId": offset_msg_id(record.store_host, record.physical_offset),
        "topic": record.topic,
        "queueId": record.queue_id,
        "queueOffset": record.queue_offset,
        "commitLogOffset": record.physical_offset,
        "reconsumeTimes": record.reconsume_times,
        "bornTimestamp": record.born_timestamp,
        "storeTimestamp": record.store_timestamp,
        "bornHost": record.born_host.to_string(),
        "storeHost": record.store_host.to_string(),
        "sysFlag": record.sys_flag,
        "properties": parse_properties(&record.properties),
        "body": String::from_utf8_lossy(&record.body),
    })
}

pub fn by_id(msg_id: &str) -> Result<Output, AdminError> {
    let (host, offset) = decode_offset_msg_id(msg_id).ok_or_else(|| {
        AdminError(format!(
            "{msg_id} is not an offset message id (32 hex digits: store host and commit log \
             offset); for a client's unique id use queryMsgByUniqueKey -t topic -i id"
        ))
    })?;
    let request = RemotingCommand::request(
        rc::VIEW_MESSAGE_BY_ID,
        &ViewMessageRequestHeader {
            offset,
            topic: None,
            broker_name: None,
        },
    );
    let response = Remote::connect(&host.to_string())?.call(request, "viewing the message")?;
    let records = decode_records(&response.body, false)
        .map_err(|e| AdminError(format!("the stored message does not decode: {e}")))?;
    let record = records
        .first()
        .ok_or_else(|| AdminError(format!("no message at {msg_id}")))?;
    let properties = parse_properties(&record.properties);
    let mut text = String::new();
    let mut line = |k: &str, v: String| text.push_str(&format!("{k:<20}{v}\n"));
    line("OffsetID:", msg_id.to_owned());
    line("Topic:", record.topic.clone());
    line("Tags:", properties.get("TAGS").cloned().unwrap_or_default());
    line("Keys:", properties.get("KEYS").cloned().unwrap_or_default());
    line("Queue ID:", record.queue_id.to_string());
    line("Queue Offset:", record.queue_offset.to_string());
    line("CommitLog Offset:", record.physical_offset.to_string());
    line("Reconsume Times:", record.reconsume_times.to_string());
    line("Born Timestamp:", time_text(record.born_timestamp));
    line("Store Timestamp:", time_text(record.store_timestamp));
    line("Born Host:", record.born_host.to_string());
    line("Store Host:", record.store_host.to_string());
    line("System Flag:", record.sys_flag.to_string());
    line("Properties:", format!("{properties:?}"));
    line(
        "Message Body:",
        String::from_utf8_lossy(&record.body).into_owned(),
    );
    Ok(Output::text(text, record_json(record)))
}

pub fn by_key(
    ns: &NameServers,
    topic: &str,
    key: &str,
    unique: bool,
) -> Result<Output, AdminError> {
    let mut table = Table::new(&["#Message ID", "#QID", "#Offset", "#Store Time"]);
    let mut found = Vec::new();
    for (_, addr) in ns.topic_masters(topic)? {
        let mut request = RemotingCommand::request(
            rc::QUERY_MESSAGE,
            &QueryMessageRequestHeader {
                topic: topic.to_owned(),
                key: key.to_owned(),
                max_num: 64,
                begin_timestamp: 0,
                end_timestamp: i64::MAX,
                broker_name: None,
            },
        );
        if unique {
            request.ext_fields.insert(UNIQUE_KEY_QUERY, "true");
        }
        let response = Remote::connect(&addr)?.invoke(request)?;
        if response.code == response_code::QUERY_NOT_FOUND {
            continue;
        }
        if response.code != response_code::SUCCESS {
            return Err(AdminError(format!(
                "query at {addr}: code {} {}",
                response.code,
                response.remark.unwrap_or_default()
            )));
        }
        let records = decode_records(&response.body, false)
            .map_err(|e| AdminError(format!("stored messages do not decode: {e}")))?;
        for record in records {
            table.row(vec![
                offset_msg_id(record.store_host, record.physical_offset),
                record.queue_id.to_string(),
                record.queue_offset.to_string(),
                time_text(record.store_timestamp),
            ]);
            found.push(record_json(&record));
        }
    }
    if found.is_empty() {
        let what = if unique { "unique key" } else { "key" };
        return Err(AdminError(format!(
            "no message of topic {topic} with {what} {key} (is the message index on, messageIndexEnable?)"
        )));
    }
    Ok(Output::table(table, Value::Array(found)))
}
