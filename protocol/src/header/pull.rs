//! PULL_MESSAGE (11) / LITE_PULL_MESSAGE (361) headers.

use crate::command_header;

/// Pull request `sysFlag` bits.
pub mod pull_sys_flag {
    /// Persist `commitOffset` for the queue.
    pub const COMMIT_OFFSET: i32 = 0x1;
    /// The broker may hold the request (long polling).
    pub const SUSPEND: i32 = 0x2;
    /// Use the header's `subscription`, not the heartbeat's.
    pub const SUBSCRIPTION: i32 = 0x4;
    /// Legacy class filter: match everything.
    pub const CLASS_FILTER: i32 = 0x8;
    /// 5.x lite pull consumer.
    pub const LITE_PULL: i32 = 0x10;
}

command_header! {
    pub struct PullMessageRequestHeader {
        req consumer_group: String = "consumerGroup",
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        req queue_offset: i64 = "queueOffset",
        req max_msg_nums: i32 = "maxMsgNums",
        req sys_flag: i32 = "sysFlag",
        req commit_offset: i64 = "commitOffset",
        req suspend_timeout_millis: i64 = "suspendTimeoutMillis",
        opt subscription: String = "subscription",
        req sub_version: i64 = "subVersion",
        opt expression_type: String = "expressionType",
        opt max_msg_bytes: i32 = "maxMsgBytes",
        opt broker_name: String = "bname",
    }
}

command_header! {
    /// Sent for every pull response code, always with the four required fields.
    pub struct PullMessageResponseHeader {
        req suggest_which_broker_id: i64 = "suggestWhichBrokerId",
        req next_begin_offset: i64 = "nextBeginOffset",
        req min_offset: i64 = "minOffset",
        req max_offset: i64 = "maxOffset",
        opt offset_delta: i64 = "offsetDelta",
        opt topic_sys_flag: i32 = "topicSysFlag",
        opt group_sys_flag: i32 = "groupSysFlag",
        opt forbidden_type: i32 = "forbiddenType",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(PullMessageRequestHeader, PullMessageResponseHeader);
}
