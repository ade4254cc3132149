//! Broker admin essentials: UPDATE_AND_CREATE_TOPIC (17), DELETE_TOPIC_IN_BROKER (215),
//! GET_TOPIC_STATS_INFO (202), GET_CONSUME_STATS (208), GET_TOPIC_CONFIG (351),
//! GET_SUBSCRIPTIONGROUP_CONFIG (352), DELETE_SUBSCRIPTIONGROUP (207).

use crate::command_header;

command_header! {
    pub struct CreateTopicRequestHeader {
        req topic: String = "topic",
        req default_topic: String = "defaultTopic",
        req read_queue_nums: i32 = "readQueueNums",
        req write_queue_nums: i32 = "writeQueueNums",
        req perm: i32 = "perm",
        /// `SINGLE_TAG` or `MULTI_TAG`.
        req topic_filter_type: String = "topicFilterType",
        opt topic_sys_flag: i32 = "topicSysFlag",
        req order: bool = "order",
        /// 5.x `+key=value,...`.
        opt attributes: String = "attributes",
        opt force: bool = "force",
    }
}

command_header! {
    /// DELETE_TOPIC_IN_BROKER, GET_TOPIC_STATS_INFO, GET_TOPIC_CONFIG.
    pub struct TopicRequestHeader {
        req topic: String = "topic",
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct GetConsumeStatsRequestHeader {
        req consumer_group: String = "consumerGroup",
        opt topic: String = "topic",
    }
}

command_header! {
    /// GET_SUBSCRIPTIONGROUP_CONFIG, DELETE_SUBSCRIPTIONGROUP (4.9 `removeOffset`, 5.x
    /// `cleanOffset`).
    pub struct GroupRequestHeader {
        req group_name: String = "groupName",
        opt remove_offset: bool = "removeOffset",
        opt clean_offset: bool = "cleanOffset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        CreateTopicRequestHeader,
        TopicRequestHeader,
        GetConsumeStatsRequestHeader,
        GroupRequestHeader,
    );
}
