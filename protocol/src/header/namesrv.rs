//! Name server headers (codes 100-106, 205/206, 216/217, 219, 224, 322, 327).

use crate::command_header;

command_header! {
    pub struct RegisterBrokerRequestHeader {
        req broker_name: String = "brokerName",
        /// `brokerIP1:listenPort`.
        req broker_addr: String = "brokerAddr",
        req cluster_name: String = "clusterName",
        /// `brokerIP2:haListenPort`.
        req ha_server_addr: String = "haServerAddr",
        /// 0 = master.
        req broker_id: i64 = "brokerId",
        opt compressed: bool = "compressed",
        /// CRC32 of the body & 0x7FFFFFFF; 0 = unchecked.
        opt body_crc32: i32 = "bodyCrc32",
        /// 5.x per-broker expiry.
        opt heartbeat_timeout_millis: i64 = "heartbeatTimeoutMillis",
        opt enable_acting_master: bool = "enableActingMaster",
    }
}

command_header! {
    /// For slaves: the current master's addresses (absent for masters).
    pub struct RegisterBrokerResponseHeader {
        opt ha_server_addr: String = "haServerAddr",
        opt master_addr: String = "masterAddr",
    }
}

command_header! {
    /// UNREGISTER_BROKER (104) and QUERY_DATA_VERSION (322) share these four fields.
    pub struct BrokerIdentityHeader {
        req broker_name: String = "brokerName",
        req broker_addr: String = "brokerAddr",
        req cluster_name: String = "clusterName",
        req broker_id: i64 = "brokerId",
    }
}

command_header! {
    pub struct QueryDataVersionResponseHeader {
        req changed: bool = "changed",
    }
}

command_header! {
    pub struct GetRouteInfoRequestHeader {
        req topic: String = "topic",
        /// Ask for standard JSON route data whatever the request version.
        opt accept_standard_json_only: bool = "acceptStandardJsonOnly",
    }
}

command_header! {
    pub struct PutKvConfigRequestHeader {
        req namespace: String = "namespace",
        req key: String = "key",
        req value: String = "value",
    }
}

command_header! {
    /// GET_KV_CONFIG (101) and DELETE_KV_CONFIG (102).
    pub struct KvConfigKeyHeader {
        req namespace: String = "namespace",
        req key: String = "key",
    }
}

command_header! {
    pub struct GetKvConfigResponseHeader {
        opt value: String = "value",
    }
}

command_header! {
    pub struct GetKvListByNamespaceRequestHeader {
        req namespace: String = "namespace",
    }
}

command_header! {
    /// WIPE_WRITE_PERM_OF_BROKER (205) and ADD_WRITE_PERM_OF_BROKER (327).
    pub struct BrokerNameHeader {
        req broker_name: String = "brokerName",
    }
}

command_header! {
    pub struct WipeWritePermResponseHeader {
        req wipe_topic_count: i32 = "wipeTopicCount",
    }
}

command_header! {
    pub struct AddWritePermResponseHeader {
        req add_topic_count: i32 = "addTopicCount",
    }
}

command_header! {
    pub struct DeleteTopicFromNamesrvRequestHeader {
        req topic: String = "topic",
        opt cluster_name: String = "clusterName",
    }
}

command_header! {
    pub struct GetTopicsByClusterRequestHeader {
        req cluster: String = "cluster",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        RegisterBrokerRequestHeader,
        RegisterBrokerResponseHeader,
        BrokerIdentityHeader,
        QueryDataVersionResponseHeader,
        GetRouteInfoRequestHeader,
        PutKvConfigRequestHeader,
        KvConfigKeyHeader,
        GetKvConfigResponseHeader,
        GetKvListByNamespaceRequestHeader,
        BrokerNameHeader,
        WipeWritePermResponseHeader,
        AddWritePermResponseHeader,
        DeleteTopicFromNamesrvRequestHeader,
        GetTopicsByClusterRequestHeader,
    );
}
