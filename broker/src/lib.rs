//! Thruster broker and name server.

pub mod acl;
pub mod broker;
pub mod config;
pub mod ha;
pub mod live_config;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod namesrv;
pub mod processor;
pub mod registration;
pub mod remoting;
pub mod shard;
pub mod stats;

/// The reactor runtime (its own crate, `thruster-runtime`), under the name the broker's modules
/// use.
pub use thruster_runtime as runtime;
/// One shard's message store (its own crate, `thruster-store`: it cannot name the network side
/// of the broker), under the name the broker's modules use.
pub use thruster_store as store;
