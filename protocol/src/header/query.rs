//! QUERY_MESSAGE (12) and VIEW_MESSAGE_BY_ID (33) headers.

use crate::command_header;

/// Ext field that marks a QUERY_MESSAGE key as a `UNIQ_KEY`.
pub const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";

command_header! {
    pub struct QueryMessageRequestHeader {
        req topic: String = "topic",
        req key: String = "key",
        req max_num: i32 = "maxNum",
        req begin_timestamp: i64 = "beginTimestamp",
        req end_timestamp: i64 = "endTimestamp",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct QueryMessageResponseHeader {
        req index_last_update_timestamp: i64 = "indexLastUpdateTimestamp",
        req index_last_update_phyoffset: i64 = "indexLastUpdatePhyoffset",
    }
}

command_header! {
    pub struct ViewMessageRequestHeader {
        /// Commitlog offset.
        req offset: i64 = "offset",
        opt topic: String = "topic",
        opt broker_name: String = "bname",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        QueryMessageRequestHeader,
        QueryMessageResponseHeader,
        ViewMessageRequestHeader
    );
}
