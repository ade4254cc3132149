//! Transactional sends without I/O: what a prepared message carries, the END_TRANSACTION a
//! decision becomes, and what a broker's CHECK_TRANSACTION_STATE asks about.

use std::net::SocketAddr;

use super::error::{ClientError, ClientResult};
use super::message::{Message, MessageExt};
use super::requests::SendResult;
use crate::protocol::header::transaction::{
    CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
};
use crate::protocol::message::{decode_offset_msg_id, decode_record, property, sys_flag};
use crate::protocol::{request_code as rc, RemotingCommand};

/// What the local transaction (or the checker) says (`LocalTransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTransactionState {
    Commit,
    Rollback,
    /// Not known yet: the broker checks again later.
    Unknown,
}

impl LocalTransactionState {
    /// `commitOrRollback` of END_TRANSACTION (the sysFlag transaction values).
    pub fn commit_or_rollback(self) -> i32 {
        match self {
            LocalTransactionState::Commit => sys_flag::TRANSACTION_COMMIT,
            LocalTransactionState::Rollback => sys_flag::TRANSACTION_ROLLBACK,
            LocalTransactionState::Unknown => sys_flag::TRANSACTION_NOT_TYPE,
        }
    }
}

/// `message` as a half message of `group`: `TRAN_MSG=true` and `PGROUP` (the send request
/// then sets the prepared sysFlag); a delay level is dropped, as Java's producer does.
pub fn prepared(mut message: Message, group: &str) -> Message {
    message.delay_level = 0;
    message
        .with_property(property::TRANSACTION_PREPARED, "true")
        .with_property(property::PRODUCER_GROUP, group)
}

/// The END_TRANSACTION for a producer's own decision about the half message `sent`.
pub fn end_request(
    group: &str,
    sent: &SendResult,
    state: LocalTransactionState,
) -> ClientResult<RemotingCommand> {
    let (_, commit_log_offset) = decode_offset_msg_id(&sent.offset_msg_id).ok_or_else(|| {
        ClientError::InvalidArgument(format!("offset msg id {:?}", sent.offset_msg_id))
    })?;
    let header = EndTransactionRequestHeader {
        producer_group: group.to_owned(),
        tran_state_table_offset: sent.queue_offset,
        commit_log_offset,
        commit_or_rollback: state.commit_or_rollback(),
        from_transaction_check: Some(false),
        msg_id: sent.msg_id.clone(),
        transaction_id: Some(sent.msg_id.clone()),
        topic: Some(sent.queue.topic.clone()),
        broker_name: Some(sent.queue.broker_name.clone()),
    };
    Ok(RemotingCommand::request(rc::END_TRANSACTION, &header))
}

/// A broker's CHECK_TRANSACTION_STATE: its header and the half message it is about.
#[derive(Debug, Clone)]
pub struct TransactionCheck {
    pub header: CheckTransactionStateRequestHeader,
    pub message: MessageExt,
}

pub fn parse_check(addr: SocketAddr, request: &RemotingCommand) -> ClientResult<TransactionCheck> {
    let protocol = |reason: String| ClientError::Protocol { addr, reason };
    let header: CheckTransactionStateRequestHeader = request
        .decode_header()
        .map_err(|e| protocol(e.to_string()))?;
    let record = decode_record(&request.body, false).map_err(|e| protocol(e.to_string()))?;
    Ok(TransactionCheck {
        header,
        message: MessageExt::from_record(record),
    })
}

/// The END_TRANSACTION answering `check` (one-way, `fromTransactionCheck`).
pub fn check_answer(
    group: &str,
    check: &TransactionCheck,
    state: LocalTransactionState,
) -> RemotingCommand {
    let header = EndTransactionRequestHeader {
        producer_group: group.to_owned(),
        tran_state_table_offset: check.header.tran_state_table_offset,
        commit_log_offset: check.header.commit_log_offset,
        commit_or_rollback: state.commit_or_rollback(),
        from_transaction_check: Some(true),
        msg_id: check.message.msg_id.clone(),
        transaction_id: check.header.transaction_id.clone(),
        topic: check.header.topic.clone(),
        broker_name: check.header.broker_name.clone(),
    };
    RemotingCommand::request(rc::END_TRANSACTION, &header).oneway()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::requests::SendStatus;
    use crate::protocol::body::heartbeat::MessageQueue;
    use crate::protocol::message::offset_msg_id;

    #[test]
    fn a_decision_names_the_half_message_the_send_stored() {
        let addr: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        let sent = SendResult {
            status: SendStatus::SendOk,
            msg_id: "U1".into(),
            offset_msg_id: offset_msg_id(addr, 4242),
            queue: MessageQueue {
                topic: "T".into(),
                broker_name: "b".into(),
                queue_id: 1,
            },
            queue_offset: 7,
        };
        let request = end_request("pg", &sent, LocalTransactionState::Rollback).unwrap();
        let header: EndTransactionRequestHeader = request.decode_header().unwrap();
        assert_eq!(header.commit_log_offset, 4242);
        assert_eq!(header.tran_state_table_offset, 7);
        assert_eq!(header.commit_or_rollback, 12);
        assert_eq!(header.from_transaction_check, Some(false));
        let message = prepared(Message::new("T", "b").with_delay_level(3), "pg");
        assert_eq!(message.property("TRAN_MSG"), Some("true"));
        assert_eq!(message.property("PGROUP"), Some("pg"));
        assert_eq!(message.delay_level, 0);
        assert_eq!(LocalTransactionState::Commit.commit_or_rollback(), 8);
    }
}
