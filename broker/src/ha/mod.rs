//! Master/slave replication (RocketMQ's SYNC_MASTER / ASYNC_MASTER / SLAVE), shard by shard:
//! slave shard `i` copies master shard `i`'s CommitLog byte for byte at the same offsets and
//! builds its own ConsumeQueues and index by dispatch.
//!
//! `state` is what a shard knows (`Shard::ha`); `master` serves the HA port; `slave` is the
//! copying loop; `sync` copies topics and offsets every `haSyncMetadataInterval`.

pub mod master;
pub mod slave;
pub mod state;
pub mod sync;
