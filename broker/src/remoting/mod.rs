//! Server side of the wire: accept, frame, dispatch, respond. Shared by the broker and the name
//! server.

pub mod client;
pub mod config;
pub mod connection;
pub mod failure;
pub mod server;

pub use config::{RequestMemory, ServerConfig, IDLE_TIMEOUT_MS_DEFAULT};
pub use connection::{BodyPart, ConnectionContext, Reply, RequestProcessor};
pub use failure::Failure;
pub use server::serve;
