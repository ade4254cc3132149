//! QUERY_MESSAGE (by key, the index of every shard of the broker the client sees) and
//! VIEW_MESSAGE_BY_ID (one record, on the shard whose id its CommitLog offset carries).

use thruster_protocol::header::query::{
    QueryMessageRequestHeader, QueryMessageResponseHeader, ViewMessageRequestHeader,
    UNIQUE_KEY_QUERY,
};
use thruster_protocol::{response_code, RemotingCommand};

use super::{BrokerProcessor, Handled};
use crate::remoting::{BodyPart, Failure, Reply};
use crate::shard::{Call, CallReply, Shard};

/// `defaultQueryMaxNum`: what a UNIQ_KEY query is limited to.
const QUERY_MAX_NUM_DEFAULT: usize = 32;
/// Hard cap on records one query returns (the frame limit bounds the bytes too).
const QUERY_MAX_NUM_LIMIT: usize = 64;

pub async fn query_message(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let header: QueryMessageRequestHeader = request.decode_header()?;
    let max_num = if request.ext_fields.get(UNIQUE_KEY_QUERY) == Some("true") {
        QUERY_MAX_NUM_DEFAULT
    } else {
        (header.max_num.max(1) as usize).min(QUERY_MAX_NUM_LIMIT)
    };
    let mut records = Vec::new();
    let mut last_update_ms = 0i64;
    let mut last_update_offset = 0u64;
    for to in shard.broker_shards() {
        let call = Call::QueryByKey {
            topic: header.topic.clone(),
            key: header.key.clone(),
            max_num,
            begin_ms: header.begin_timestamp,
            end_ms: header.end_timestamp,
        };
        if let CallReply::Records {
            records: found,
            index_last_update_ms,
            index_last_update_offset,
        } = shard.call(processor, to, call).await
        {
            records.extend(found);
            last_update_ms = last_update_ms.max(index_last_update_ms);
            last_update_offset = last_update_offset.max(index_last_update_offset);
        }
    }
    records.truncate(max_num);
    if records.is_empty() {
        return Err(Failure::new(
            response_code::QUERY_NOT_FOUND,
            "can not find message, maybe time range not correct",
        ));
    }
    let command = request.success().with_header(&QueryMessageResponseHeader {
        index_last_update_timestamp: last_update_ms,
        index_last_update_phyoffset: last_update_offset as i64,
    });
    Ok(Reply {
        command,
        tail: records.into_iter().map(BodyPart::Bytes).collect(),
    })
}

/// This shard's part of a key query.
pub async fn query_local(
    shard: &Shard,
    topic: &str,
    key: &str,
    max_num: usize,
    begin_ms: i64,
    end_ms: i64,
) -> CallReply {
    match shard
        .store
        .query_by_key(topic, key, max_num, begin_ms, end_ms)
        .await
    {
        Ok((records, index_last_update_ms, index_last_update_offset)) => CallReply::Records {
            records,
            index_last_update_ms,
            index_last_update_offset,
        },
        Err(error) => {
            tracing::warn!(shard = shard.id, topic, key, %error, "index query failed");
            CallReply::Records {
                records: Vec::new(),
                index_last_update_ms: 0,
                index_last_update_offset: 0,
            }
        }
    }
}

pub async fn view_message_by_id(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let header: ViewMessageRequestHeader = request.decode_header()?;
    let record = processor
        .shard
        .store
        .read_record(header.offset.max(0) as u64)
        .await?
        .ok_or_else(|| {
            Failure::system(format!(
                "can not find message by the offset, {}",
                header.offset
            ))
        })?;
    Ok(request.success().with_body(record).into())
}
