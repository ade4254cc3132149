//! Thruster broker and name server.

pub mod broker;
pub mod config;
pub mod logging;
pub mod meta;
pub mod namesrv;
pub mod processor;
pub mod registration;
pub mod remoting;
pub mod runtime;
pub mod shard;
pub mod store;
