//! END_TRANSACTION (37) and CHECK_TRANSACTION_STATE (39) headers.

use crate::command_header;

command_header! {
    /// Client -> broker, usually one-way.
    pub struct EndTransactionRequestHeader {
        req producer_group: String = "producerGroup",
        req tran_state_table_offset: i64 = "tranStateTableOffset",
        req commit_log_offset: i64 = "commitLogOffset",
        /// 0 unknown, 8 commit, 12 rollback (message sysFlag transaction values).
        req commit_or_rollback: i32 = "commitOrRollback",
        opt from_transaction_check: bool = "fromTransactionCheck",
        req msg_id: String = "msgId",
        opt transaction_id: String = "transactionId",
        opt topic: String = "topic",
        opt broker_name: String = "bname",
    }
}

command_header! {
    /// Broker -> producer, one-way; body is the half message in commitlog record format.
    pub struct CheckTransactionStateRequestHeader {
        req tran_state_table_offset: i64 = "tranStateTableOffset",
        req commit_log_offset: i64 = "commitLogOffset",
        opt msg_id: String = "msgId",
        opt transaction_id: String = "transactionId",
        opt offset_msg_id: String = "offsetMsgId",
        opt topic: String = "topic",
        opt broker_name: String = "bname",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        EndTransactionRequestHeader,
        CheckTransactionStateRequestHeader
    );
}
