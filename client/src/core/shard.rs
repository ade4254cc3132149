//! Which shard of a Thruster broker owns a (topic, queue), and the shard map a Thruster broker
//! advertises: defined in the protocol crate (the broker computes the same ownership), and
//! re-exported here where the client's front ends have always found them.

pub use crate::protocol::shard::*;
