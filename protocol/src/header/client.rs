//! Client management: HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38),
//! NOTIFY_CONSUMER_IDS_CHANGED (40), CONSUMER_SEND_MSG_BACK (36), LOCK/UNLOCK_BATCH_MQ (41/42,
//! bodies only), CHECK_CLIENT_CONFIG (46, body only).

use crate::command_header;

command_header! {
    /// 5.x sends an empty header that may carry `bname`; 4.x sends none.
    pub struct HeartbeatRequestHeader {
        opt broker_name: String = "bname",
    }
}

command_header! {
    pub struct UnregisterClientRequestHeader {
        /// Capital `ID`, as in Java.
        req client_id: String = "clientID",
        opt producer_group: String = "producerGroup",
        opt consumer_group: String = "consumerGroup",
    }
}

command_header! {
    pub struct GetConsumerListByGroupRequestHeader {
        req consumer_group: String = "consumerGroup",
    }
}

command_header! {
    /// Broker -> client, one-way.
    pub struct NotifyConsumerIdsChangedRequestHeader {
        req consumer_group: String = "consumerGroup",
    }
}

command_header! {
    pub struct ConsumerSendMsgBackRequestHeader {
        /// Commitlog offset of the failed message.
        req offset: i64 = "offset",
        req group: String = "group",
        /// 0: broker decides (3 + reconsumeTimes); < 0: straight to the DLQ.
        req delay_level: i32 = "delayLevel",
        opt origin_msg_id: String = "originMsgId",
        opt origin_topic: String = "originTopic",
        opt unit_mode: bool = "unitMode",
        opt max_reconsume_times: i32 = "maxReconsumeTimes",
        opt broker_name: String = "bname",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        HeartbeatRequestHeader,
        UnregisterClientRequestHeader,
        GetConsumerListByGroupRequestHeader,
        NotifyConsumerIdsChangedRequestHeader,
        ConsumerSendMsgBackRequestHeader,
    );
}
