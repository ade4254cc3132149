//! Offset headers: QUERY/UPDATE_CONSUMER_OFFSET (14/15), GET_MAX/MIN_OFFSET (30/31),
//! SEARCH_OFFSET_BY_TIMESTAMP (29), GET_EARLIEST_MSG_STORETIME (32).

use crate::command_header;

command_header! {
    pub struct QueryConsumerOffsetRequestHeader {
        req consumer_group: String = "consumerGroup",
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        /// 5.x: `false` forces QUERY_NOT_FOUND when nothing was committed.
        opt set_zero_if_not_found: bool = "setZeroIfNotFound",
        opt broker_name: String = "bname",
    }
}

command_header! {
    /// Response of QUERY_CONSUMER_OFFSET, GET_MAX_OFFSET, GET_MIN_OFFSET and
    /// SEARCH_OFFSET_BY_TIMESTAMP: one `offset`.
    pub struct OffsetResponseHeader {
        req offset: i64 = "offset",
    }
}

command_header! {
    pub struct UpdateConsumerOffsetRequestHeader {
        req consumer_group: String = "consumerGroup",
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        req commit_offset: i64 = "commitOffset",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct GetMaxOffsetRequestHeader {
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        /// 5.x, default true.
        opt committed: bool = "committed",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct GetMinOffsetRequestHeader {
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct SearchOffsetRequestHeader {
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        /// Store time, ms.
        req timestamp: i64 = "timestamp",
        /// 5.x: `lower` (default) or `upper`.
        opt boundary_type: String = "boundaryType",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct GetEarliestMsgStoretimeRequestHeader {
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct GetEarliestMsgStoretimeResponseHeader {
        req timestamp: i64 = "timestamp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        QueryConsumerOffsetRequestHeader,
        OffsetResponseHeader,
        UpdateConsumerOffsetRequestHeader,
        GetMaxOffsetRequestHeader,
        GetMinOffsetRequestHeader,
        SearchOffsetRequestHeader,
        GetEarliestMsgStoretimeRequestHeader,
        GetEarliestMsgStoretimeResponseHeader,
    );
}
