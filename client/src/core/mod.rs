//! The client's protocol logic, free of any I/O runtime: queue allocation, route handling,
//! message ids, the requests clients send and what their responses mean. The front ends
//! (`crate::tokio`, and the optional thread-per-core one behind a Cargo feature) only move
//! bytes; no runtime is named here.

pub mod allocate;
pub mod config;
pub mod consume_stats;
pub mod error;
pub mod message;
pub mod reply;
pub mod requests;
pub mod route;
pub mod shard;
pub mod transaction;
pub mod unique_id;
