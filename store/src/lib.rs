//! The message store of one shard: CommitLog + ConsumeQueues + IndexFile, recovery and
//! retention. Knows nothing about the network.

/// The reactor runtime, under the name the store's modules use.
pub(crate) use thruster_runtime as runtime;

pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod deleted_topics;
pub mod disk_usage;
pub mod dispatch;
pub mod doomed;
pub mod flush;
pub mod get;
pub mod index_file;
pub mod latency;
pub mod mapped_file;
pub mod message_store;
pub mod put;
pub mod queue_heads;
pub mod recovery;
pub mod replica;
pub mod retention;
pub mod storage;
pub mod topic_removal;

pub use commit_log::Slice;
pub use config::{FlushMode, StoreConfig, TransferLimits};
pub use message_store::{
    FoundMessage, GetResult, GetStatus, MessageStore, PutMessage, PutResult, PutStatus,
};

/// Opens (recovering if needed) the store of one shard with all its background tasks,
/// retention included (`MessageStore::open` alone starts all but retention: benches and tests
/// that drive retention themselves).
pub async fn open(config: StoreConfig) -> std::io::Result<std::rc::Rc<MessageStore>> {
    let store = MessageStore::open(config).await?;
    retention::start(&store);
    Ok(store)
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod sim_crash_tests;
