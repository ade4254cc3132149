//! Transactional messages (RocketMQ 4.x): half messages, END_TRANSACTION (37) and the
//! check-back (CHECK_TRANSACTION_STATE, 39).
//!
//! - A send whose properties say `TRAN_MSG=true` is stored as a half message in
//!   `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 of the shard that received it, with `REAL_TOPIC`,
//!   `REAL_QID` and `__transactionId__` added and its sysFlag's transaction type cleared; no
//!   consumer sees it. The send's answer names it (its offsetMsgId and half-queue offset are
//!   what the producer's END_TRANSACTION carries back).
//! - END_TRANSACTION goes to the shard whose CommitLog holds the named record (the offset's top
//!   byte; one hop in one-name mode, none with a broker per shard). A commit stores the message
//!   in its real topic and queue (properties kept, transaction properties removed, sysFlag
//!   COMMIT), then an op record in `RMQ_SYS_TRANS_OP_HALF_TOPIC`; a rollback stores the op
//!   record only. A decision for a message not waiting (decided, given up, unknown) is
//!   answered with an error and applies nothing.
//! - Every `transactionCheckInterval` each shard looks at its waiting messages: one older than
//!   `transactionTimeOut` (or its `CHECK_IMMUNITY_TIME_IN_SECONDS`) gets a copy appended to the
//!   half queue with `TRANSACTION_CHECK_TIMES` counted up, and CHECK_TRANSACTION_STATE naming
//!   that copy goes to a live connection of its producer group; the producer answers with
//!   END_TRANSACTION (`fromTransactionCheck`). One checked `transactionCheckMax` times goes to
//!   `TRANS_CHECK_MAX_TIME_TOPIC` instead (with an op record).
//!
//! State: `meta::transactions::TransactionTable` on the shard, rebuilt at start from the two
//! queues between the cursors kept as consumer offsets of `CID_RMQ_SYS_TRANS`; decisions and
//! prepares wait for that. One decision or check at a time per message (`begin`/`end`), so no
//! copy is made after a decision. A commit's message is stored before its op record, in the
//! same CommitLog with a broker per shard, so a crash keeps the op only if it keeps the
//! commit; when it keeps the commit but not the op, the message is still waiting after the
//! restart, and a commit of a recovered message first looks for it in the real topic (by
//! UNIQ_KEY in the index) and stores it only if it is not there. Giving up works the same way
//! with `TRANS_CHECK_MAX_TIME_TOPIC`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use thruster_protocol::header::transaction::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
};
use thruster_protocol::message::{
    body_crc, decode_record, encode_properties, find_property, offset_msg_id, parse_properties,
    property, sys_flag, DecodedRecord, RecordRef,
};
use thruster_protocol::{request_code as rc, response_code, RemotingCommand};
use tracing::{debug, error, info, warn};

use super::schedule::{already_stored, put_anywhere, without};
use super::{send_to_connection, BrokerProcessor, Handled};
use crate::meta::topic_config::{
    TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC,
};
use crate::meta::transactions::{Lookup, Pending, TransactionTable};
use crate::remoting::Failure;
use crate::runtime;
use crate::shard::Shard;
use crate::store::{PutMessage, PutResult, PutStatus};

/// Internal group whose consumer offsets are the transaction cursors (`MixAll`'s name).
pub const TRANS_GROUP: &str = "CID_RMQ_SYS_TRANS";
/// Tag of op records (`TransactionalMessageUtil.REMOVE_TAG`).
const REMOVE_TAG: &str = "d";
/// Records read per step while recovering.
const RECOVERY_BATCH: usize = 256;
/// How long a decision waits for a check of the same message to finish its copy.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(3);
const BUSY_POLL: Duration = Duration::from_millis(2);

/// Whether a send is a prepared (half) transactional message: `TRAN_MSG=true`, except a
/// retried message of a pre-4.6.1 client, which kept the property (RocketMQ's rule).
pub fn is_prepared(properties: &str, reconsume_times: i32, delayed: bool) -> bool {
    find_property(properties, property::TRANSACTION_PREPARED) == Some("true")
        && !(reconsume_times > 0 && delayed)
}

/// The half message stored for a prepared send.
pub fn to_half(mut message: PutMessage) -> PutMessage {
    let mut properties = parse_properties(&message.properties);
    if let Some(uniq) = properties
        .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
        .cloned()
    {
        properties.insert(property::TRANSACTION_ID.to_owned(), uniq);
    }
    properties.insert(property::REAL_TOPIC.to_owned(), message.topic.clone());
    properties.insert(property::REAL_QID.to_owned(), message.queue_id.to_string());
    message.properties =
        encode_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    message.sys_flag &= !sys_flag::TRANSACTION_MASK;
    message.topic = TRANS_HALF_TOPIC.to_owned();
    message.queue_id = 0;
    message
}

/// Stores a prepared send as a half message of this shard and starts waiting for its decision.
pub async fn prepare(
    processor: &BrokerProcessor,
    message: PutMessage,
    header_group: &str,
) -> Result<PutResult, Failure> {
    let shard = &processor.shard;
    if shard.config.reject_transaction_message {
        return Err(Failure::new(
            response_code::NO_PERMISSION,
            format!(
                "the broker[{}] sending transaction message is forbidden",
                shard.broker_name
            ),
        ));
    }
    shard.transactions_ready.wait_for(1).await;
    let properties = parse_properties(&message.properties);
    let group = properties
        .get(property::PRODUCER_GROUP)
        .cloned()
        .unwrap_or_else(|| header_group.to_owned());
    shard
        .transactions
        .borrow()
        .admits(&group)
        .map_err(|remark| Failure::new(response_code::SYSTEM_BUSY, remark))?;
    let born_ms = message.born_timestamp;
    let immunity_ms = immunity_ms(&properties);
    let result = shard.store.put(to_half(message)).await;
    if matches!(result.status, PutStatus::Ok | PutStatus::FlushDiskTimeout) {
        let entry = Pending {
            copy_offset: result.queue_offset,
            phys_offset: result.phys_offsets[0] as i64,
            born_ms,
            store_ms: result.store_timestamp,
            check_times: 0,
            immunity_ms,
            producer_group: group,
            recovered: false,
        };
        shard
            .transactions
            .borrow_mut()
            .stored(result.queue_offset, entry);
    }
    Ok(result)
}

fn immunity_ms(properties: &std::collections::BTreeMap<String, String>) -> Option<i64> {
    properties
        .get(property::CHECK_IMMUNITY_TIME_IN_SECONDS)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// The shard whose CommitLog holds the record an END_TRANSACTION names.
pub fn decision_owner(request: &RemotingCommand) -> Result<u64, Failure> {
    request
        .ext_fields
        .get("commitLogOffset")
        .and_then(|o| o.trim().parse::<i64>().ok())
        .filter(|o| *o >= 0)
        .map(|o| o as u64)
        .ok_or_else(|| Failure::system("the custom field <commitLogOffset> is null"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Commit,
    Rollback,
}

/// END_TRANSACTION on the shard whose CommitLog holds the named half record.
pub async fn end_owned(processor: &BrokerProcessor, request: &RemotingCommand) -> Handled {
    let shard = &processor.shard;
    let header: EndTransactionRequestHeader = request.decode_header()?;
    let decision = match header.commit_or_rollback {
        sys_flag::TRANSACTION_COMMIT => Decision::Commit,
        sys_flag::TRANSACTION_ROLLBACK => Decision::Rollback,
        state => {
            // Unknown (0) or nonsense: the message keeps waiting for its check.
            debug!(
                state,
                msg_id = header.msg_id,
                "end transaction without a decision"
            );
            return Ok(request.success().into());
        }
    };
    shard.transactions_ready.wait_for(1).await;
    let record = named_half(shard, &header).await?;
    if rejected_as_late(shard, &header, &record) {
        return Err(Failure::new(
            response_code::ILLEGAL_OPERATION,
            format!(
                "the transaction of {} is past its CHECK_IMMUNITY_TIME_IN_SECONDS: it waits for \
                 the check",
                header.msg_id
            ),
        ));
    }
    let root = root_of(&record);
    let _claim = claim(shard, root).await?;
    // Looked up in its own statement: a let-else keeps its temporaries (the table's borrow)
    // alive through the else branch, where the claim is released.
    let lookup = shard.transactions.borrow().lookup(root);
    let Lookup::Pending(entry) = lookup else {
        return Err(Failure::system(format!(
            "the transaction of {} is not waiting for a decision (decided before, or given up \
             after transactionCheckMax checks): nothing applied",
            header.msg_id
        )));
    };
    if decision == Decision::Commit {
        commit(processor, &record, &entry).await?;
    }
    record_decision(shard, root, &entry).await?;
    info!(
        shard = shard.id,
        msg_id = header.msg_id,
        ?decision,
        from_check = header.from_transaction_check.unwrap_or(false),
        "transaction decided"
    );
    Ok(request.success().into())
}

/// The half record an END_TRANSACTION names, checked against the header as RocketMQ does.
async fn named_half(
    shard: &Shard,
    header: &EndTransactionRequestHeader,
) -> Result<DecodedRecord, Failure> {
    let not_found = || Failure::system("Find prepared transaction message failed");
    let bytes = shard
        .store
        .read_record(header.commit_log_offset as u64)
        .await?
        .ok_or_else(not_found)?;
    let record = decode_record(&bytes, false).map_err(|_| not_found())?;
    if record.topic != TRANS_HALF_TOPIC {
        return Err(not_found());
    }
    if find_property(&record.properties, property::PRODUCER_GROUP)
        .is_some_and(|g| g != header.producer_group)
    {
        return Err(Failure::system("The producer group wrong"));
    }
    if record.queue_offset != header.tran_state_table_offset {
        return Err(Failure::system("The transaction state table offset wrong"));
    }
    Ok(record)
}

/// RocketMQ's `rejectCommitOrRollback`: a producer's own decision (not a check's answer) that
/// comes later than the message's CHECK_IMMUNITY_TIME_IN_SECONDS is refused.
fn rejected_as_late(
    shard: &Shard,
    header: &EndTransactionRequestHeader,
    record: &DecodedRecord,
) -> bool {
    if header.from_transaction_check == Some(true) {
        return false;
    }
    let properties = parse_properties(&record.properties);
    match immunity_ms(&properties) {
        Some(ms) => {
            let immunity = ms.max(shard.config.transaction_timeout_ms);
            runtime::now_ms() - record.born_timestamp > immunity
        }
        None => false,
    }
}

/// The half-queue offset of a message's first record (copies name it).
fn root_of(record: &DecodedRecord) -> u64 {
    find_property(
        &record.properties,
        property::TRANSACTION_PREPARED_QUEUE_OFFSET,
    )
    .and_then(|o| o.parse::<u64>().ok())
    .unwrap_or(record.queue_offset.max(0) as u64)
}

/// One decision or check at a time per message: released when dropped.
struct Claim<'a> {
    shard: &'a Shard,
    root: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.shard.transactions.borrow_mut().end(self.root);
    }
}

fn try_claim(shard: &Shard, root: u64) -> Option<Claim<'_>> {
    // A Claim is made only when it was granted (`then_some` would build one either way, and
    // dropping one releases the message).
    if shard.transactions.borrow_mut().begin(root) {
        Some(Claim { shard, root })
    } else {
        None
    }
}

async fn claim(shard: &Shard, root: u64) -> Result<Claim<'_>, Failure> {
    let started = Instant::now();
    loop {
        if let Some(claim) = try_claim(shard, root) {
            return Ok(claim);
        }
        if started.elapsed() > BUSY_WAIT_MAX {
            return Err(Failure::new(
                response_code::SYSTEM_BUSY,
                "the transaction is being checked or decided; try again",
            ));
        }
        runtime::sleep(BUSY_POLL).await;
    }
}

/// The message a commit stores in the real topic.
fn committed(
    record: &DecodedRecord,
    store_host: std::net::SocketAddr,
) -> Result<PutMessage, Failure> {
    let properties = parse_properties(&record.properties);
    let topic = properties
        .get(property::REAL_TOPIC)
        .cloned()
        .ok_or_else(|| Failure::system("the half message has no REAL_TOPIC"))?;
    let queue_id = properties
        .get(property::REAL_QID)
        .and_then(|q| q.parse::<i32>().ok())
        .ok_or_else(|| Failure::system("the half message has no REAL_QID"))?;
    Ok(PutMessage {
        flag: record.flag,
        properties: without(
            &record.properties,
            &[
                property::REAL_TOPIC,
                property::REAL_QID,
                property::TRANSACTION_PREPARED,
                property::TRANSACTION_PREPARED_QUEUE_OFFSET,
            ],
        ),
        sys_flag: (record.sys_flag & !sys_flag::TRANSACTION_MASK) | sys_flag::TRANSACTION_COMMIT,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times,
        prepared_transaction_offset: record.physical_offset,
        ..PutMessage::new(topic, queue_id, record.body.clone(), store_host)
    })
}

async fn commit(
    processor: &BrokerProcessor,
    record: &DecodedRecord,
    entry: &Pending,
) -> Result<(), Failure> {
    let message = committed(record, processor.shard.broker_addr)?;
    if entry.recovered
        && already_stored(processor, &message, record, |r| {
            sys_flag::transaction_type(r.sys_flag) == sys_flag::TRANSACTION_COMMIT
        })
        .await
    {
        info!(
            topic = message.topic,
            "commit found stored before a restart; not repeated"
        );
        return Ok(());
    }
    stored_or_failure(put_anywhere(processor, message).await)
}

fn stored_or_failure(result: PutResult) -> Result<(), Failure> {
    match result.status {
        PutStatus::Ok | PutStatus::FlushDiskTimeout => Ok(()),
        PutStatus::MessageIllegal(remark) => {
            Err(Failure::new(response_code::MESSAGE_ILLEGAL, remark))
        }
        PutStatus::ServiceNotAvailable(remark) => {
            Err(Failure::new(response_code::SERVICE_NOT_AVAILABLE, remark))
        }
    }
}

/// Stores the op record of a decided (or given up) message and stops waiting for it.
async fn record_decision(shard: &Shard, root: u64, entry: &Pending) -> Result<(), Failure> {
    let body = Bytes::from(format!("{},", entry.copy_offset));
    let op = PutMessage {
        properties: encode_properties([(property::TAGS, REMOVE_TAG)]),
        born_timestamp: runtime::now_ms(),
        born_host: shard.broker_addr,
        ..PutMessage::new(TRANS_OP_HALF_TOPIC, 0, body, shard.broker_addr)
    };
    let result = shard.store.put(op).await;
    if !matches!(result.status, PutStatus::Ok | PutStatus::FlushDiskTimeout) {
        // The decision may have been applied (a commit stored): a later one must look first.
        shard.transactions.borrow_mut().mark_recovered(root);
        let remark = format!(
            "the transaction's op record was not stored: {:?}",
            result.status
        );
        error!(shard = shard.id, root, remark, "op record failed");
        return Err(Failure::system(remark));
    }
    shard
        .transactions
        .borrow_mut()
        .decided(root, result.queue_offset);
    persist_cursors(shard);
    Ok(())
}

/// Keeps the cursors recovery starts from with the shard's consumer offsets.
fn persist_cursors(shard: &Shard) {
    let (half_cursor, op_cursor) = {
        let mut table = shard.transactions.borrow_mut();
        let half_cursor = table.half_cursor();
        (half_cursor, table.trim_ops())
    };
    let mut offsets = shard.offsets.borrow_mut();
    offsets.commit_internal(TRANS_GROUP, TRANS_HALF_TOPIC, 0, half_cursor as i64);
    offsets.commit_internal(TRANS_GROUP, TRANS_OP_HALF_TOPIC, 0, op_cursor as i64);
}

/// Starts the shard's transaction task: recovery, then a check every interval.
pub fn spawn_check(processor: std::rc::Rc<BrokerProcessor>) {
    let tasks = &processor.clone().shard.tasks;
    tasks.spawn("transaction-check", async move {
        let shard = &processor.shard;
        match recover(shard).await {
            Ok(table) => {
                info!(
                    shard = shard.id,
                    waiting = table.pending_count(),
                    "transactions recovered"
                );
                *shard.transactions.borrow_mut() = table;
            }
            Err(error) => {
                error!(shard = shard.id, %error, "transaction recovery failed; half messages stored before the start are not checked")
            }
        }
        shard.transactions_ready.advance(1);
        let interval = Duration::from_millis(shard.config.transaction_check_interval_ms);
        while shard.tasks.stop_signal().sleep(interval).await {
            check_once(&processor).await;
        }
    });
}

/// Rebuilds the table from the op queue and the half queue, from the persisted cursors.
async fn recover(shard: &Shard) -> std::io::Result<TransactionTable> {
    let cursor = |topic: &str| {
        shard
            .offsets
            .borrow()
            .query(TRANS_GROUP, topic, 0)
            .filter(|o| *o >= 0)
            .map(|o| o as u64)
            .unwrap_or_else(|| shard.store.min_offset(topic, 0).unwrap_or(0))
    };
    let (half_cursor, op_cursor) = (cursor(TRANS_HALF_TOPIC), cursor(TRANS_OP_HALF_TOPIC));
    let mut table = TransactionTable::starting_at(half_cursor, op_cursor);
    let ops = read_queue(shard, TRANS_OP_HALF_TOPIC, op_cursor).await?;
    for (op_offset, record) in ops {
        let body = String::from_utf8_lossy(&record.body);
        for copy in body.split(',').filter_map(|o| o.trim().parse::<u64>().ok()) {
            table.op_recorded(op_offset, copy);
        }
    }
    for (offset, record) in read_queue(shard, TRANS_HALF_TOPIC, half_cursor).await? {
        let properties = parse_properties(&record.properties);
        let entry = Pending {
            copy_offset: offset,
            phys_offset: record.physical_offset,
            born_ms: record.born_timestamp,
            store_ms: record.store_timestamp,
            check_times: properties
                .get(property::TRANSACTION_CHECK_TIMES)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            immunity_ms: immunity_ms(&properties),
            producer_group: properties
                .get(property::PRODUCER_GROUP)
                .cloned()
                .unwrap_or_default(),
            recovered: true,
        };
        table.stored(root_of(&record), entry);
    }
    Ok(table)
}

/// Every record of queue 0 of `topic` from `from`, with its queue offset.
async fn read_queue(
    shard: &Shard,
    topic: &str,
    from: u64,
) -> std::io::Result<Vec<(u64, DecodedRecord)>> {
    let mut records = Vec::new();
    let mut offset = from;
    loop {
        let found = shard
            .store
            .get_messages(topic, 0, offset, RECOVERY_BATCH, &|_| true);
        if found.messages.is_empty() {
            if found.next_begin_offset > offset {
                offset = found.next_begin_offset;
                continue;
            }
            return Ok(records);
        }
        for entry in found.messages {
            let bytes = entry.bytes().await?;
            match decode_record(&bytes, false) {
                Ok(record) => records.push((entry.queue_offset, record)),
                Err(error) => {
                    warn!(topic, offset = entry.queue_offset, %error, "unreadable record skipped")
                }
            }
            offset = entry.queue_offset + 1;
        }
    }
}

/// One check pass over the waiting messages.
async fn check_once(processor: &BrokerProcessor) {
    let shard = &processor.shard;
    let pass_start_ms = runtime::now_ms();
    let timeout_ms = shard.config.transaction_timeout_ms;
    let waiting = shard.transactions.borrow().waiting();
    for (root, entry) in waiting {
        if shard.is_stopping() {
            return;
        }
        if entry.store_ms >= pass_start_ms || runtime::now_ms() < entry.first_check_ms(timeout_ms) {
            continue;
        }
        let Some(_claim) = try_claim(shard, root) else {
            continue;
        };
        let lookup = shard.transactions.borrow().lookup(root);
        let Lookup::Pending(entry) = lookup else {
            continue;
        };
        let outcome = if entry.check_times >= shard.config.transaction_check_max {
            give_up(processor, root, &entry).await
        } else {
            check(processor, root, &entry).await
        };
        if let Err(failure) = outcome {
            warn!(
                shard = shard.id,
                root,
                remark = failure.remark,
                "transaction check step failed"
            );
        }
    }
    persist_cursors(shard);
}

async fn latest_copy(shard: &Shard, entry: &Pending) -> Result<DecodedRecord, Failure> {
    let bytes = shard
        .store
        .read_record(entry.phys_offset as u64)
        .await?
        .ok_or_else(|| Failure::system("the half message is no longer stored"))?;
    Ok(decode_record(&bytes, false)?)
}

/// Appends a copy with the check counted, then asks a producer of the group about it.
async fn check(processor: &BrokerProcessor, root: u64, entry: &Pending) -> Result<(), Failure> {
    let shard = &processor.shard;
    let record = latest_copy(shard, entry).await?;
    let check_times = entry.check_times + 1;
    let mut properties = without(
        &record.properties,
        &[
            property::TRANSACTION_CHECK_TIMES,
            property::TRANSACTION_PREPARED_QUEUE_OFFSET,
        ],
    );
    properties.push_str(&encode_properties([
        (
            property::TRANSACTION_CHECK_TIMES,
            check_times.to_string().as_str(),
        ),
        (
            property::TRANSACTION_PREPARED_QUEUE_OFFSET,
            root.to_string().as_str(),
        ),
    ]));
    let copy = PutMessage {
        flag: record.flag,
        properties,
        sys_flag: record.sys_flag,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times,
        ..PutMessage::new(TRANS_HALF_TOPIC, 0, record.body.clone(), shard.broker_addr)
    };
    let result = shard.store.put(copy.clone()).await;
    let stored_at = result.queue_offset;
    let store_ms = result.store_timestamp;
    let phys_offset = result.phys_offsets.first().copied().unwrap_or(0) as i64;
    stored_or_failure(result)?;
    let latest = Pending {
        copy_offset: stored_at,
        phys_offset,
        store_ms,
        check_times,
        ..entry.clone()
    };
    shard.transactions.borrow_mut().stored(root, latest.clone());
    let asked = ask_producer(processor, &copy, &latest).await;
    debug!(
        shard = shard.id,
        root, check_times, asked, "transaction checked"
    );
    Ok(())
}

/// Sends CHECK_TRANSACTION_STATE about the copy `copy` (stored as `entry`) to a live
/// connection of its producer group, this shard's own first; `false` when none took it.
async fn ask_producer(processor: &BrokerProcessor, copy: &PutMessage, entry: &Pending) -> bool {
    let shard = &processor.shard;
    let properties = parse_properties(&copy.properties);
    let uniq = properties
        .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
        .cloned();
    let offset_id = offset_msg_id(shard.broker_addr, entry.phys_offset);
    let header = CheckTransactionStateRequestHeader {
        tran_state_table_offset: entry.copy_offset as i64,
        commit_log_offset: entry.phys_offset,
        msg_id: uniq.clone(),
        transaction_id: uniq,
        offset_msg_id: Some(offset_id),
        topic: Some(TRANS_HALF_TOPIC.to_owned()),
        broker_name: Some(shard.broker_name.clone()),
    };
    let body = check_body(copy, entry, &properties);
    let mut connections = shard
        .clients
        .borrow()
        .producer_connections(&entry.producer_group);
    // This shard's connections first (no hop); rotate among equals by the copy's offset.
    let rotation = entry.copy_offset as usize % connections.len().max(1);
    connections.rotate_left(rotation);
    connections.sort_by_key(|c| c.shard != shard.id);
    for conn in connections {
        let command =
            RemotingCommand::request(rc::CHECK_TRANSACTION_STATE, &header).with_body(body.clone());
        if send_to_connection(processor, conn, command.oneway()).await {
            return true;
        }
    }
    warn!(
        shard = shard.id,
        group = entry.producer_group,
        "transaction check not sent: no producer of the group is connected"
    );
    false
}

/// The check's body: the message in record layout as the producer's checker sees it (its real
/// topic and queue, the copy's offsets).
fn check_body(
    copy: &PutMessage,
    entry: &Pending,
    properties: &std::collections::BTreeMap<String, String>,
) -> Bytes {
    let topic = properties
        .get(property::REAL_TOPIC)
        .map_or(TRANS_HALF_TOPIC, String::as_str);
    let queue_id = properties
        .get(property::REAL_QID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let record = RecordRef {
        queue_id,
        flag: copy.flag,
        queue_offset: entry.copy_offset as i64,
        physical_offset: entry.phys_offset,
        sys_flag: copy.sys_flag,
        born_timestamp: copy.born_timestamp,
        born_host: copy.born_host,
        store_timestamp: entry.store_ms,
        store_host: copy.store_host,
        reconsume_times: copy.reconsume_times,
        prepared_transaction_offset: 0,
        body: &copy.body,
        topic,
        properties: &copy.properties,
    };
    let mut out = BytesMut::with_capacity(record.encoded_len());
    if record.check_limits().is_ok() {
        record.encode(body_crc(&copy.body), &mut out);
    }
    out.freeze()
}

/// Gives up on a message checked `transactionCheckMax` times: it goes to
/// `TRANS_CHECK_MAX_TIME_TOPIC` (properties kept, so REAL_TOPIC says where it was going).
async fn give_up(processor: &BrokerProcessor, root: u64, entry: &Pending) -> Result<(), Failure> {
    let shard = &processor.shard;
    let record = latest_copy(shard, entry).await?;
    processor
        .topic_or_create(TRANS_CHECK_MAX_TIME_TOPIC, TRANS_CHECK_MAX_TIME_TOPIC, 1)
        .await?;
    let message = PutMessage {
        flag: record.flag,
        properties: record.properties.clone(),
        sys_flag: record.sys_flag,
        born_timestamp: record.born_timestamp,
        born_host: record.born_host,
        reconsume_times: record.reconsume_times,
        ..PutMessage::new(
            TRANS_CHECK_MAX_TIME_TOPIC,
            0,
            record.body.clone(),
            shard.broker_addr,
        )
    };
    let stored_before =
        entry.recovered && already_stored(processor, &message, &record, |_| true).await;
    if !stored_before {
        stored_or_failure(put_anywhere(processor, message).await)?;
    }
    record_decision(shard, root, entry).await?;
    warn!(
        shard = shard.id,
        root,
        checks = entry.check_times,
        "transaction given up after transactionCheckMax checks: stored in TRANS_CHECK_MAX_TIME_TOPIC"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_messages_remember_their_real_queue_and_commit_restores_it() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let message = PutMessage {
            properties: encode_properties([
                ("TAGS", "a"),
                ("KEYS", "k1"),
                ("UNIQ_KEY", "U1"),
                ("TRAN_MSG", "true"),
                ("PGROUP", "pg"),
            ]),
            sys_flag: sys_flag::TRANSACTION_PREPARED,
            ..PutMessage::new("T", 3, Bytes::from_static(b"x"), addr)
        };
        assert!(is_prepared(&message.properties, 0, false));
        assert!(!is_prepared(&message.properties, 1, true));
        let half = to_half(message);
        assert_eq!((half.topic.as_str(), half.queue_id), (TRANS_HALF_TOPIC, 0));
        assert_eq!(sys_flag::transaction_type(half.sys_flag), 0);
        let props = parse_properties(&half.properties);
        assert_eq!(props["REAL_TOPIC"], "T");
        assert_eq!(props["REAL_QID"], "3");
        assert_eq!(props["__transactionId__"], "U1");

        let record = DecodedRecord {
            total_size: 0,
            magic: thruster_protocol::message::MAGIC_V1,
            body_crc: 0,
            queue_id: 0,
            flag: 0,
            queue_offset: 7,
            physical_offset: 700,
            sys_flag: half.sys_flag,
            born_timestamp: 1,
            born_host: addr,
            store_timestamp: 2,
            store_host: addr,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: half.body.clone(),
            topic: half.topic.clone(),
            properties: format!("{}TRAN_PREPARED_QUEUE_OFFSET\u{1}5\u{2}", half.properties),
        };
        assert_eq!(root_of(&record), 5);
        let message = committed(&record, addr).unwrap();
        assert_eq!((message.topic.as_str(), message.queue_id), ("T", 3));
        assert_eq!(
            sys_flag::transaction_type(message.sys_flag),
            sys_flag::TRANSACTION_COMMIT
        );
        assert_eq!(message.prepared_transaction_offset, 700);
        let props = parse_properties(&message.properties);
        for gone in [
            "REAL_TOPIC",
            "REAL_QID",
            "TRAN_MSG",
            "TRAN_PREPARED_QUEUE_OFFSET",
        ] {
            assert!(!props.contains_key(gone), "{gone} kept");
        }
        assert_eq!(props["KEYS"], "k1");
        assert_eq!(props["TAGS"], "a");
        assert_eq!(props["PGROUP"], "pg");
    }
}
