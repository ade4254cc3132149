//! The message store of one shard: CommitLog + ConsumeQueues + IndexFile, recovery and
//! retention. Knows nothing about the network.

pub mod commit_log;
pub mod config;
pub mod watermark;
