//! The client's protocol logic, free of any I/O runtime: queue allocation, route handling,
//! message ids. The tokio front end (`crate::tokio`) drives it over sockets.

pub mod allocate;
pub mod route;
pub mod shard;
pub mod unique_id;
