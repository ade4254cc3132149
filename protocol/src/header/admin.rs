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

command_header! {
    /// GET_CONSUMER_CONNECTION_LIST.
    pub struct ConsumerGroupRequestHeader {
        req consumer_group: String = "consumerGroup",
    }
}

command_header! {
    /// GET_PRODUCER_CONNECTION_LIST.
    pub struct ProducerGroupRequestHeader {
        req producer_group: String = "producerGroup",
    }
}

command_header! {
    /// INVOKE_BROKER_TO_RESET_OFFSET and RESET_CONSUMER_CLIENT_OFFSET (`timestamp` −1: the
    /// queues' ends).
    pub struct ResetOffsetRequestHeader {
        req topic: String = "topic",
        req group: String = "group",
        req timestamp: i64 = "timestamp",
        req is_force: bool = "isForce",
    }
}

command_header! {
    /// QUERY_CONSUME_TIME_SPAN, INVOKE_BROKER_TO_GET_CONSUMER_STATUS (`clientAddr`).
    pub struct TopicGroupRequestHeader {
        req topic: String = "topic",
        req group: String = "group",
        opt client_addr: String = "clientAddr",
    }
}

command_header! {
    /// CLONE_GROUP_OFFSET.
    pub struct CloneGroupOffsetRequestHeader {
        req src_group: String = "srcGroup",
        req dest_group: String = "destGroup",
        opt topic: String = "topic",
        opt offline: bool = "offline",
    }
}

command_header! {
    /// QUERY_CONSUME_QUEUE.
    pub struct QueryConsumeQueueRequestHeader {
        req topic: String = "topic",
        req queue_id: i32 = "queueId",
        req index: i64 = "index",
        req count: i32 = "count",
        opt consumer_group: String = "consumerGroup",
    }
}

command_header! {
    /// VIEW_BROKER_STATS_DATA: `statsName` such as `TOPIC_PUT_NUMS`, `statsKey` the topic (or
    /// `topic@group`).
    pub struct ViewBrokerStatsDataRequestHeader {
        req stats_name: String = "statsName",
        req stats_key: String = "statsKey",
    }
}

command_header! {
    /// GET_BROKER_CONSUME_STATS.
    pub struct GetConsumeStatsInBrokerHeader {
        req is_order: bool = "isOrder",
    }
}

command_header! {
    /// GET_CONSUMER_RUNNING_INFO (broker and client), CONSUME_MESSAGE_DIRECTLY (with `msgId`).
    pub struct ConsumerClientRequestHeader {
        req consumer_group: String = "consumerGroup",
        opt client_id: String = "clientId",
        opt jstack_enable: bool = "jstackEnable",
        opt msg_id: String = "msgId",
        opt broker_name: String = "brokerName",
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
        ConsumerGroupRequestHeader,
        ProducerGroupRequestHeader,
        ResetOffsetRequestHeader,
        TopicGroupRequestHeader,
        CloneGroupOffsetRequestHeader,
        QueryConsumeQueueRequestHeader,
        ViewBrokerStatsDataRequestHeader,
        GetConsumeStatsInBrokerHeader,
        ConsumerClientRequestHeader,
    );
}
