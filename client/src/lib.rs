//! The RocketMQ remoting protocol (`protocol`, re-exported from the `thruster-protocol` crate),
//! the client's runtime-free logic (`core`), and the native client's tokio front end (`tokio`).

pub mod core;
#[cfg(feature = "glommio")]
pub mod glommio;
pub mod tokio;

/// The protocol crate, where the client has always had it (`thruster_client::protocol`).
pub use thruster_protocol as protocol;
/// Declares a typed header (defined in the protocol crate).
pub use thruster_protocol::command_header;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
