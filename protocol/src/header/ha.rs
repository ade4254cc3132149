//! Replication between a Thruster master and its slaves (`THRUSTER_HA_HANDSHAKE`,
//! `THRUSTER_HA_TRANSFER`): Thruster's own codes over the remoting framing, on the master's HA
//! port (one per shard).
//!
//! The conversation, on one connection per (slave shard, master shard):
//! 1. `THRUSTER_HA_HANDSHAKE`: the slave says which broker name and shard it replicates, the
//!    shard count and segment size its store was made with, where its log ends and a CRC-32 of
//!    the last `tailLen` bytes before that end. The master answers SUCCESS with its log's
//!    bounds, or SYSTEM_ERROR naming the mismatch (another broker, shard count or segment size,
//!    a log that diverged from the master's, or one that ends where the master has nothing).
//! 2. `THRUSTER_HA_TRANSFER`, repeated: the slave asks for up to `maxBytes` from `offset`, its
//!    log's end, which acknowledges everything before it. The master answers once it has bytes
//!    past `offset` (or after `holdMs` with none): the body is the master's log from `offset`,
//!    byte for byte (whole records or not; the slave keeps a partial record for the next
//!    answer), and the header says where the master's readable log ends.

use crate::command_header;

command_header! {
    pub struct HaHandshakeRequestHeader {
        req broker_name: String = "brokerName",
        req shard_id: i32 = "shardId",
        req shard_count: i32 = "shardCount",
        req segment_bytes: i64 = "segmentBytes",
        /// Where the slave's log ends (a record boundary).
        req end_offset: i64 = "endOffset",
        /// Bytes before `endOffset` covered by `tailCrc` (0 for an empty log).
        req tail_len: i32 = "tailLen",
        /// CRC-32 (crc32fast) of those bytes.
        req tail_crc: i64 = "tailCrc",
    }
}

command_header! {
    pub struct HaHandshakeResponseHeader {
        /// The master's first offset still stored.
        req min_offset: i64 = "minOffset",
        /// Where the master's readable log ends.
        req end_offset: i64 = "endOffset",
    }
}

command_header! {
    pub struct HaTransferRequestHeader {
        /// The slave's log end: the first byte wanted, and the acknowledgement of all before.
        req offset: i64 = "offset",
        req max_bytes: i32 = "maxBytes",
        /// How long the master may hold the request when it has nothing past `offset`.
        req hold_ms: i64 = "holdMs",
    }
}

command_header! {
    pub struct HaTransferResponseHeader {
        /// Where the body starts (the request's offset).
        req offset: i64 = "offset",
        /// Where the master's readable log ended when it answered.
        req end_offset: i64 = "endOffset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::round_trip_tests;

    round_trip_tests!(
        HaHandshakeRequestHeader,
        HaHandshakeResponseHeader,
        HaTransferRequestHeader,
        HaTransferResponseHeader,
    );
}
