//! The message store of one shard: CommitLog + ConsumeQueues + IndexFile, recovery and
//! retention. Knows nothing about the network.

pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod index_file;
pub mod mapped_file;
pub mod message_store;
pub mod storage;
pub mod watermark;

pub use commit_log::Slice;
pub use config::{FlushMode, StoreConfig};
pub use message_store::{
    FoundMessage, GetResult, GetStatus, MessageStore, PutMessage, PutResult, PutStatus,
};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod sim_crash_tests;
